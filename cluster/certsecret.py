"""REST helpers for the webhook's self-managed TLS material: the TLS Secret and the
`caBundle` of the Validating/MutatingWebhookConfigurations that trust it.

`snapguard certs maintain` decides *what* the Secret and the bundles should hold (with
`certs/`); this module only moves bytes in and out of the API server. Every write is
conditional on the resourceVersion that was read, so two maintainers running at once
(a CronJob run overlapping the per-release Job) cannot overwrite each other: the loser
gets an `ApiError` with status 409 and starts over from a fresh read.

What it must not do: parse certificates (that is `certs/`, which this package may not
import), or write any object but the one Secret and the named configurations.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies import kinds

from .api import ApiError, KubeApi

ADMISSION_GROUP = "admissionregistration.k8s.io"
ADMISSION_VERSION = "v1"
VALIDATING_WEBHOOK_CONFIGURATION = "ValidatingWebhookConfiguration"
MUTATING_WEBHOOK_CONFIGURATION = "MutatingWebhookConfiguration"
# Not in `policies.kinds.KINDS`: the engine never reads them, only this module writes them.
WEBHOOK_CONFIGURATION_PLURALS = {
    VALIDATING_WEBHOOK_CONFIGURATION: "validatingwebhookconfigurations",
    MUTATING_WEBHOOK_CONFIGURATION: "mutatingwebhookconfigurations",
}
TLS_SECRET_TYPE = "kubernetes.io/tls"
# Who wrote the Secret: not Helm (a Helm-rendered Secret would be reset on every upgrade).
MANAGED_BY = "snapguard"
SECRET_LABELS = {
    "app.kubernetes.io/name": "dvp-snapguard",
    "app.kubernetes.io/component": "webhook-tls",
    "app.kubernetes.io/managed-by": MANAGED_BY,
}


def webhook_configuration_path(kind: str, name: str | None = None) -> str:
    """REST path of a (cluster-scoped) webhook configuration, or of their collection."""
    plural = WEBHOOK_CONFIGURATION_PLURALS.get(kind)
    if plural is None:
        raise ValueError(f"not a webhook configuration kind: {kind!r}")
    path = f"/apis/{ADMISSION_GROUP}/{ADMISSION_VERSION}/{plural}"
    return f"{path}/{name}" if name else path


def qualified(kind: str) -> str:
    """`validatingwebhookconfigurations.admissionregistration.k8s.io`, as the API server
    names the resource in its messages."""
    return f"{WEBHOOK_CONFIGURATION_PLURALS[kind]}.{ADMISSION_GROUP}"


@dataclass(frozen=True)
class StoredSecret:
    """A Secret as read: its data decoded, and the resourceVersion writes are checked against."""

    namespace: str
    name: str
    data: dict[str, bytes]
    resource_version: str
    raw: dict[str, Any] = field(repr=False, compare=False)


def _decode_data(obj: Mapping[str, Any], where: str) -> dict[str, bytes]:
    decoded: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(str(value or ""), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(0, "Invalid", f"{where}: data.{key} is not base64") from None
    return decoded


def _encode_data(data: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in sorted(data.items())}


def _stored(obj: dict[str, Any]) -> StoredSecret:
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    return StoredSecret(
        namespace=namespace,
        name=name,
        data=_decode_data(obj, f"secret {namespace}/{name}"),
        resource_version=str(meta.get("resourceVersion") or ""),
        raw=obj,
    )


class CertSecretStore:
    """The TLS Secret and the webhook configurations' bundles of one installation."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    # --- the TLS Secret ------------------------------------------------------------

    def read_secret(self, namespace: str, name: str) -> StoredSecret | None:
        obj = self.api.get(kinds.SECRET, namespace, name)
        return None if obj is None else _stored(obj)

    def create_secret(self, namespace: str, name: str, data: Mapping[str, bytes]) -> StoredSecret:
        """Create the Secret (type kubernetes.io/tls); 409 when someone else just did."""
        obj = {
            "apiVersion": "v1",
            "kind": kinds.SECRET,
            "metadata": {"name": name, "namespace": namespace, "labels": dict(SECRET_LABELS)},
            "type": TLS_SECRET_TYPE,
            "data": _encode_data(data),
        }
        return _stored(self.api.create(obj))

    def replace_secret_data(self, secret: StoredSecret, data: Mapping[str, bytes]) -> StoredSecret:
        """Replace the Secret's data, if it is still at the version read (else 409).

        Labels, annotations, owner references and the type are kept as they were: the
        Secret may have been created by someone else (cert-manager before a switch of
        modes) and its type cannot change anyway."""
        obj = dict(secret.raw)
        obj["metadata"] = {
            **(secret.raw.get("metadata") or {}),
            "resourceVersion": secret.resource_version,
        }
        obj["data"] = _encode_data(data)
        obj.pop("stringData", None)
        return _stored(self.api.replace(obj))

    # --- the webhook configurations' caBundle ----------------------------------------

    def read_configuration(self, kind: str, name: str) -> dict[str, Any]:
        """The configuration; ApiError 404 naming it when it does not exist."""
        try:
            result: dict[str, Any] = self.api._call("GET", webhook_configuration_path(kind, name))
        except ApiError as error:
            if error.not_found:
                raise ApiError(404, "NotFound", f'{qualified(kind)} "{name}" not found') from None
            raise
        return result

    def ca_bundles(self, kind: str, name: str) -> dict[str, bytes]:
        """webhook name -> its decoded caBundle (b"" when it has none)."""
        configuration = self.read_configuration(kind, name)
        return {
            str(webhook.get("name") or ""): _decode_bundle(webhook)
            for webhook in configuration.get("webhooks") or []
        }

    def update_ca_bundles(
        self, kind: str, name: str, merge: Callable[[bytes], bytes]
    ) -> dict[str, bytes]:
        """Set every webhook's caBundle to `merge(current bundle)`; returns webhook name ->
        the bundle written, for the webhooks that changed (nothing is written when none
        did). The write is a PUT at the resourceVersion read, so a concurrent change is a
        409, never a lost update."""
        configuration = self.read_configuration(kind, name)
        written: dict[str, bytes] = {}
        for webhook in configuration.get("webhooks") or []:
            current = _decode_bundle(webhook)
            wanted = merge(current)
            if wanted != current:
                client_config = webhook.setdefault("clientConfig", {})
                client_config["caBundle"] = base64.b64encode(wanted).decode()
                written[str(webhook.get("name") or "")] = wanted
        if written:
            self.api._call(
                "PUT",
                webhook_configuration_path(kind, name),
                body=configuration,  # carries the resourceVersion it was read at
            )
        return written


def _decode_bundle(webhook: Mapping[str, Any]) -> bytes:
    text = str((webhook.get("clientConfig") or {}).get("caBundle") or "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""  # an unreadable bundle trusts nothing: the merge replaces it
