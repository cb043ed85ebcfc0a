"""The ValidatingWebhookConfiguration and MutatingWebhookConfiguration that route the
API server's admission calls to the webhook.

The rules are derived, not written by hand: validation covers the kinds and operations
of the rule catalogue plus every governed kind on the operations SPEC governs it on
(CREATE, and UPDATE for `spec-immutable`), defaulting exactly the kinds that have
defaults (on CREATE, the only operation defaults apply to), with resources and groups
from `policies.kinds`. A rule added to the catalogue for a new kind or operation is
routed to the webhook without touching this file.

VirtualMachineOperations are registered with a `matchConditions` entry (CEL, evaluated
by the API server) so that only the governed types (`Restore`, `Clone`) reach the
webhook: Start/Stop/Migrate traffic never waits on it, nor fails with it when it is
down. matchConditions are beta and on by default from Kubernetes 1.28 (GA in 1.30).

Pure: returns plain dictionaries; the caller serialises them.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from typing import Any

from policies import kinds
from policies.catalogue import CATALOGUE, Operation
from policies.defaults import DEFAULTS

ADMISSION_REGISTRATION = "admissionregistration.k8s.io/v1"
VALIDATE_PATH = "/validate"
MUTATE_PATH = "/mutate"
FAILURE_POLICIES = ("Fail", "Ignore")
# Well under the API server's 10 s maximum: a slow answer delays every kubectl apply.
TIMEOUT_SECONDS = 5
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
_OPERATION_ORDER = [op.value for op in Operation]
# SPEC governs the CREATE of these kinds and their UPDATE (`spec-immutable`); registered
# whether or not a rule of the catalogue decides them yet, so the configuration never
# lags behind the contract.
_CREATE_AND_UPDATE = (*kinds.SNAPSHOT_KINDS, *kinds.OPERATION_KINDS)
OPERATION_TYPE_CONDITION = "governed-operation-types"


def validated_operations() -> dict[str, list[str]]:
    """kind -> operations some rule of the catalogue decides, or SPEC governs."""
    operations: dict[str, set[str]] = defaultdict(set)
    for kind in _CREATE_AND_UPDATE:
        operations[kind].update((Operation.CREATE.value, Operation.UPDATE.value))
    for rule in CATALOGUE.values():
        for kind in rule.kinds:
            operations[kind].update(op.value for op in rule.operations)
    return {kind: sorted(ops, key=_OPERATION_ORDER.index) for kind, ops in operations.items()}


def _governed_type(variable: str) -> str:
    types = ", ".join(f"'{t}'" for t in kinds.GOVERNED_OPERATION_TYPES)
    return (
        f"has({variable}.spec) && has({variable}.spec.type)"
        f" && {variable}.spec.type in [{types}]"
    )


def operation_type_expression() -> str:
    """CEL: true unless the request is for a VirtualMachineOperation of a type the
    product does not govern.

    Safe for every operation: `object` is null on DELETE and `oldObject` on CREATE, so
    each is read only on the operations that carry it (a CEL error would count as a
    webhook failure under failurePolicy Fail). An UPDATE is sent when either side is
    governed, so a change of `spec.type` away from Restore/Clone still meets
    `spec-immutable`."""
    plural = kinds.KINDS[kinds.VIRTUAL_MACHINE_OPERATION].plural
    return (
        f"request.resource.resource != '{plural}'"
        f" || (request.operation in ['CREATE', 'UPDATE'] && {_governed_type('object')})"
        f" || (request.operation in ['UPDATE', 'DELETE'] && {_governed_type('oldObject')})"
    )


def match_conditions(rules: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The matchConditions of a webhook with these rules: the operation-type filter
    when VirtualMachineOperations are among them, else none."""
    plural = kinds.KINDS[kinds.VIRTUAL_MACHINE_OPERATION].plural
    if not any(plural in rule["resources"] for rule in rules):
        return []
    return [{"name": OPERATION_TYPE_CONDITION, "expression": operation_type_expression()}]


def defaulted_operations() -> dict[str, list[str]]:
    """kind -> operations defaults apply to (CREATE only, see Engine.defaults)."""
    return {kind: [Operation.CREATE.value] for kind, defaults in DEFAULTS.items() if defaults}


def admission_rules(operations: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Rules grouped by (group, version, operations), resources in catalogue order."""
    grouped: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for kind in [k for k in kinds.KINDS if k in operations]:
        info = kinds.KINDS[kind]
        key = (info.group, info.version, tuple(operations[kind]))
        grouped.setdefault(key, []).append(info.plural)
    return [
        {
            "apiGroups": [group],
            "apiVersions": [version],
            "operations": list(ops),
            "resources": resources,
            "scope": "Namespaced",
        }
        for (group, version, ops), resources in grouped.items()
    ]


def _webhook(
    name: str,
    path: str,
    rules: list[dict[str, Any]],
    failure_policy: str,
    service: str,
    namespace: str,
    ca_bundle: bytes | None,
    port: int,
) -> dict[str, Any]:
    client_config: dict[str, Any] = {
        "service": {"namespace": namespace, "name": service, "path": path, "port": port}
    }
    if ca_bundle:
        client_config["caBundle"] = base64.b64encode(ca_bundle).decode()
    conditions = match_conditions(rules)
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "clientConfig": client_config,
        "rules": rules,
        # The webhook's own namespace is exempt: a broken webhook must not block its
        # own repair.
        "namespaceSelector": {
            "matchExpressions": [
                {"key": NAMESPACE_LABEL, "operator": "NotIn", "values": [namespace]}
            ]
        },
        **({"matchConditions": conditions} if conditions else {}),
    }


def webhook_configurations(
    *,
    service: str,
    namespace: str,
    ca_bundle: bytes | None = None,
    name: str = "snapguard",
    validating_failure_policy: str = "Fail",
    mutating_failure_policy: str = "Ignore",
    port: int = 443,
) -> list[dict[str, Any]]:
    """[ValidatingWebhookConfiguration, MutatingWebhookConfiguration].

    Validation fails closed (`Fail`: an impossible snapshot must not slip through while
    the webhook is down); defaulting fails open (`Ignore`: the platform's CRDs default
    the same fields)."""
    for policy in (validating_failure_policy, mutating_failure_policy):
        if policy not in FAILURE_POLICIES:
            raise ValueError(f"failure policy must be Fail or Ignore, got {policy!r}")
    labels = {"app.kubernetes.io/name": "dvp-snapguard"}
    # Webhook names must be fully qualified; the service's DNS name is ours.
    suffix = f"{name}.{namespace}.svc"
    return [
        {
            "apiVersion": ADMISSION_REGISTRATION,
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"{name}-validating", "labels": labels},
            "webhooks": [
                _webhook(
                    f"validate.{suffix}",
                    VALIDATE_PATH,
                    admission_rules(validated_operations()),
                    validating_failure_policy,
                    service,
                    namespace,
                    ca_bundle,
                    port,
                )
            ],
        },
        {
            "apiVersion": ADMISSION_REGISTRATION,
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": f"{name}-mutating", "labels": labels},
            "webhooks": [
                {
                    **_webhook(
                        f"default.{suffix}",
                        MUTATE_PATH,
                        admission_rules(defaulted_operations()),
                        mutating_failure_policy,
                        service,
                        namespace,
                        ca_bundle,
                        port,
                    ),
                    "reinvocationPolicy": "Never",
                }
            ],
        },
    ]
