"""Filesystem freeze and thaw of a virtual machine around a snapshot.

The platform asks KubeVirt to freeze the guest through the VMI and trusts
`fsFreezeStatus`; it records the request in the annotation
`virtualization.deckhouse.io/virtual-machine-filesystem-request` on the VMI. There is no
KubeVirt here, so this reconciler records the same request on the VirtualMachine and
treats `freeze` there as frozen at once (docs/reconciler.md, "Simplifications").

"Can be frozen" follows the platform minus the VMI: the VM is Running, its AgentReady
condition is True, and it is not frozen already. Unfreezing is allowed only when no
other InProgress VirtualDiskSnapshot targets a disk of the VM and no other InProgress
VirtualMachineSnapshot targets the VM (`CanUnfreezeWithVirtualDiskSnapshot`).
"""

from __future__ import annotations

import logging

from policies import kinds

from .client import ClusterClient
from .objects import (
    FILESYSTEM_REQUEST_ANNOTATION,
    FREEZE,
    IN_PROGRESS,
    UNFREEZE,
    JSONObject,
    annotations_of,
    condition_true,
    name_of,
    phase_of,
    spec_of,
    status_of,
)

log = logging.getLogger(__name__)


def frozen(vm: JSONObject | None) -> bool:
    return vm is not None and annotations_of(vm).get(FILESYSTEM_REQUEST_ANNOTATION) == FREEZE


def can_freeze(vm: JSONObject) -> bool:
    return phase_of(vm) == "Running" and condition_true(vm, "AgentReady") and not frozen(vm)


def agent_ready(vm: JSONObject) -> bool:
    return condition_true(vm, "AgentReady")


def attached_vm_name(disk: JSONObject | None) -> str | None:
    """The VM of a disk: the single entry of status.attachedToVirtualMachines (None for
    none; more than one is a failed precondition, decided by the engine)."""
    entries = [e for e in status_of(disk or {}).get("attachedToVirtualMachines") or [] if isinstance(e, dict)]
    if len(entries) != 1:
        return None
    return str(entries[0].get("name") or "") or None


def _request(client: ClusterClient, vm: JSONObject, value: str) -> JSONObject:
    return client.patch(
        kinds.VIRTUAL_MACHINE,
        vm["metadata"]["namespace"],
        name_of(vm),
        {"metadata": {"annotations": {FILESYSTEM_REQUEST_ANNOTATION: value}}},
    )


def freeze(client: ClusterClient, vm: JSONObject) -> JSONObject:
    log.info("freezing the filesystem of virtual machine %s/%s", vm["metadata"]["namespace"], name_of(vm))
    return _request(client, vm, FREEZE)


def unfreeze_allowed(
    client: ClusterClient,
    namespace: str,
    vm_name: str,
    *,
    except_disk_snapshot: str | None = None,
    except_machine_snapshot: str | None = None,
) -> bool:
    for vms in client.list(kinds.VIRTUAL_MACHINE_SNAPSHOT, namespace):
        if (
            name_of(vms) != except_machine_snapshot
            and phase_of(vms) == IN_PROGRESS
            and spec_of(vms).get("virtualMachineName") == vm_name
        ):
            return False
    disks: dict[str, JSONObject | None] = {}
    for vds in client.list(kinds.VIRTUAL_DISK_SNAPSHOT, namespace):
        if name_of(vds) == except_disk_snapshot or phase_of(vds) != IN_PROGRESS:
            continue
        disk_name = str(spec_of(vds).get("virtualDiskName") or "")
        if disk_name and disk_name not in disks:
            disks[disk_name] = client.get(kinds.VIRTUAL_DISK, namespace, disk_name)
        if attached_vm_name(disks.get(disk_name)) == vm_name:
            return False
    return True


def release(
    client: ClusterClient,
    namespace: str,
    vm_name: str | None,
    *,
    except_disk_snapshot: str | None = None,
    except_machine_snapshot: str | None = None,
) -> bool:
    """Unfreeze the VM if it is frozen and no other snapshot in progress needs it
    frozen. True when it is not frozen (any more)."""
    if not vm_name:
        return True
    vm = client.get(kinds.VIRTUAL_MACHINE, namespace, vm_name)
    if not frozen(vm):
        return True
    assert vm is not None
    if not unfreeze_allowed(
        client,
        namespace,
        vm_name,
        except_disk_snapshot=except_disk_snapshot,
        except_machine_snapshot=except_machine_snapshot,
    ):
        return False
    log.info("unfreezing the filesystem of virtual machine %s/%s", namespace, vm_name)
    _request(client, vm, UNFREEZE)
    return True


def release_orphans(client: ClusterClient, namespace: str) -> None:
    """Unfreeze every frozen VM of the namespace that no snapshot in progress needs:
    run when a snapshot vanished (deleted without a finalizer of ours) while it might
    have held a freeze."""
    for vm in client.list(kinds.VIRTUAL_MACHINE, namespace):
        if frozen(vm):
            release(client, namespace, name_of(vm))
