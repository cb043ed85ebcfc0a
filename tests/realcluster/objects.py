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
