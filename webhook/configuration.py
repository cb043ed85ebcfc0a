"""The ValidatingWebhookConfiguration and MutatingWebhookConfiguration that route the
API server's admission calls to the webhook.

The rules are derived, not written by hand: validation covers exactly the kinds and
operations of the rule catalogue, defaulting exactly the kinds that have defaults (on
CREATE, the only operation defaults apply to), with resources and groups from
`policies.kinds`. A rule added to the catalogue for a new kind or operation is routed
to the webhook without touching this file.

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


def validated_operations() -> dict[str, list[str]]:
    """kind -> operations some rule of the catalogue decides."""
    operations: dict[str, set[str]] = defaultdict(set)
    for rule in CATALOGUE.values():
        for kind in rule.kinds:
            operations[kind].update(op.value for op in rule.operations)
    return {kind: sorted(ops, key=_OPERATION_ORDER.index) for kind, ops in operations.items()}


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
