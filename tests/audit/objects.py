"""Builders of the objects the audit tests seed, as the platform stores them."""

from __future__ import annotations

from typing import Any

DVP = "virtualization.deckhouse.io/v1alpha2"
SNAPSHOT_SECRET_TYPE = "virtualmachine.virtualization.deckhouse.io/snapshot"

Obj = dict[str, Any]


def _meta(name: str, namespace: str, created: str | None, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "generation": 1, **extra}
    if created:
        meta["creationTimestamp"] = created
    return meta


def condition(type_: str, status: str = "True", reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def disk(name: str, namespace: str = "ns1", *, vm: str | None = None, pvc: str | None = None,
         phase: str = "Ready") -> Obj:
    status: Obj = {"phase": phase, "conditions": [condition("Ready")]}
    status["target"] = {"persistentVolumeClaimName": pvc or f"pvc-{name}"}
    if vm:
        status["attachedToVirtualMachines"] = [{"name": vm, "mounted": True}]
    return {"apiVersion": DVP, "kind": "VirtualDisk", "metadata": _meta(name, namespace, None),
            "spec": {"persistentVolumeClaim": {"size": "10Gi"}}, "status": status}


def disk_from_snapshot(name: str, snapshot: str, namespace: str = "ns1", *, phase: str = "Pending",
                       size: str = "10Gi") -> Obj:
    return {"apiVersion": DVP, "kind": "VirtualDisk", "metadata": _meta(name, namespace, None),
            "spec": {"dataSource": {"type": "ObjectRef",
                                    "objectRef": {"kind": "VirtualDiskSnapshot", "name": snapshot}},
                     "persistentVolumeClaim": {"size": size}},
            "status": {"phase": phase}}


def pvc(name: str, namespace: str = "ns1", storage_class: str = "fast") -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(name, namespace, None),
            "spec": {"storageClassName": storage_class}, "status": {"phase": "Bound"}}


def storage_class(name: str = "fast", provisioner: str = "fast.csi") -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner}


def snapshot_class(name: str = "fast-snap", driver: str = "fast.csi") -> Obj:
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": name,
                         "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": driver}


def vm(name: str, namespace: str = "ns1", *, phase: str = "Running", agent: bool = True,
       disks: tuple[str, ...] = (), provisioning_secret: str | None = None) -> Obj:
    conditions = [condition("BlockDevicesReady"), condition("AgentReady", "True" if agent else "False")]
    spec: Obj = {"blockDeviceRefs": [{"kind": "VirtualDisk", "name": d} for d in disks]}
    if provisioning_secret:
        spec["provisioning"] = {"type": "UserDataRef",
                                "userDataRef": {"kind": "Secret", "name": provisioning_secret}}
    return {"apiVersion": DVP, "kind": "VirtualMachine", "metadata": _meta(name, namespace, None),
            "spec": spec, "status": {"phase": phase, "conditions": conditions}}


def disk_snapshot(name: str, namespace: str = "ns1", *, disk_name: str = "d1", phase: str = "Ready",
                  created: str | None = "2025-06-01T11:50:00Z", volume_snapshot: str | None = None,
                  conditions: list[Obj] | None = None, consistency: bool | None = None) -> Obj:
    spec: Obj = {"virtualDiskName": disk_name}
    if consistency is not None:
        spec["requiredConsistency"] = consistency
    status: Obj = {"phase": phase, "conditions": conditions or []}
    if volume_snapshot:
        status["volumeSnapshotName"] = volume_snapshot
    return {"apiVersion": DVP, "kind": "VirtualDiskSnapshot",
            "metadata": _meta(name, namespace, created), "spec": spec, "status": status}


def machine_snapshot(name: str, namespace: str = "ns1", *, vm_name: str = "vm1", phase: str = "Ready",
                     created: str | None = "2025-06-01T11:50:00Z", secret: str | None = None,
                     children: tuple[str, ...] = (), conditions: list[Obj] | None = None) -> Obj:
    status: Obj = {"phase": phase, "conditions": conditions or [],
                   "virtualDiskSnapshotNames": list(children)}
    if secret:
        status["virtualMachineSnapshotSecretName"] = secret
    return {"apiVersion": DVP, "kind": "VirtualMachineSnapshot",
            "metadata": _meta(name, namespace, created),
            "spec": {"virtualMachineName": vm_name, "requiredConsistency": True, "keepIPAddress": "Always"},
            "status": status}


def restore(name: str, namespace: str = "ns1", *, snapshot: str = "vms1", phase: str = "Pending",
            conditions: list[Obj] | None = None) -> Obj:
    return {"apiVersion": DVP, "kind": "VirtualMachineRestore",
            "metadata": _meta(name, namespace, "2025-06-01T11:50:00Z", uid=f"uid-{name}"),
            "spec": {"virtualMachineSnapshotName": snapshot},
            "status": {"phase": phase, "conditions": conditions or []}}


def volume_snapshot(name: str, namespace: str = "ns1", *, ready: bool | None = True) -> Obj:
    status: Obj = {} if ready is None else {"readyToUse": ready}
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": _meta(name, namespace, None),
            "spec": {"source": {"persistentVolumeClaimName": "pvc-d1"}}, "status": status}


def secret(name: str, namespace: str = "ns1", *, type_: str = "Opaque") -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name, namespace, None),
            "type": type_, "data": {}}


def healthy_namespace(namespace: str = "ns1") -> list[Obj]:
    """A stopped VM with one Ready disk on a Bound PVC of a class with a default
    VolumeSnapshotClass: everything a consistent snapshot needs."""
    return [
        disk("d1", namespace, vm="vm1"),
        pvc("pvc-d1", namespace),
        vm("vm1", namespace, phase="Stopped", agent=False, disks=("d1",)),
    ]


def operation(name: str, namespace: str = "ns1", *, type_: str = "Restore", vm_name: str = "vm1",
              snapshot: str = "vms1", phase: str = "Pending", created: str | None = "2025-06-01T11:50:00Z",
              conditions: list[Obj] | None = None, resources: list[Obj] | None = None) -> Obj:
    """A VirtualMachineOperation (v1.10 shape) of type Restore, Clone or another type."""
    spec: Obj = {"type": type_, "virtualMachineName": vm_name}
    if type_ == "Restore":
        spec["restore"] = {"mode": "Strict", "virtualMachineSnapshotName": snapshot}
    elif type_ == "Clone":
        spec["clone"] = {"mode": "Strict", "customization": {"namePrefix": "copy-"}}
    return {"apiVersion": DVP, "kind": "VirtualMachineOperation",
            "metadata": _meta(name, namespace, created, uid=f"uid-{name}"), "spec": spec,
            "status": {"phase": phase, "conditions": conditions or [], "resources": resources or []}}


def snapshot_operation(name: str, namespace: str = "ns1", *, snapshot: str = "vms1", phase: str = "Pending",
                       created: str | None = "2025-06-01T11:50:00Z", conditions: list[Obj] | None = None,
                       resources: list[Obj] | None = None) -> Obj:
    """A VirtualMachineSnapshotOperation of type CreateVirtualMachine."""
    return {"apiVersion": DVP, "kind": "VirtualMachineSnapshotOperation",
            "metadata": _meta(name, namespace, created, uid=f"uid-{name}"),
            "spec": {"type": "CreateVirtualMachine", "virtualMachineSnapshotName": snapshot,
                     "createVirtualMachine": {"mode": "Strict", "customization": {"nameSuffix": "-copy"}}},
            "status": {"phase": phase, "conditions": conditions or [], "resources": resources or []}}


def resource_status(kind: str, name: str, status: str, message: str) -> Obj:
    """One item of an operation's status.resources."""
    return {"apiVersion": DVP, "kind": kind, "name": name, "status": status, "message": message}
