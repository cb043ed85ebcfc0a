"""`snapguard webhook-config` and its generator: the configurations route exactly the
governed resources and operations to the webhook, with the settings the API server
needs, and validate against the Kubernetes schema."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from policies.catalogue import CATALOGUE
from policies.defaults import DEFAULTS
from policies.kinds import KINDS
from snapguard.cli import main
from webhook.configuration import webhook_configurations

SERVICE, NAMESPACE = "snapguard", "d8-snapguard"


def routed(webhook: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(group, resource, operation) the webhook's rules send to us."""
    return {
        (group, resource, operation)
        for rule in webhook["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["webhook-config", *args])
    out, err = capsys.readouterr()
    return code, [d for d in yaml.safe_load_all(out) if d] if code == 0 else [], err


@pytest.fixture
def documents(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, docs, err = run_cli(capsys, "--service", SERVICE, "--namespace", NAMESPACE)
    assert code == 0, err
    return docs


def test_two_documents_validating_then_mutating(documents: list[dict[str, Any]]) -> None:
    assert [(d["apiVersion"], d["kind"]) for d in documents] == [
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
    ]
    assert [d["metadata"]["name"] for d in documents] == ["snapguard-validating", "snapguard-mutating"]


def test_validating_routes_exactly_the_governed_resources(documents: list[dict[str, Any]]) -> None:
    """SPEC: snapshots and restores on CREATE and UPDATE, virtual disks on CREATE."""
    group = "virtualization.deckhouse.io"
    expected = {
        (group, plural, op)
        for plural in ("virtualdisksnapshots", "virtualmachinesnapshots", "virtualmachinerestores")
        for op in ("CREATE", "UPDATE")
    } | {(group, "virtualdisks", "CREATE")}
    assert routed(documents[0]["webhooks"][0]) == expected


def test_validating_routes_follow_the_catalogue(documents: list[dict[str, Any]]) -> None:
    """Derived, not hand-written: every (kind, operation) of a rule, nothing else."""
    from_catalogue = {
        (KINDS[kind].group, KINDS[kind].plural, op.value)
        for rule in CATALOGUE.values()
        for kind in rule.kinds
        for op in rule.operations
    }
    assert routed(documents[0]["webhooks"][0]) == from_catalogue


def test_mutating_routes_the_defaulted_kinds_on_create(documents: list[dict[str, Any]]) -> None:
    group = "virtualization.deckhouse.io"
    assert routed(documents[1]["webhooks"][0]) == {
        (group, "virtualdisksnapshots", "CREATE"),
        (group, "virtualmachinesnapshots", "CREATE"),
    }
    assert {KINDS[k].plural for k in DEFAULTS} == {r for _, r, _ in routed(documents[1]["webhooks"][0])}


@pytest.mark.parametrize(("index", "path", "policy"), [(0, "/validate", "Fail"), (1, "/mutate", "Ignore")])
def test_webhook_settings(documents: list[dict[str, Any]], index: int, path: str, policy: str) -> None:
    webhook = documents[index]["webhooks"][0]
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "None"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["matchPolicy"] == "Equivalent"
    assert webhook["failurePolicy"] == policy
    assert webhook["clientConfig"] == {
        "service": {"namespace": NAMESPACE, "name": SERVICE, "path": path, "port": 443}
    }
    assert all(rule["scope"] == "Namespaced" for rule in webhook["rules"])
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]}
        ]
    }
    assert webhook["name"].count(".") >= 2  # the API server wants a qualified name


def test_ca_bundle_failure_policies_and_name(capsys: pytest.CaptureFixture[str], cert_dir: Path) -> None:
    ca = cert_dir / "ca.crt"
    code, docs, err = run_cli(
        capsys, "--service", SERVICE, "--namespace", NAMESPACE, "--ca-bundle", str(ca),
        "--validating-failure-policy", "Ignore", "--mutating-failure-policy", "Fail", "--name", "guard",
    )
    assert code == 0, err
    assert [d["metadata"]["name"] for d in docs] == ["guard-validating", "guard-mutating"]
    for doc, policy in zip(docs, ("Ignore", "Fail"), strict=True):
        webhook = doc["webhooks"][0]
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca.read_bytes()
        assert webhook["failurePolicy"] == policy


@pytest.mark.parametrize("content", [None, b"", b"not a certificate\n"])
def test_bad_ca_bundle_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "ca.crt"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "--service", SERVICE, "--namespace", NAMESPACE, "--ca-bundle", str(path))
    assert code == 2
    assert err.startswith("snapguard: error: ") and str(path) in err and err.count("\n") == 1


def test_unknown_failure_policy_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["webhook-config", "--service", "s", "--namespace", "n", "--validating-failure-policy", "Maybe"])
    assert exit_.value.code == 2


def test_generator_refuses_unknown_failure_policy() -> None:
    with pytest.raises(ValueError, match="Fail or Ignore"):
        webhook_configurations(service="s", namespace="n", validating_failure_policy="fail")


def test_valid_against_the_kubernetes_schema(capsys: pytest.CaptureFixture[str], cert_dir: Path) -> None:
    code, docs, err = run_cli(capsys, "--service", SERVICE, "--namespace", NAMESPACE, "--ca-bundle", str(cert_dir / "ca.crt"))
    assert code == 0, err
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
