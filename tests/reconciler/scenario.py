"""The scenario the VirtualMachineSnapshot, restore and crash tests share: a VM with
two disks (one hot-plugged through a VMBDA), an automatic IP address, a MAC address
on a second network and a cloud-init Secret; a snapshot of it; a restore of that
snapshot under new names."""

from __future__ import annotations

from typing import Any

from cluster.api import KubeApi
from reconciler.loop import Reconciler
from tests.kubeapi.server import KubeAPIServer

from . import objects as o

MAC = "02:00:00:00:00:02"
IP = "10.66.0.5"

# What a restore with RENAMES creates: (resource, name).
RENAMES = [
    o.rename("VirtualMachine", "vm1", "vm1-restored"),
    o.rename("VirtualDisk", "d1", "d1-restored"),
    o.rename("VirtualDisk", "d2", "d2-restored"),
    o.rename("VirtualMachineIPAddress", "vmip1", "vmip1-restored"),
    o.rename("VirtualMachineBlockDeviceAttachment", "vmbda-d2", "vmbda-d2-restored"),
    o.rename("Secret", "cloud-init", "cloud-init-restored"),
]
RESTORED = {
    "virtualmachineipaddresses": ["vmip1-restored"],
    "virtualmachinemacaddresses": ["mac1"],
    "virtualmachines": ["vm1-restored"],
    "virtualdisks": ["d1-restored", "d2-restored"],
    "virtualmachineblockdeviceattachments": ["vmbda-d2-restored"],
    "secrets": ["cloud-init-restored"],
}


def seed_vm(server: KubeAPIServer, *, phase: str = "Stopped", agent: bool = False) -> None:
    o.seed(server, o.storage_class())
    for name in ("d1", "d2"):
        o.seed(server, o.pvc(f"pvc-{name}"), o.disk(name, vm="vm1", labels={"disk": name}))
    o.seed(
        server,
        o.vmip("vmip1", address=IP),
        o.vmmac("mac1", MAC),
        o.secret("cloud-init"),
        o.vmbda("vmbda-d2", "d2"),
        o.vm("vm1", phase=phase, agent=agent, disks=("d1",), hotplugged=(("vmbda-d2", "d2"),), vmip="vmip1",
             provisioning_secret="cloud-init", mac=("mac1", MAC)),
    )


def take_snapshot(server: KubeAPIServer, api: KubeApi, reconciler: Reconciler, name: str = "vms1",
                  **options: Any) -> dict[str, Any]:
    """Create the VMS, run the reconciler, play the CSI driver, run again: Ready."""
    created = api.create(o.machine_snapshot(name, **options))
    reconciler.run_until_idle()
    o.mark_volume_snapshots_ready(api)
    reconciler.run_until_idle()
    assert o.phase(server, "virtualmachinesnapshots", name) == "Ready", o.status(server, "virtualmachinesnapshots", name)
    return created


def delete_original_vm(server: KubeAPIServer, api: KubeApi) -> None:
    """The user deletes the VM with its address objects (the disks stay)."""
    for kind, name in (("VirtualMachine", "vm1"), ("VirtualMachineIPAddress", "vmip1"),
                       ("VirtualMachineMACAddress", "mac1"), ("VirtualMachineBlockDeviceAttachment", "vmbda-d2")):
        api.delete(kind, o.NS, name)


def restored_state(server: KubeAPIServer) -> dict[str, list[str]]:
    """Every object of the restored kinds that carries a restore annotation."""
    state: dict[str, list[str]] = {}
    for resource in RESTORED:
        state[resource] = sorted(
            obj["metadata"]["name"]
            for obj in server.objects(resource, o.NS)
            if "virtualization.deckhouse.io/vmrestore" in (obj["metadata"].get("annotations") or {})
        )
    return state
