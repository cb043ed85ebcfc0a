"""Builders of the objects the reconciler tests seed (as the platform's controllers
would have left them: with status) and of the snapshot and restore objects a user
creates (without status), plus the CSI snapshotter's part: marking VolumeSnapshots
ready."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cluster.api import KubeApi
from tests.kubeapi.server import KubeAPIServer

DVP = "virtualization.deckhouse.io/v1alpha2"
NS = "ns1"

Obj = dict[str, Any]


def condition(type_: str, status: str = "True", reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason or type_, "message": message}


def storage_class(name: str = "fast", provisioner: str = "fast.csi") -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner}


def pvc(name: str, *, storage_class: str | None = "fast", phase: str = "Bound", size: str = "10Gi") -> Obj:
    spec: Obj = {"volumeMode": "Block", "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec, "status": {"phase": phase, "accessModes": ["ReadWriteMany"]}}


def disk(name: str, *, vm: str | None = None, phase: str = "Ready", labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None) -> Obj:
    status: Obj = {"phase": phase, "conditions": [condition("Ready")],
                   "target": {"persistentVolumeClaimName": f"pvc-{name}"}}
    if vm:
        status["attachedToVirtualMachines"] = [{"name": vm, "mounted": True}]
    metadata: Obj = {"name": name, "namespace": NS, "generation": 1}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": DVP, "kind": "VirtualDisk", "metadata": metadata,
            "spec": {"persistentVolumeClaim": {"size": "10Gi", "storageClassName": "fast"}}, "status": status}


def vm(name: str = "vm1", *, phase: str = "Stopped", agent: bool = False, disks: tuple[str, ...] = (),
       hotplugged: tuple[tuple[str, str], ...] = (), vmip: str | None = None,
       provisioning_secret: str | None = None, mac: tuple[str, str] | None = None) -> Obj:
    """`hotplugged`: (attachment, disk) pairs; `mac`: (VMMAC name, address) of a second network."""
    spec: Obj = {"runPolicy": "Manual",
                 "blockDeviceRefs": [{"kind": "VirtualDisk", "name": d} for d in disks]}
    refs = [{"kind": "VirtualDisk", "name": d, "attached": True} for d in disks]
    refs += [{"kind": "VirtualDisk", "name": d, "attached": True, "hotplugged": True,
              "virtualMachineBlockDeviceAttachmentName": a} for a, d in hotplugged]
    status: Obj = {"phase": phase, "blockDeviceRefs": refs,
                   "conditions": [condition("BlockDevicesReady"),
                                  condition("AgentReady", "True" if agent else "False")]}
    if vmip:
        spec["virtualMachineIPAddressName"] = vmip
        status["virtualMachineIPAddressName"] = vmip
        status["ipAddress"] = "10.66.0.5"
    if provisioning_secret:
        spec["provisioning"] = {"type": "UserDataRef", "userDataRef": {"kind": "Secret", "name": provisioning_secret}}
    if mac:
        spec["networks"] = [{"type": "Main"}, {"type": "Network", "name": "net1", "virtualMachineMACAddressName": mac[0]}]
        status["networks"] = [{"type": "Main", "macAddress": "02:00:00:00:00:01"},
                              {"type": "Network", "name": "net1", "macAddress": mac[1],
                               "virtualMachineMACAddressName": mac[0]}]
    return {"apiVersion": DVP, "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS, "generation": 1, "labels": {"app": name}},
            "spec": spec, "status": status}


def vmip(name: str, *, address: str = "10.66.0.5", vm: str | None = "vm1", type_: str = "Auto") -> Obj:
    status: Obj = {"address": address, "phase": "Attached" if vm else "Bound"}
    if vm:
        status["virtualMachineName"] = vm
    return {"apiVersion": DVP, "kind": "VirtualMachineIPAddress", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": type_}, "status": status}


def vmmac(name: str, address: str, *, vm: str | None = "vm1") -> Obj:
    status: Obj = {"address": address, "phase": "Attached" if vm else "Bound"}
    if vm:
        status["virtualMachineName"] = vm
    return {"apiVersion": DVP, "kind": "VirtualMachineMACAddress", "metadata": {"name": name, "namespace": NS},
            "spec": {}, "status": status}


def vmbda(name: str, disk_name: str, vm_name: str = "vm1") -> Obj:
    return {"apiVersion": DVP, "kind": "VirtualMachineBlockDeviceAttachment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"virtualMachineName": vm_name, "blockDeviceRef": {"kind": "VirtualDisk", "name": disk_name}},
            "status": {"phase": "Attached", "virtualMachineName": vm_name}}


def secret(name: str, data: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "type": "Opaque", "data": data or {"userData": "I2Nsb3VkLWNvbmZpZwo="}}


def disk_snapshot(name: str, disk_name: str, *, required: bool | None = None) -> Obj:
    spec: Obj = {"virtualDiskName": disk_name}
    if required is not None:
        spec["requiredConsistency"] = required
    return {"apiVersion": DVP, "kind": "VirtualDiskSnapshot", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def machine_snapshot(name: str, vm_name: str = "vm1", *, keep: str = "Always", required: bool = True) -> Obj:
    return {"apiVersion": DVP, "kind": "VirtualMachineSnapshot", "metadata": {"name": name, "namespace": NS},
            "spec": {"virtualMachineName": vm_name, "keepIPAddress": keep, "requiredConsistency": required}}


def restore(name: str, snapshot: str, *, replacements: list[Obj] | None = None, mode: str | None = None) -> Obj:
    spec: Obj = {"virtualMachineSnapshotName": snapshot}
    if replacements:
        spec["nameReplacements"] = replacements
    if mode:
        spec["restoreMode"] = mode
    return {"apiVersion": DVP, "kind": "VirtualMachineRestore", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def rename(kind: str, name: str, to: str) -> Obj:
    return {"from": {"kind": kind, "name": name}, "to": to}


# --- seeding and the CSI snapshotter --------------------------------------------------


def seed(server: KubeAPIServer, *items: Obj) -> None:
    for item in items:
        server.put_object(item)


def stopped_vm_with_disks(server: KubeAPIServer, *disks: str, vm_name: str = "vm1", **vm_options: Any) -> None:
    """A storage class, each disk on a Bound PVC and attached to the VM, and the VM."""
    seed(server, storage_class())
    for name in disks:
        seed(server, pvc(f"pvc-{name}"), disk(name, vm=vm_name))
    seed(server, vm(vm_name, disks=disks, **vm_options))


def mark_volume_snapshots_ready(api: KubeApi, namespace: str = NS) -> list[str]:
    """Play the CSI snapshotter: every VolumeSnapshot not ready yet becomes readyToUse."""
    items, _ = api.list_all("VolumeSnapshot", namespace)
    marked = []
    for item in items:
        if (item.get("status") or {}).get("readyToUse") is not True:
            api.patch("VolumeSnapshot", namespace, item["metadata"]["name"],
                      {"status": {"readyToUse": True, "restoreSize": "10Gi"}}, subresource="status")
            marked.append(item["metadata"]["name"])
    return marked


def fail_volume_snapshot(api: KubeApi, name: str, message: str, namespace: str = NS) -> None:
    api.patch("VolumeSnapshot", namespace, name,
              {"status": {"readyToUse": False, "error": {"message": message}}}, subresource="status")


def phase(server: KubeAPIServer, resource: str, name: str, namespace: str = NS) -> str:
    obj = server.get_object(resource, name, namespace)
    return ((obj or {}).get("status") or {}).get("phase") or ""


def status(server: KubeAPIServer, resource: str, name: str, namespace: str = NS) -> Obj:
    obj = server.get_object(resource, name, namespace)
    assert obj is not None, f"{resource} {name} does not exist"
    return obj.get("status") or {}


def condition_of(server: KubeAPIServer, resource: str, name: str, type_: str, namespace: str = NS) -> Obj:
    for entry in status(server, resource, name, namespace).get("conditions") or []:
        if entry["type"] == type_:
            return entry
    raise AssertionError(f"{resource} {name} has no {type_} condition")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll (every 20 ms) until `predicate()` is truthy; its value. Bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def names(server: KubeAPIServer, resource: str, namespace: str = NS) -> list[str]:
    return sorted(o["metadata"]["name"] for o in server.objects(resource, namespace))
