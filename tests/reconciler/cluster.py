"""A fresh Kubernetes API test server with a real client, for tests that need many
clusters in one test (one per injected failure)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes

from cluster.api import KubeApi
from tests.kubeapi.server import KubeAPIServer

from . import objects as o

INVENTORY = (
    "virtualmachines", "virtualdisks", "virtualmachineipaddresses", "virtualmachinemacaddresses",
    "virtualmachineblockdeviceattachments", "secrets", "persistentvolumeclaims", "volumesnapshots",
    "virtualdisksnapshots", "virtualmachinesnapshots", "virtualmachinerestores",
)
UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@contextlib.contextmanager
def fresh_cluster(directory: Path) -> Iterator[tuple[KubeAPIServer, KubeApi]]:
    directory.mkdir(parents=True, exist_ok=True)
    with KubeAPIServer(bookmark_interval=0.2) as server:
        client = kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig_path(directory)))
        try:
            yield server, KubeApi(client, timeout=10)
        finally:
            client.close()


VOLATILE = ("resourceVersion", "creationTimestamp", "lastTransitionTime", "deletionTimestamp")


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return UID.sub("<uid>", value)
    if isinstance(value, dict):
        return {_normalised(k): _normalised(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return type(value)(_normalised(v) for v in value)
    return value


def inventory(server: KubeAPIServer) -> dict[str, list[Any]]:
    """Every object of the kinds involved, as (name, spec or data, annotations,
    owners, finalizers, phase) with uids masked, sorted: two runs that end in the same
    objects (none missing, none twice, same content) give equal inventories."""
    result: dict[str, list[Any]] = {}
    for resource in INVENTORY:
        entries = []
        for obj in server.objects(resource, o.NS):
            metadata = obj["metadata"]
            annotations = dict(metadata.get("annotations") or {})
            content = obj.get("spec", obj.get("data"))
            if obj.get("type") == "virtualmachine.virtualization.deckhouse.io/snapshot":
                # The stored objects, not their bytes (which hold resourceVersions).
                content = {key: json.loads(base64.b64decode(value)) for key, value in obj["data"].items()}
            entries.append(_normalised((
                metadata["name"],
                content,
                sorted(annotations.items()),
                sorted((r["kind"], r["name"]) for r in metadata.get("ownerReferences") or []),
                sorted(metadata.get("finalizers") or []),
                (obj.get("status") or {}).get("phase"),
                (obj.get("status") or {}).get("consistent"),
            )))
        result[resource] = sorted(entries, key=repr)
    return result
