"""Rules for VirtualDiskSnapshot CREATE (SPEC 2, "VirtualDiskSnapshot — CREATE"), and
`snapshot-class-default`, which also covers VirtualMachineSnapshot.

The platform checks the same preconditions minutes later in its controller and fails
the snapshot (before v1.3.0: leaves it Pending forever); these rules say so at once.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import kinds
from ..catalogue import Action, Finding, RuleContext, RuleRequest, rule
from ..models import (
    PersistentVolumeClaim,
    VirtualDisk,
    VirtualDiskSnapshot,
    VirtualMachine,
    VirtualMachineSnapshot,
    VolumeSnapshotClass,
)
from ..platform import V0_24_CLASS_FIELDS_REMOVED, VersionRange
from .common import (
    CONSISTENCY_FIX,
    consistency_required,
    disk_resizing,
    disk_storage_class,
    storage_class_provisioner,
    vm_can_be_frozen_or_stopped,
    vm_disks,
)

VDS = kinds.VIRTUAL_DISK_SNAPSHOT
DISK_FIELD = "spec.virtualDiskName"


def _disk(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> VirtualDisk | None:
    """The snapshotted disk, or None when it is unnamed, missing or not in the view
    (vds-disk-exists reports those)."""
    name = req.obj.spec.virtual_disk_name
    if not name or not ctx.needs(kinds.VIRTUAL_DISK):
        return None
    return ctx.view.get(VirtualDisk, req.namespace, name)


@rule(
    "vds-disk-exists",
    kinds=(VDS,),
    outcome_of="snapshot",
    summary="the VirtualDisk named by spec.virtualDiskName exists in the namespace",
)
def vds_disk_exists(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    name = req.obj.spec.virtual_disk_name
    if not name:
        yield Finding(
            f'VirtualDiskSnapshot "{req.name}" names no virtual disk: '
            "set spec.virtualDiskName to the disk to snapshot",
            DISK_FIELD,
        )
        return
    if ctx.needs(kinds.VIRTUAL_DISK) and ctx.view.get(VirtualDisk, req.namespace, name) is None:
        yield Finding(
            f'Cannot take a snapshot: the virtual disk "{name}" does not exist in namespace '
            f'"{req.namespace}"; create the disk first or correct spec.virtualDiskName',
            DISK_FIELD,
        )


@rule(
    "vds-disk-ready",
    kinds=(VDS,),
    outcome_of="snapshot",
    summary="the disk is not being deleted, is Ready, and its Snapshotting condition allows a snapshot",
)
def vds_disk_ready(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    disk = _disk(req, ctx)
    if disk is None:
        return
    if disk.deleting:
        yield Finding(
            f'Cannot take a snapshot: the virtual disk "{disk.name}" is in the process of deletion; '
            "snapshot another disk or restore the disk first",
            DISK_FIELD,
        )
        return
    if disk_resizing(disk):
        return  # vds-disk-resizing reports it
    if disk.phase != "Ready":
        yield Finding(
            f'Cannot take a snapshot: the virtual disk "{disk.name}" is in the '
            f'"{disk.phase or "unknown"}" phase; wait until it is Ready, then create the snapshot',
            DISK_FIELD,
        )
        return
    snapshotting = disk.condition("Snapshotting")
    if snapshotting is not None and not (
        snapshotting.status == "True" and disk.is_current(snapshotting)
    ):
        detail = snapshotting.message or "its Snapshotting condition is not True"
        yield Finding(
            f'Cannot take a snapshot: the virtual disk "{disk.name}" cannot be selected for '
            f"snapshotting ({detail.rstrip('.')}); wait until the operation on the disk ends",
            DISK_FIELD,
        )


@rule(
    "vds-disk-resizing",
    kinds=(VDS,),
    outcome_of="snapshot",
    summary="the disk is not being resized",
)
def vds_disk_resizing(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    disk = _disk(req, ctx)
    if disk is not None and not disk.deleting and disk_resizing(disk):
        yield Finding(
            f'Cannot take a snapshot: the virtual disk "{disk.name}" is in the process of resizing; '
            "wait until the resize finishes (phase Ready), then create the snapshot",
            DISK_FIELD,
        )


@rule(
    "vds-disk-pvc-bound",
    kinds=(VDS,),
    outcome_of="snapshot",
    summary="the disk has a PersistentVolumeClaim and it is Bound",
)
def vds_disk_pvc_bound(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    disk = _disk(req, ctx)
    if disk is None:
        return
    pvc_name = disk.status.target.persistent_volume_claim_name
    if not pvc_name:
        yield Finding(
            f'Cannot take a snapshot: the persistent volume claim for virtual disk "{disk.name}" '
            "does not exist yet (status.target.persistentVolumeClaimName is empty); wait until "
            "the disk is provisioned",
            DISK_FIELD,
        )
        return
    if not ctx.needs(kinds.PERSISTENT_VOLUME_CLAIM):
        return
    pvc = ctx.view.get(PersistentVolumeClaim, req.namespace, pvc_name)
    if pvc is None:
        yield Finding(
            f'Cannot take a snapshot: the persistent volume claim "{pvc_name}" for virtual disk '
            f'"{disk.name}" does not exist; the disk has lost its volume (phase PVCLost)',
            DISK_FIELD,
        )
    elif pvc.phase != "Bound":
        yield Finding(
            f'Cannot take a snapshot: the persistent volume claim "{pvc_name}" for virtual disk '
            f'"{disk.name}" is not in phase Bound (it is "{pvc.phase or "unknown"}"); wait until '
            "it is bound (a WaitForFirstConsumer disk binds when a VM first uses it)",
            DISK_FIELD,
        )


@rule(
    "vds-single-attachment",
    kinds=(VDS,),
    outcome_of="snapshot",
    summary="the disk is attached to at most one virtual machine",
)
def vds_single_attachment(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    disk = _disk(req, ctx)
    if disk is None:
        return
    vms = [entry.name for entry in disk.status.attached_to_virtual_machines]
    if len(vms) > 1:
        yield Finding(
            f'Cannot take a snapshot: the virtual disk "{disk.name}" is attached to multiple '
            f"virtual machines ({', '.join(vms)}); detach it from all but one first",
            DISK_FIELD,
        )


@rule(
    "vds-consistency",
    kinds=(VDS,),
    outcome_of="snapshot",
    summary="with requiredConsistency, the attached VM is Stopped or its guest agent can freeze it",
)
def vds_consistency(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    if not consistency_required(req.obj.spec.required_consistency):
        return
    disk = _disk(req, ctx)
    if disk is None or not disk.status.attached_to_virtual_machines:
        return
    if not ctx.needs(kinds.VIRTUAL_MACHINE):
        return
    for entry in disk.status.attached_to_virtual_machines:
        vm = ctx.view.get(VirtualMachine, req.namespace, entry.name)
        if vm is None or vm_can_be_frozen_or_stopped(vm):
            continue
        yield Finding(
            f'Cannot take a consistent snapshot of virtual disk "{disk.name}" attached to virtual '
            f'machine "{vm.name}": virtual machine agent is not ready and the virtual machine '
            f"cannot be frozen; {CONSISTENCY_FIX}",
            "spec.requiredConsistency",
        )


@rule(
    "vds-snapshot-class",
    kinds=(VDS,),
    outcome_of="snapshot",
    # v0.24 removed spec.volumeSnapshotClassName (snapshot-class-field-ignored then).
    versions=VersionRange(until=V0_24_CLASS_FIELDS_REMOVED),
    summary="spec.volumeSnapshotClassName names an existing class of the disk's CSI driver",
)
def vds_snapshot_class(req: RuleRequest[VirtualDiskSnapshot], ctx: RuleContext) -> Iterator[Finding]:
    class_name = req.obj.spec.volume_snapshot_class_name
    if not class_name or not ctx.needs(kinds.VOLUME_SNAPSHOT_CLASS):
        return
    field = "spec.volumeSnapshotClassName"
    snapshot_class = ctx.view.get(VolumeSnapshotClass, "", class_name)
    if snapshot_class is None:
        yield Finding(
            f'VolumeSnapshotClass "{class_name}" named by VirtualDiskSnapshot "{req.name}" does not '
            "exist; name an existing class (kubectl get volumesnapshotclass) or omit the field to "
            "use the driver's default",
            field,
        )
        return
    disk = _disk(req, ctx)
    if disk is None:
        return
    storage_class = disk_storage_class(ctx, disk)
    provisioner = storage_class_provisioner(ctx, storage_class)
    if provisioner and snapshot_class.driver != provisioner:
        yield Finding(
            f'VolumeSnapshotClass "{class_name}" uses driver "{snapshot_class.driver}", but virtual '
            f'disk "{disk.name}" is stored by "{provisioner}" (storage class "{storage_class}"); '
            f'name a VolumeSnapshotClass of driver "{provisioner}"',
            field,
        )


def _default_classes(ctx: RuleContext, storage_class: str) -> tuple[str, list[str]] | None:
    """The driver of a storage class and the names of its default VolumeSnapshotClasses,
    or None when the driver or the classes are not known."""
    provisioner = storage_class_provisioner(ctx, storage_class)
    if not provisioner or not ctx.needs(kinds.VOLUME_SNAPSHOT_CLASS):
        return None
    defaults = sorted(c.name for c in ctx.view.snapshot_classes_for_driver(provisioner) if c.is_default)
    return provisioner, defaults


def _default_class_problem(
    disk_name: str, storage_class: str, classes: tuple[str, list[str]] | None
) -> str | None:
    """Why a disk's snapshot would get no VolumeSnapshotClass by default, or None."""
    if classes is None or len(classes[1]) == 1:
        return None
    provisioner, defaults = classes
    fix = (
        f'annotate exactly one VolumeSnapshotClass of driver "{provisioner}" with '
        f'{kinds.DEFAULT_CLASS_ANNOTATION}: "true"'
    )
    if not defaults:
        return (
            f'no default VolumeSnapshotClass exists for driver "{provisioner}" (storage class '
            f'"{storage_class}" of virtual disk "{disk_name}"), so the snapshot would get none; {fix}'
        )
    return (
        f'driver "{provisioner}" (storage class "{storage_class}" of virtual disk "{disk_name}") '
        f"has several default VolumeSnapshotClasses ({', '.join(defaults)}) and the "
        f"snapshot controller refuses to choose; {fix}"
    )


@rule(
    "snapshot-class-default",
    kinds=(VDS, kinds.VIRTUAL_MACHINE_SNAPSHOT),
    default=Action.WARN,
    # From v0.24 the spec can no longer name a class: without a default class of its
    # driver the VolumeSnapshot cannot be taken at all.
    default_changes=((V0_24_CLASS_FIELDS_REMOVED, Action.DENY),),
    summary="a disk whose storage class gets no VolumeSnapshotClass from the spec has a default one for its driver",
)
def snapshot_class_default(
    req: RuleRequest[VirtualDiskSnapshot | VirtualMachineSnapshot], ctx: RuleContext
) -> Iterator[Finding]:
    obj = req.obj
    # Up to v0.23 the spec's class fields choose a class; from v0.24 they are ignored.
    spec_classes = req.platform < V0_24_CLASS_FIELDS_REMOVED
    if isinstance(obj, VirtualDiskSnapshot):
        if obj.spec.volume_snapshot_class_name and spec_classes:
            return
        disk = _disk(req, ctx)  # type: ignore[arg-type]
        storage_class = disk_storage_class(ctx, disk) if disk is not None else None
        if disk is None or not storage_class:
            return
        problem = _default_class_problem(disk.name, storage_class, _default_classes(ctx, storage_class))
        if problem:
            yield Finding(problem + (" or set spec.volumeSnapshotClassName" if spec_classes else ""), DISK_FIELD)
        return
    vm_name = obj.spec.virtual_machine_name
    if not vm_name or not ctx.needs(kinds.VIRTUAL_MACHINE):
        return
    vm = ctx.view.get(VirtualMachine, req.namespace, vm_name)
    if vm is None:
        return
    mapped = (
        {e.storage_class_name for e in obj.spec.volume_snapshot_classes if e.storage_class_name}
        if spec_classes
        else set()
    )
    # The answer depends on the storage class only, and a VM's disks usually share one.
    by_class: dict[str, tuple[str, list[str]] | None] = {}
    for disk_name, disk, _, _ in vm_disks(ctx, req.namespace, vm):
        storage_class = disk_storage_class(ctx, disk) if disk is not None else None
        if not storage_class or storage_class in mapped:
            continue
        if storage_class not in by_class:
            by_class[storage_class] = _default_classes(ctx, storage_class)
        problem = _default_class_problem(disk_name, storage_class, by_class[storage_class])
        if problem:
            yield Finding(problem, "spec.virtualMachineName")
