"""Rules for VirtualMachineSnapshot CREATE (SPEC 2, "VirtualMachineSnapshot — CREATE").

The platform checks the same preconditions in its controller after the object exists and
fails the snapshot (before v1.3.0: leaves it Pending forever); these rules say so at
`kubectl apply`. The VM is read once per rule (an O(1) lookup); its disks, which three
rules of one decision walk, are looked up once per decision through `ctx.shared`.
`snapshot-class-default`, which also covers VirtualMachineSnapshot, lives in `vds.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import kinds
from ..catalogue import Finding, RuleContext, RuleRequest, rule
from ..models import (
    Secret,
    VirtualMachine,
    VirtualMachineBlockDeviceAttachment,
    VirtualMachineIPAddress,
    VirtualMachineMACAddress,
    VirtualMachineSnapshot,
    VolumeSnapshotClass,
)
from ..platform import V0_24_CLASS_FIELDS_REMOVED, V1_1_OPERATIONS, VersionRange
from .common import (
    CONSISTENCY_FIX,
    consistency_required,
    storage_class_provisioner,
    vm_can_be_frozen_or_stopped,
    vm_disks,
)

VMS = kinds.VIRTUAL_MACHINE_SNAPSHOT
VM_FIELD = "spec.virtualMachineName"
CLASSES_FIELD = "spec.volumeSnapshotClasses"
KEEP_IP_VALUES = ("Always", "Never")
# How many pending-change paths a message lists before it says "and N more".
PENDING_PATHS_SHOWN = 3


def _vm(req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext) -> VirtualMachine | None:
    """The VM to snapshot, or None when it is unnamed, missing or not in the view
    (vms-vm-exists reports those)."""
    name = req.obj.spec.virtual_machine_name
    if not name or not ctx.needs(kinds.VIRTUAL_MACHINE):
        return None
    return ctx.view.get(VirtualMachine, req.namespace, name)


def _cannot_snapshot(vm: VirtualMachine) -> str:
    return f'Cannot take a snapshot of virtual machine "{vm.name}"'


@rule(
    "vms-vm-exists",
    kinds=(VMS,),
    outcome_of="snapshot",
    summary="the VirtualMachine named by spec.virtualMachineName exists in the namespace",
)
def vms_vm_exists(req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    name = req.obj.spec.virtual_machine_name
    if not name:
        yield Finding(
            f'VirtualMachineSnapshot "{req.name}" names no virtual machine: '
            "set spec.virtualMachineName to the machine to snapshot",
            VM_FIELD,
        )
        return
    if (
        ctx.needs(kinds.VIRTUAL_MACHINE)
        and ctx.view.get(VirtualMachine, req.namespace, name) is None
    ):
        yield Finding(
            f'Cannot take a snapshot: the virtual machine "{name}" does not exist in namespace '
            f'"{req.namespace}"; create the virtual machine first or correct '
            "spec.virtualMachineName",
            VM_FIELD,
        )


@rule(
    "vms-vm-ready",
    kinds=(VMS,),
    outcome_of="snapshot",
    summary="the VM is not being deleted and is Running or Stopped",
)
def vms_vm_ready(req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    vm = _vm(req, ctx)
    if vm is None:
        return
    if vm.deleting:
        yield Finding(
            f'Cannot take a snapshot: the virtual machine "{vm.name}" is in the process of '
            "deletion; snapshot another virtual machine or restore this one first",
            VM_FIELD,
        )
    elif vm.phase not in ("Running", "Stopped"):
        yield Finding(
            f'Cannot take a snapshot: the virtual machine "{vm.name}" is in the '
            f'"{vm.phase or "unknown"}" phase; wait until it reaches the Running or Stopped '
            "phase, then create the snapshot",
            VM_FIELD,
        )


@rule(
    "vms-block-devices-ready",
    kinds=(VMS,),
    outcome_of="snapshot",
    summary=(
        "the VM's block devices are ready: BlockDevicesReady is True and every VirtualDisk is Ready"
    ),
)
def vms_block_devices_ready(
    req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext
) -> Iterator[Finding]:
    vm = _vm(req, ctx)
    if vm is None:
        return
    condition = vm.condition("BlockDevicesReady")
    if condition is None or condition.status != "True":
        if condition is None:
            state = "it has no BlockDevicesReady condition"
        else:
            detail = f": {condition.message.rstrip('.')}" if condition.message else ""
            state = f"BlockDevicesReady is {condition.status}{detail}"
        yield Finding(
            f"{_cannot_snapshot(vm)}: its block devices are not ready ({state}); wait until the "
            "block devices of the virtual machine are ready, then create the snapshot",
            VM_FIELD,
        )
    for name, disk, resizing, ready_current in vm_disks(ctx, req.namespace, vm):
        if disk is None:
            yield Finding(
                f'{_cannot_snapshot(vm)}: its virtual disk "{name}" does not exist; create the '
                "disk or remove it from the virtual machine's block devices",
                VM_FIELD,
            )
        elif resizing:
            continue  # vms-disk-resizing reports it
        elif disk.status.phase != "Ready":
            yield Finding(
                f'{_cannot_snapshot(vm)}: its virtual disk "{name}" is in the '
                f'"{disk.status.phase or "unknown"}" phase; wait until the disk is Ready, '
                "then create the snapshot",
                VM_FIELD,
            )
        elif not ready_current:
            yield Finding(
                f'{_cannot_snapshot(vm)}: the Ready condition of its virtual disk "{name}" is not '
                "True for the disk's current generation; wait until the disk reports Ready, then "
                "create the snapshot",
                VM_FIELD,
            )


@rule(
    "vms-disk-resizing",
    kinds=(VMS,),
    outcome_of="snapshot",
    summary="no disk of the VM is being resized",
)
def vms_disk_resizing(
    req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext
) -> Iterator[Finding]:
    vm = _vm(req, ctx)
    if vm is None:
        return
    for name, _, resizing, _ in vm_disks(ctx, req.namespace, vm):
        if resizing:
            yield Finding(
                f'{_cannot_snapshot(vm)}: its virtual disk "{name}" is in the process of resizing; '
                "wait until the resize finishes (phase Ready), then create the snapshot",
                VM_FIELD,
            )


def _pending_paths(changes: list[Any]) -> str:
    paths = [str(c["path"]) for c in changes if isinstance(c, dict) and c.get("path")]
    if not paths:
        return ""
    shown = ", ".join(paths[:PENDING_PATHS_SHOWN])
    more = len(paths) - PENDING_PATHS_SHOWN
    return f" ({shown}{f' and {more} more' if more > 0 else ''})"


@rule(
    "vms-pending-changes",
    kinds=(VMS,),
    # v1.1.0 (#1477): the platform no longer waits for a restart.
    versions=VersionRange(until=V1_1_OPERATIONS),
    summary="the VM has no configuration changes waiting for a restart",
)
def vms_pending_changes(
    req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext
) -> Iterator[Finding]:
    vm = _vm(req, ctx)
    if vm is None:
        return
    changes = vm.status.restart_awaiting_changes
    if not changes and not vm.condition_true("AwaitingRestartToApplyConfiguration"):
        return
    # v0.14 - v1.0.x kept such a snapshot Pending (reason RestartAwaitingChanges); v1.1.0
    # (#1477) dropped the check and stores the VM's desired spec, which the running
    # machine does not have yet.
    yield Finding(
        f'Virtual machine "{vm.name}" has configuration changes waiting for a restart'
        f"{_pending_paths(changes)}: platforms v0.14-v1.0 keep such a snapshot Pending until "
        "the machine is restarted, and since v1.1 the snapshot would capture the unapplied "
        "configuration rather than the one the machine runs; apply the changes by restarting "
        "the virtual machine, then create the snapshot",
        VM_FIELD,
    )


@rule(
    "vms-consistency",
    kinds=(VMS,),
    outcome_of="snapshot",
    summary="with requiredConsistency, the VM is Stopped or its guest agent can freeze it",
)
def vms_consistency(
    req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext
) -> Iterator[Finding]:
    if not consistency_required(req.obj.spec.required_consistency):
        return
    vm = _vm(req, ctx)
    if vm is None or vm_can_be_frozen_or_stopped(vm):
        return
    yield Finding(
        f'Cannot take a consistent snapshot of virtual machine "{vm.name}": virtual machine '
        f"agent is not ready and the virtual machine cannot be frozen; {CONSISTENCY_FIX}",
        "spec.requiredConsistency",
    )


@rule(
    "vms-snapshot-classes",
    kinds=(VMS,),
    outcome_of="snapshot",
    # v0.24 removed spec.volumeSnapshotClasses (snapshot-class-field-ignored then).
    versions=VersionRange(until=V0_24_CLASS_FIELDS_REMOVED),
    summary=(
        "spec.volumeSnapshotClasses (v0.14-v0.23) maps each storage class once, "
        "to an existing class of its driver"
    ),
)
def vms_snapshot_classes(
    req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext
) -> Iterator[Finding]:
    first_entry: dict[str, int] = {}
    for index, entry in enumerate(req.obj.spec.volume_snapshot_classes):
        storage_class = entry.storage_class_name
        class_name = entry.volume_snapshot_class_name
        path = f"{CLASSES_FIELD}[{index}]"
        if storage_class:
            if storage_class in first_entry:
                yield Finding(
                    f'VirtualMachineSnapshot "{req.name}" maps storage class "{storage_class}" '
                    f"twice (entries {first_entry[storage_class]} and {index} of "
                    f"{CLASSES_FIELD}); keep one entry per storage class",
                    f"{path}.storageClassName",
                )
            else:
                first_entry[storage_class] = index
        if not class_name or not ctx.needs(kinds.VOLUME_SNAPSHOT_CLASS):
            continue
        snapshot_class = ctx.view.get(VolumeSnapshotClass, "", class_name)
        if snapshot_class is None:
            yield Finding(
                f'VolumeSnapshotClass "{class_name}" named for storage class "{storage_class}" by '
                f'VirtualMachineSnapshot "{req.name}" does not exist; name an existing class '
                "(kubectl get volumesnapshotclass) or remove the entry to use the driver's default",
                f"{path}.volumeSnapshotClassName",
            )
            continue
        provisioner = storage_class_provisioner(ctx, storage_class)
        if provisioner and snapshot_class.driver != provisioner:
            yield Finding(
                f'VolumeSnapshotClass "{class_name}" uses driver "{snapshot_class.driver}", but '
                f'storage class "{storage_class}" is provisioned by "{provisioner}"; map storage '
                f'class "{storage_class}" to a VolumeSnapshotClass of driver "{provisioner}"',
                f"{path}.volumeSnapshotClassName",
            )


@rule(
    "vms-ip-address",
    kinds=(VMS,),
    outcome_of="snapshot",
    summary=(
        "keepIPAddress is Always or Never, and the VM's VirtualMachineIPAddress exists "
        "and can be stored"
    ),
)
def vms_ip_address(req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    keep = req.obj.spec.keep_ip_address
    if keep is not None and keep not in KEEP_IP_VALUES:
        yield Finding(
            f'VirtualMachineSnapshot "{req.name}" has spec.keepIPAddress "{keep}", which is '
            "neither Always nor Never; set Always (the default, when omitted) to keep the "
            "machine's IP address on restore, or Never",
            "spec.keepIPAddress",
        )
    vm = _vm(req, ctx)
    if vm is None:
        return
    address_name = vm.status.virtual_machine_ip_address_name
    if not address_name or not ctx.needs(kinds.VIRTUAL_MACHINE_IP_ADDRESS):
        return
    address = ctx.view.get(VirtualMachineIPAddress, req.namespace, address_name)
    if address is None:
        yield Finding(
            f'{_cannot_snapshot(vm)}: the virtual machine ip address "{address_name}" named in its '
            "status.virtualMachineIPAddressName was not found; wait until the virtual machine has "
            "its address again (kubectl get vmip), then create the snapshot",
            VM_FIELD,
        )
    elif address.spec.type == "Static" and not vm.spec.virtual_machine_ip_address_name:
        yield Finding(
            f"{_cannot_snapshot(vm)}: Not possible to use static ip address with omitted "
            f'.spec.VirtualMachineIPAddress (the machine uses the Static address "{address_name}" '
            "but its spec.virtualMachineIPAddressName is empty); set the virtual machine's "
            f'spec.virtualMachineIPAddressName to "{address_name}", then create the snapshot',
            VM_FIELD,
        )


@rule(
    "vms-dependencies",
    kinds=(VMS,),
    outcome_of="snapshot",
    summary="the VM's provisioning Secret, hot-plug attachments and MAC address objects exist",
)
def vms_dependencies(
    req: RuleRequest[VirtualMachineSnapshot], ctx: RuleContext
) -> Iterator[Finding]:
    vm = _vm(req, ctx)
    if vm is None:
        return
    secrets = vm.provisioning_secret_names()
    if secrets and ctx.needs(kinds.SECRET):
        for field, name in secrets:
            if ctx.view.get(Secret, req.namespace, name) is None:
                yield Finding(
                    f'{_cannot_snapshot(vm)}: the virtual machine provisioning secret "{name}" '
                    f"({field}) was not found; recreate the Secret, then create the snapshot",
                    VM_FIELD,
                )
    # The platform stores (and so needs) the attachment of each entry with `hotplugged:
    # true` and an attachment name. SPEC keys on the name alone, which only hot-plugged
    # entries carry (a trimmed CI dump may lack `hotplugged`); an explicit false excludes.
    attachments = [
        attachment
        for ref in vm.status.block_device_refs
        if (attachment := ref.virtual_machine_block_device_attachment_name)
        and ref.hotplugged is not False
    ]
    if attachments and ctx.needs(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT):
        for attachment in attachments:
            if ctx.view.get(VirtualMachineBlockDeviceAttachment, req.namespace, attachment) is None:
                yield Finding(
                    f"{_cannot_snapshot(vm)}: the virtual machine block device attachment "
                    f'"{attachment}" of a hot-plugged device was not found; wait until the '
                    "device is unplugged from the virtual machine (or recreate the attachment), "
                    "then create the snapshot",
                    VM_FIELD,
                )
    macs = vm.mac_address_names()
    if macs and ctx.needs(kinds.VIRTUAL_MACHINE_MAC_ADDRESS):
        for mac in macs:
            if ctx.view.get(VirtualMachineMACAddress, req.namespace, mac) is None:
                yield Finding(
                    f'{_cannot_snapshot(vm)}: the virtual machine mac address "{mac}" was not '
                    "found; wait until the virtual machine has its MAC address object again "
                    "(kubectl get vmmac), then create the snapshot",
                    VM_FIELD,
                )
