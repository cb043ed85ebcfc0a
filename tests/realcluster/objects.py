"""Seeding the real API server with the objects of `tests/reconciler/objects.py`.

The double stores what it is given; kube-apiserver validates every object against the
CRD's schema (and the built-in kinds against their own rules), ignores `status` on a
create and takes it only through the status subresource. `valid()` fills what the real
schemas require and the builders leave out; `seed()` creates each object, then writes
its status as the platform's controller would.
"""

from __future__ import annotations

import copy
from typing import Any

from cluster.api import ApiError, KubeApi
from policies import kinds

Obj = dict[str, Any]
# metav1.Condition requires lastTransitionTime, reason and message besides type and status.
EPOCH = "2026-01-01T00:00:00Z"
CLUSTER_SCOPED = {"StorageClass", "VolumeSnapshotClass"}


def valid(obj: Obj, namespace: str | None = None) -> Obj:
    """A copy of `obj` that passes the real schema, moved to `namespace`."""
    obj = copy.deepcopy(obj)
    if namespace and obj["kind"] not in CLUSTER_SCOPED:
        obj["metadata"]["namespace"] = namespace
    # generation is the server's to set.
    obj["metadata"].pop("generation", None)
    kind, spec = obj["kind"], obj.get("spec")
    if kind == "VirtualMachine":
        spec.setdefault("virtualMachineClassName", "generic")
        spec.setdefault("cpu", {"cores": 1})
        spec.setdefault("memory", {"size": "1Gi"})
        for ref in (obj.get("status") or {}).get("blockDeviceRefs") or []:
            ref.setdefault("size", "10Gi")
    if kind == "PersistentVolumeClaim":
        spec.setdefault("accessModes", ["ReadWriteMany"])
    for condition in (obj.get("status") or {}).get("conditions") or []:
        condition.setdefault("lastTransitionTime", EPOCH)
        condition.setdefault("reason", condition["type"])
        condition.setdefault("message", "")
        condition.pop("observedGeneration", None)  # the server's generation is 1 after a create
    return obj


def seed(api: KubeApi, namespace: str | None, *objects: Obj) -> list[Obj]:
    """Create each object (a cluster-scoped one that exists already is kept), then write
    its status through the status subresource. Returns the stored objects."""
    stored = []
    for original in objects:
        obj = valid(original, namespace)
        status = obj.pop("status", None)
        metadata = obj["metadata"]
        try:
            created = api.create(obj)
        except ApiError as error:
            if not (error.conflict and obj["kind"] in CLUSTER_SCOPED):
                raise
            created = api.get(obj["kind"], None, metadata["name"]) or {}
        if status:
            created = api.patch(obj["kind"], metadata.get("namespace"), metadata["name"], {"status": status},
                                subresource="status")
        stored.append(created)
    return stored


class ApiStore:
    """The double's test hooks (`put_object`, `get_object`, `objects`) over the real API
    server, so the helpers of `tests/reconciler` (objects, scenario) run unchanged.
    With `namespace`, what they seed goes there instead of their own `ns1`."""

    def __init__(self, api: KubeApi, namespace: str | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self._kinds = {info.plural: kind for kind, info in kinds.KINDS.items()}

    def put_object(self, obj: Obj) -> Obj:
        return seed(self.api, self.namespace, obj)[0]

    def get_object(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.api.get(self._kinds[resource], namespace, name)

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return self.api.list_all(self._kinds[resource], namespace)[0]
