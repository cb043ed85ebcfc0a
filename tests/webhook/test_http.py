"""The webhook's HTTP edges through Flask's test client: what each request gets back,
what is logged and what is counted. Decisions themselves are the engine's (tested in
tests/test_rules.py); here they only have to arrive intact."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import jsonpatch
import pytest

from policies.engine import Engine
from webhook.settings import MAX_BODY_BYTES

from .conftest import WebhookUnderTest, review

JSON = "application/json"


def response_of(result: Any) -> dict[str, Any]:
    assert result.status_code == 200, result.get_data(as_text=True)
    assert result.mimetype == JSON
    body = json.loads(result.get_data())
    return dict(body["response"])


class TestBodyLimits:
    def test_announced_body_over_3_mib_is_413_without_reading_it(self, webhook: WebhookUnderTest) -> None:
        """The Content-Length alone decides: 413 with a JSON error, body never read."""
        result = webhook.client.post(
            "/validate",
            data=b"{}",
            headers={"Content-Type": JSON},
            environ_overrides={"CONTENT_LENGTH": str(MAX_BODY_BYTES + 1)},
        )
        assert result.status_code == 413
        assert "error" in result.get_json()

    def test_streamed_body_over_3_mib_is_413(self, webhook: WebhookUnderTest) -> None:
        """A body without Content-Length (chunked) is read only up to the limit, then refused."""
        stream = io.BytesIO(b" " * (MAX_BODY_BYTES + 1024 * 1024))
        result = webhook.client.post(
            "/validate",
            input_stream=stream,
            headers={"Content-Type": JSON},
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert result.status_code == 413
        assert result.mimetype == JSON
        assert stream.tell() <= MAX_BODY_BYTES + 64 * 1024  # stopped near the limit

    def test_body_of_exactly_3_mib_is_read(self, webhook: WebhookUnderTest) -> None:
        """The limit itself is allowed: a 3 MiB review (padding in an annotation) is decided."""
        body = review()
        body["request"]["object"]["metadata"]["annotations"] = {"pad": ""}
        size = len(json.dumps(body).encode())
        body["request"]["object"]["metadata"]["annotations"]["pad"] = "x" * (MAX_BODY_BYTES - size)
        data = json.dumps(body).encode()
        assert len(data) == MAX_BODY_BYTES
        result = webhook.client.post("/validate", data=data, headers={"Content-Type": JSON})
        assert response_of(result)["allowed"] is True


class TestBadRequests:
    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/yaml", None]
    )
    def test_non_json_content_type_is_415(self, webhook: WebhookUnderTest, content_type: str | None) -> None:
        """Only application/json is read; anything else (or nothing) is 415 with a JSON error."""
        headers = {"Content-Type": content_type} if content_type else {}
        result = webhook.client.post("/validate", data=json.dumps(review()), headers=headers)
        assert result.status_code == 415
        assert result.mimetype == JSON
        assert "application/json" in result.get_json()["error"]

    def test_json_with_charset_is_accepted(self, webhook: WebhookUnderTest) -> None:
        """Media type parameters do not matter."""
        result = webhook.client.post(
            "/validate", data=json.dumps(review()), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert result.status_code == 200

    @pytest.mark.parametrize(
        ("body", "says"),
        [
            pytest.param(b"{not json", "not valid JSON", id="invalid-json"),
            pytest.param(b"", "empty", id="empty-body"),
            pytest.param(b"\xff\xfe\x00garbage", "not valid JSON", id="not-utf8"),
            pytest.param(b"[" * 100000 + b"]" * 100000, "not valid JSON", id="deeply-nested"),
            pytest.param(b"[]", "JSON object", id="array"),
            pytest.param(b'"review"', "JSON object", id="string"),
            pytest.param(
                json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                            "request": review()["request"]}).encode(),
                "admission.k8s.io/v1", id="v1beta1",
            ),
            pytest.param(
                json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Pod",
                            "request": review()["request"]}).encode(),
                "AdmissionReview", id="wrong-kind",
            ),
            pytest.param(
                json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
                "no request", id="no-request",
            ),
            pytest.param(
                json.dumps({**review(), "request": {**review()["request"], "uid": ""}}).encode(),
                "uid", id="empty-uid",
            ),
            pytest.param(
                json.dumps({**review(), "request": {k: v for k, v in review()["request"].items() if k != "uid"}}).encode(),
                "uid", id="no-uid",
            ),
            pytest.param(
                json.dumps({**review(), "request": {**review()["request"], "operation": "PATCH"}}).encode(),
                "operation", id="unknown-operation",
            ),
        ],
    )
    def test_not_an_admission_review_is_400(self, webhook: WebhookUnderTest, body: bytes, says: str) -> None:
        """Whatever is wrong with the body, the answer is 400 with a JSON error saying what."""
        for path in ("/validate", "/mutate"):
            result = webhook.client.post(path, data=body, headers={"Content-Type": JSON})
            assert result.status_code == 400, result.get_data(as_text=True)
            assert result.mimetype == JSON
            assert says in result.get_json()["error"]

    @pytest.mark.parametrize("path", ["/validate", "/mutate"])
    def test_get_on_a_review_path_is_405_json(self, webhook: WebhookUnderTest, path: str) -> None:
        result = webhook.client.get(path)
        assert result.status_code == 405
        assert result.get_json()["error"]
        assert "POST" in result.headers["Allow"]

    def test_unknown_path_is_404_json(self, webhook: WebhookUnderTest) -> None:
        result = webhook.client.post("/admit", json=review())
        assert result.status_code == 404
        assert result.mimetype == JSON

    def test_engine_failure_is_answered_under_rule_errors_not_500(
        self, make_webhook: Callable[..., WebhookUnderTest], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bug while deciding: HTTP 200, denied under ruleErrors deny (the default),
        allowed with a warning under warn; the traceback goes to the log only."""

        def explode(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

        monkeypatch.setattr(Engine, "decide", explode)
        denying = make_webhook()
        answer = response_of(denying.post("/validate", review()))
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 403
        assert answer["status"]["details"]["causes"][0]["reason"] == "webhook-error"
        assert "Traceback" not in json.dumps(answer)
        errors = [line for line in denying.log_lines() if line["level"] == "error"]
        assert errors and "RuntimeError: boom" in errors[0]["error"]

        warning = make_webhook({"ruleErrors": "warn"})
        answer = response_of(warning.post("/validate", review()))
        assert answer["allowed"] is True
        assert answer["warnings"][0].startswith("webhook-error: ")

    def test_unexpected_error_outside_deciding_is_not_500(
        self, webhook: WebhookUnderTest, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Any other exception gets a JSON 503 and no traceback."""
        handler = webhook.app.extensions["snapguard"]

        def broken() -> Any:
            raise ValueError("view is gone")

        monkeypatch.setattr(handler.view_source, "ready", broken)
        result = webhook.client.get("/readyz")
        assert result.status_code == 503
        assert result.get_json() == {"error": "internal error; see the webhook's log"}


class TestDecisions:
    def test_denial_is_200_with_403_status_and_causes(self, webhook: WebhookUnderTest) -> None:
        """A snapshot of a resizing disk: allowed false, 403 Forbidden, one cause per violation."""
        body = review(spec={"virtualDiskName": "d2", "requiredConsistency": True})
        answer = response_of(webhook.post("/validate", body))
        assert answer["uid"] == body["request"]["uid"]
        assert answer["allowed"] is False
        status = answer["status"]
        assert (status["code"], status["reason"]) == (403, "Forbidden")
        assert status["message"].startswith("vds-disk-resizing: ")
        assert status["details"]["causes"] == [
            {"field": "spec.virtualDiskName", "message": status["message"].removeprefix("vds-disk-resizing: "),
             "reason": "vds-disk-resizing"}
        ]

    def test_response_echoes_api_version_and_kind(self, webhook: WebhookUnderTest) -> None:
        result = webhook.post("/validate", review())
        body = result.get_json()
        assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")

    def test_warn_rule_adds_a_warning(self, make_webhook: Callable[..., WebhookUnderTest]) -> None:
        """A disk whose storage class has no default VolumeSnapshotClass: allowed, warned
        (up to v0.23; from v0.24 snapshot-class-default denies)."""
        webhook = make_webhook({"platformVersion": "0.23"})
        answer = response_of(webhook.post("/validate", review(spec={"virtualDiskName": "d3"})))
        assert answer["allowed"] is True
        assert [w.split(":")[0] for w in answer["warnings"]] == ["snapshot-class-default"]
        assert "auditAnnotations" not in answer

    def test_audit_rule_goes_to_audit_annotations(self, make_webhook: Callable[..., WebhookUnderTest]) -> None:
        """With the rule set to audit, the finding is an audit annotation, not a warning."""
        webhook = make_webhook({"rules": {"snapshot-class-default": "audit"}})
        answer = response_of(webhook.post("/validate", review(spec={"virtualDiskName": "d3"})))
        assert answer["allowed"] is True
        assert "warnings" not in answer
        assert list(answer["auditAnnotations"]) == ["snapshot-class-default"]
        assert "local.csi.storage.deckhouse.io" in answer["auditAnnotations"]["snapshot-class-default"]

    @pytest.mark.parametrize(
        ("kind", "spec", "expected"),
        [
            ("VirtualDiskSnapshot", {"virtualDiskName": "d1"}, {"virtualDiskName": "d1", "requiredConsistency": True}),
            ("VirtualMachineSnapshot", {"virtualMachineName": "vm1"},
             {"virtualMachineName": "vm1", "requiredConsistency": True, "keepIPAddress": "Always"}),
        ],
    )
    def test_mutate_patch_applies_the_defaults(
        self, webhook: WebhookUnderTest, kind: str, spec: dict[str, Any], expected: dict[str, Any]
    ) -> None:
        """/mutate answers a base64 JSONPatch that, applied to the object, fills the defaults."""
        body = review(kind, spec)
        answer = response_of(webhook.post("/mutate", body))
        assert answer["allowed"] is True
        assert answer["patchType"] == "JSONPatch"
        patch = json.loads(base64.b64decode(answer["patch"]))
        patched = jsonpatch.apply_patch(body["request"]["object"], patch)
        assert patched["spec"] == expected
        assert patched["metadata"] == body["request"]["object"]["metadata"]

    def test_mutate_without_defaults_to_fill_has_no_patch(self, webhook: WebhookUnderTest) -> None:
        answer = response_of(webhook.post("/mutate", review()))
        assert answer == {"uid": review()["request"]["uid"], "allowed": True}

    def test_mutate_never_validates(self, webhook: WebhookUnderTest) -> None:
        """/mutate only defaults: a snapshot that validation denies is allowed (and patched)."""
        answer = response_of(webhook.post("/mutate", review(spec={"virtualDiskName": "d2"})))
        assert answer["allowed"] is True
        assert "patch" in answer

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(review("Pod", {"containers": []}, group="", version="v1"), id="pod"),
            pytest.param(review("VirtualMachine", {"runPolicy": "AlwaysOn"}), id="virtual-machine"),
            pytest.param(review("VirtualDiskSnapshot", {"virtualDiskName": "d2"}, group="example.com"),
                         id="same-kind-other-group"),
        ],
    )
    def test_ungoverned_kind_is_allowed(self, webhook: WebhookUnderTest, body: dict[str, Any]) -> None:
        for path in ("/validate", "/mutate"):
            assert response_of(webhook.post(path, body)) == {"uid": body["request"]["uid"], "allowed": True}

    @pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
    def test_delete_and_connect_are_allowed(self, webhook: WebhookUnderTest, operation: str) -> None:
        """Even of an object that a CREATE of would be denied."""
        body = review(spec={"virtualDiskName": "d2"}, operation=operation)
        assert response_of(webhook.post("/validate", body)) == {"uid": body["request"]["uid"], "allowed": True}

    def test_update_changing_spec_is_denied(self, webhook: WebhookUnderTest) -> None:
        body = review(operation="UPDATE", old_spec={"virtualDiskName": "d3", "requiredConsistency": True})
        answer = response_of(webhook.post("/validate", body))
        assert answer["allowed"] is False
        assert answer["status"]["details"]["causes"][0]["reason"] == "spec-immutable"

    @pytest.mark.parametrize("disk", ["d1", "d2", "d3", "missing"])
    def test_dry_run_is_decided_identically(self, webhook: WebhookUnderTest, disk: str) -> None:
        """dryRun changes nothing in the answer; the log line says dry_run."""
        real = response_of(webhook.post("/validate", review(spec={"virtualDiskName": disk})))
        dry = response_of(webhook.post("/validate", review(spec={"virtualDiskName": disk}, dry_run=True)))
        assert dry == real
        lines = webhook.log_lines()
        assert [line["dry_run"] for line in lines] == [False, True]
        assert lines[0]["decision"] == lines[1]["decision"]

    def test_exempt_namespace_is_allowed(self, make_webhook: Callable[..., WebhookUnderTest]) -> None:
        webhook = make_webhook({"exemptNamespaces": ["ns1"]})
        answer = response_of(webhook.post("/validate", review(spec={"virtualDiskName": "d2"})))
        assert answer["allowed"] is True


class TestOperations:
    def test_healthz(self, webhook: WebhookUnderTest) -> None:
        result = webhook.client.get("/healthz")
        assert result.status_code == 200
        assert result.get_json() == {"status": "ok"}

    def test_readyz_reports_certificates_and_view(self, make_webhook: Callable[..., WebhookUnderTest], cert_dir: Any) -> None:
        webhook = make_webhook(cert_file=str(cert_dir / "tls.crt"), key_file=str(cert_dir / "tls.key"))
        result = webhook.client.get("/readyz")
        assert result.status_code == 200
        body = result.get_json()
        assert body["ready"] is True
        assert body["certificates"]["ok"] and "serving" in body["certificates"]["reason"]
        assert body["view"]["ok"]

    @pytest.mark.parametrize(("policy", "version"), [(None, "1.10"), ({"platformVersion": "0.22"}, "0.22")])
    def test_readyz_says_the_platform_version_decided_for(
        self, make_webhook: Callable[..., WebhookUnderTest], policy: dict[str, Any] | None, version: str
    ) -> None:
        """SPEC: /readyz says which platform version the webhook assumes."""
        result = make_webhook(policy).client.get("/readyz")
        assert result.get_json()["platformVersion"] == version

    def test_readyz_is_503_when_certificates_are_unusable(
        self, make_webhook: Callable[..., WebhookUnderTest], tmp_path: Any
    ) -> None:
        webhook = make_webhook(cert_file=str(tmp_path / "missing.crt"), key_file=str(tmp_path / "missing.key"))
        result = webhook.client.get("/readyz")
        assert result.status_code == 503
        body = result.get_json()
        assert body["ready"] is False
        assert "missing.crt" in body["certificates"]["reason"]

    def test_readyz_is_503_when_the_view_is_not_synced(self, make_webhook: Callable[..., WebhookUnderTest]) -> None:
        webhook = make_webhook()
        handler = webhook.app.extensions["snapguard"]
        handler.view_source.ready = lambda: (False, "watch cache not synced: VirtualDisk")
        result = webhook.client.get("/readyz")
        assert result.status_code == 503
        assert result.get_json()["view"] == {"ok": False, "reason": "watch cache not synced: VirtualDisk"}

    def test_metrics_after_requests(self, make_webhook: Callable[..., WebhookUnderTest], cert_dir: Any) -> None:
        """/metrics is Prometheus text with every family, counting what was answered."""
        webhook = make_webhook(cert_file=str(cert_dir / "tls.crt"), key_file=str(cert_dir / "tls.key"))
        webhook.post("/validate", review(spec={"virtualDiskName": "d2"}))
        webhook.post("/validate", review(spec={"virtualDiskName": "d1"}, dry_run=True))
        webhook.post("/mutate", review(spec={"virtualDiskName": "d1"}))
        result = webhook.client.get("/metrics")
        assert result.status_code == 200
        assert result.content_type.startswith("text/plain")
        text = result.get_data(as_text=True)
        for name in (
            "snapguard_admission_requests_total",
            "snapguard_admission_duration_seconds_bucket",
            "snapguard_rule_results_total",
            "snapguard_certificate_expiry_timestamp_seconds",
            "snapguard_view_objects",
        ):
            assert name in text
        assert (
            'snapguard_admission_requests_total{decision="denied",dry_run="false",'
            'kind="VirtualDiskSnapshot",operation="CREATE"} 1.0'
        ) in text
        assert 'dry_run="true"' in text
        assert 'decision="patched"' in text
        assert 'snapguard_rule_results_total{result="deny",rule="vds-disk-resizing"} 1.0' in text
        assert 'snapguard_view_objects{kind="VirtualDisk"} 3.0' in text
        assert 'le="10.0"' in text

    def test_ungoverned_kinds_share_one_metric_label(self, webhook: WebhookUnderTest) -> None:
        """Arbitrary kinds cannot grow the label set: they are counted as `other`."""
        webhook.post("/validate", review("Whatever", {}, group="example.com"))
        text = webhook.client.get("/metrics").get_data(as_text=True)
        assert 'kind="other"' in text and "Whatever" not in text


class TestDecisionLog:
    def test_one_json_line_per_decision(self, webhook: WebhookUnderTest) -> None:
        webhook.post("/validate", review(spec={"virtualDiskName": "d2"}, uid="u-1"))
        webhook.post("/mutate", review(spec={"virtualDiskName": "d1"}, uid="u-2"))
        webhook.post("/validate", review(uid="u-3", operation="DELETE"))
        webhook.client.get("/healthz")
        lines = webhook.log_lines()
        assert [(line["uid"], line["webhook"], line["decision"]) for line in lines] == [
            ("u-1", "validate", "denied"),
            ("u-2", "mutate", "patched"),
            ("u-3", "validate", "allowed"),
        ]
        first = lines[0]
        assert {k: first[k] for k in ("kind", "namespace", "name", "operation", "user", "rules", "dry_run")} == {
            "kind": "VirtualDiskSnapshot", "namespace": "ns1", "name": "s1", "operation": "CREATE",
            "user": "alice", "rules": ["vds-disk-resizing"], "dry_run": False,
        }
        assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0

    def test_log_never_contains_object_data(self, webhook: WebhookUnderTest) -> None:
        """A Secret (or any object) passing through: its data is never logged."""
        secret = review("Secret", {}, group="", version="v1", name="creds")
        secret["request"]["object"]["data"] = {"password": "c2VjcmV0LXZhbHVlLTQyCg=="}
        secret["request"]["object"]["stringData"] = {"token": "plain-token-value"}
        snapshot = review(spec={"virtualDiskName": "d2"})
        snapshot["request"]["object"]["metadata"]["annotations"] = {"note": "annotation-value-7"}
        webhook.post("/validate", secret)
        webhook.post("/validate", snapshot)
        text = webhook.log.getvalue()
        assert len(webhook.log_lines()) == 2
        for leak in ("c2VjcmV0LXZhbHVlLTQyCg==", "plain-token-value", "annotation-value-7", "process of resizing"):
            assert leak not in text

    def test_bad_requests_are_not_decisions(self, webhook: WebhookUnderTest) -> None:
        webhook.client.post("/validate", data=b"{", headers={"Content-Type": JSON})
        webhook.client.post("/validate", data=b"{}", headers={"Content-Type": "text/plain"})
        assert webhook.log_lines() == []
