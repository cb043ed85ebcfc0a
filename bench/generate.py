"""Synthetic cluster states for benchmarks: namespaces of VMs with disks, PVCs, IP
addresses, snapshots and their Secrets, shaped as `kubectl get -o yaml` prints them.

`cluster_objects(vms=..., disks_per_vm=..., snapshots=...)` yields raw objects; every
name is deterministic so benchmark requests can target existing or missing objects.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

V = "virtualization.deckhouse.io/v1alpha2"
DRIVER = "replicated.csi.storage.deckhouse.io"
VMS_PER_NAMESPACE = 100


def namespace_of(vm_index: int) -> str:
    return f"team-{vm_index // VMS_PER_NAMESPACE:04d}"


def vm_name(vm_index: int) -> str:
    return f"vm-{vm_index:06d}"


def disk_name(vm_index: int, disk: int) -> str:
    return f"vm-{vm_index:06d}-disk-{disk}"


def _ready(type_: str = "Ready") -> dict[str, Any]:
    return {"type": type_, "status": "True", "reason": type_, "observedGeneration": 1}


def cluster_objects(
    vms: int, disks_per_vm: int = 3, snapshots: int = 0, agent_every: int = 2
) -> Iterator[dict[str, Any]]:
    """VMs (every `agent_every`-th without a guest agent), their disks and PVCs, a
    static IP per VM, and `snapshots` Ready VirtualMachineSnapshots with Secrets."""
    yield {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "replicated"}, "provisioner": DRIVER}
    yield {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": "replicated", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
        "driver": DRIVER,
    }
    for i in range(vms):
        namespace, name = namespace_of(i), vm_name(i)
        disks = [disk_name(i, d) for d in range(disks_per_vm)]
        agent = i % agent_every != 0
        address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        vm = {
            "apiVersion": V,
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": namespace, "generation": 1, "uid": f"uid-{name}"},
            "spec": {
                "virtualMachineIPAddressName": name,
                "blockDeviceRefs": [{"kind": "VirtualDisk", "name": d} for d in disks],
            },
            "status": {
                "phase": "Running",
                "virtualMachineIPAddressName": name,
                "conditions": [_ready("BlockDevicesReady"), {**_ready("AgentReady"), "status": "True" if agent else "False"}],
                "blockDeviceRefs": [{"kind": "VirtualDisk", "name": d, "attached": True} for d in disks],
            },
        }
        yield vm
        yield {
            "apiVersion": V,
            "kind": "VirtualMachineIPAddress",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "Static", "staticIP": address},
            "status": {"phase": "Attached", "address": address, "virtualMachineName": name},
        }
        for d in disks:
            yield {
                "apiVersion": V,
                "kind": "VirtualDisk",
                "metadata": {"name": d, "namespace": namespace, "generation": 1},
                "spec": {"persistentVolumeClaim": {"size": "10Gi", "storageClassName": "replicated"}},
                "status": {
                    "phase": "Ready",
                    "capacity": "10Gi",
                    "target": {"persistentVolumeClaimName": f"{d}-pvc"},
                    "attachedToVirtualMachines": [{"name": name, "mounted": True}],
                    "conditions": [_ready()],
                },
            }
            yield {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"{d}-pvc", "namespace": namespace},
                "spec": {"storageClassName": "replicated"},
                "status": {"phase": "Bound"},
            }
    for s in range(snapshots):
        i = s % max(vms, 1)
        yield from snapshot_objects(i, s, disks_per_vm)


def snapshot_objects(vm_index: int, serial: int, disks_per_vm: int) -> Iterator[dict[str, Any]]:
    namespace, name = namespace_of(vm_index), vm_name(vm_index)
    snapshot = f"{name}-snap-{serial}"
    uid = f"uid-{snapshot}"
    secret = f"d8v-vms-{snapshot}-{uid}"
    stored_vm = {"apiVersion": V, "kind": "VirtualMachine", "metadata": {"name": name, "namespace": namespace},
                 "spec": {"virtualMachineIPAddressName": name,
                          "blockDeviceRefs": [{"kind": "VirtualDisk", "name": disk_name(vm_index, d)} for d in range(disks_per_vm)]}}
    yield {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "virtualmachine.virtualization.deckhouse.io/snapshot",
        "metadata": {"name": secret, "namespace": namespace},
        "data": {"vm": base64.b64encode(json.dumps(stored_vm).encode()).decode()},
    }
    children = [f"{disk_name(vm_index, d)}-{uid}" for d in range(disks_per_vm)]
    yield {
        "apiVersion": V,
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": snapshot, "namespace": namespace, "uid": uid, "generation": 1},
        "spec": {"virtualMachineName": name, "requiredConsistency": True, "keepIPAddress": "Always"},
        "status": {
            "phase": "Ready",
            "virtualMachineSnapshotSecretName": secret,
            "virtualDiskSnapshotNames": children,
            "conditions": [_ready("VirtualMachineSnapshotReady")],
        },
    }
    for d, child in enumerate(children):
        yield {
            "apiVersion": V,
            "kind": "VirtualDiskSnapshot",
            "metadata": {"name": child, "namespace": namespace, "generation": 1},
            "spec": {"virtualDiskName": disk_name(vm_index, d)},
            "status": {"phase": "Ready", "volumeSnapshotName": f"d8v-vds-{child}", "conditions": [_ready("VirtualDiskSnapshotReady")]},
        }
