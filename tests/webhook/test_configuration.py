"""`snapguard webhook-config` and its generator: the configurations route exactly the
governed resources and operations to the webhook, with the settings the API server
needs, and validate against the Kubernetes schema."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import celpy  # type: ignore[import-untyped]
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


GOVERNED_ON_CREATE_AND_UPDATE = (
    "virtualdisksnapshots",
    "virtualmachinesnapshots",
    "virtualmachinerestores",
    "virtualmachineoperations",
    "virtualmachinesnapshotoperations",
)


def test_validating_routes_exactly_the_governed_resources(documents: list[dict[str, Any]]) -> None:
    """SPEC: snapshots, restores and the restore operations on CREATE and UPDATE,
    virtual disks on CREATE."""
    group = "virtualization.deckhouse.io"
    expected = {
        (group, plural, op) for plural in GOVERNED_ON_CREATE_AND_UPDATE for op in ("CREATE", "UPDATE")
    } | {(group, "virtualdisks", "CREATE")}
    assert routed(documents[0]["webhooks"][0]) == expected


def test_validating_routes_follow_the_catalogue(documents: list[dict[str, Any]]) -> None:
    """Derived, not hand-written: every (kind, operation) of a rule is routed, and
    nothing else but the CREATE and UPDATE of the kinds SPEC governs."""
    from_catalogue = {
        (KINDS[kind].group, KINDS[kind].plural, op.value)
        for rule in CATALOGUE.values()
        for kind in rule.kinds
        for op in rule.operations
    }
    routes = routed(documents[0]["webhooks"][0])
    assert from_catalogue <= routes
    assert {(r, op) for _, r, op in routes - from_catalogue} <= {
        (plural, op) for plural in GOVERNED_ON_CREATE_AND_UPDATE for op in ("CREATE", "UPDATE")
    }


def test_only_the_validating_webhook_has_the_operation_type_condition(
    documents: list[dict[str, Any]],
) -> None:
    """One matchConditions entry, on the webhook that routes virtualmachineoperations;
    the mutating one routes no operations and has none."""
    validating, mutating = (d["webhooks"][0] for d in documents)
    assert [c["name"] for c in validating["matchConditions"]] == ["governed-operation-types"]
    assert "matchConditions" not in mutating


def _cel_request(
    resource: str, operation: str, new: dict[str, Any] | None, old: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "request": celpy.json_to_cel(
            {"resource": {"group": "virtualization.deckhouse.io", "version": "v1alpha2", "resource": resource},
             "operation": operation}
        ),
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
    }


def _vmop(type_: str | None) -> dict[str, Any]:
    spec = {"virtualMachineName": "vm1", **({"type": type_} if type_ else {})}
    return {"apiVersion": "virtualization.deckhouse.io/v1alpha2", "kind": "VirtualMachineOperation",
            "metadata": {"name": "op"}, "spec": spec}


@pytest.mark.parametrize(
    ("resource", "operation", "new", "old", "sent"),
    [
        pytest.param("virtualmachineoperations", "CREATE", _vmop("Restore"), None, True, id="create-restore"),
        pytest.param("virtualmachineoperations", "CREATE", _vmop("Clone"), None, True, id="create-clone"),
        *(
            pytest.param("virtualmachineoperations", "CREATE", _vmop(t), None, False, id=f"create-{t.lower()}")
            for t in ("Start", "Stop", "Restart", "Migrate", "Evict")
        ),
        pytest.param("virtualmachineoperations", "CREATE", _vmop(None), None, False, id="create-no-type"),
        pytest.param("virtualmachineoperations", "CREATE", {"metadata": {"name": "op"}}, None, False, id="create-no-spec"),
        pytest.param("virtualmachineoperations", "UPDATE", _vmop("Restore"), _vmop("Restore"), True, id="update-restore"),
        pytest.param("virtualmachineoperations", "UPDATE", _vmop("Start"), _vmop("Restore"), True, id="update-away-from-restore"),
        pytest.param("virtualmachineoperations", "UPDATE", _vmop("Stop"), _vmop("Start"), False, id="update-stop"),
        pytest.param("virtualmachineoperations", "DELETE", None, _vmop("Start"), False, id="delete-start"),
        pytest.param("virtualmachineoperations", "DELETE", None, _vmop("Clone"), True, id="delete-clone"),
        pytest.param("virtualmachinesnapshotoperations", "CREATE", {"spec": {"type": "CreateVirtualMachine"}}, None, True, id="vmsop"),
        pytest.param("virtualmachinesnapshots", "UPDATE", {"spec": {}}, {"spec": {}}, True, id="other-kind"),
        pytest.param("virtualdisks", "CREATE", {}, None, True, id="other-kind-no-spec"),
    ],
)
def test_the_operation_type_condition_sends_only_governed_operations(
    documents: list[dict[str, Any]],
    resource: str,
    operation: str,
    new: dict[str, Any] | None,
    old: dict[str, Any] | None,
    sent: bool,
) -> None:
    """The CEL expression, evaluated by cel-python (the API server uses cel-go: same
    language): only Restore and Clone operations reach the webhook, other kinds always
    do, and no operation makes it an error (null `object` on DELETE, null `oldObject`
    on CREATE, missing `spec`/`type`)."""
    (condition,) = documents[0]["webhooks"][0]["matchConditions"]
    environment = celpy.Environment()
    program = environment.program(environment.compile(condition["expression"]))
    result = program.evaluate(_cel_request(resource, operation, new, old))
    assert not isinstance(result, celpy.CELEvalError), result
    assert bool(result) is sent


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
