"""Lookups several rules share: a disk's storage class and provisioner, resizing and
readiness as the platform judges them. Each records the kinds it needed but lacked on
the rule's context, so the rule's outcome can be `unknown`."""

from __future__ import annotations

from .. import kinds
from ..catalogue import RuleContext
from ..models import PersistentVolumeClaim, StorageClass, VirtualDisk, VirtualMachine


def disk_resizing(disk: VirtualDisk) -> bool:
    """SPEC: phase Resizing, or a True and current Resizing condition. Platforms before
    v0.15 called the condition `Resized` and marked a resize with reason InProgress."""
    if disk.phase == "Resizing" or disk.condition_true("Resizing", current=True):
        return True
    old = disk.condition("Resized")
    return old is not None and old.reason == "InProgress" and disk.is_current(old)


def disk_storage_class(ctx: RuleContext, disk: VirtualDisk) -> str | None:
    """The class named by the disk's PVC, else status.storageClassName, else
    spec.persistentVolumeClaim.storageClassName (SPEC, "The disk's StorageClass")."""
    pvc_name = disk.status.target.persistent_volume_claim_name
    if pvc_name and ctx.needs(kinds.PERSISTENT_VOLUME_CLAIM):
        pvc = ctx.view.get(PersistentVolumeClaim, disk.namespace, pvc_name)
        if pvc is not None and pvc.spec.storage_class_name:
            return pvc.spec.storage_class_name
    return disk.status.storage_class_name or disk.spec.persistent_volume_claim.storage_class_name


def storage_class_provisioner(ctx: RuleContext, class_name: str | None) -> str | None:
    """The provisioner (CSI driver) of a StorageClass, or None when it is not known."""
    if not class_name or not ctx.needs(kinds.STORAGE_CLASS):
        return None
    storage_class = ctx.view.get(StorageClass, "", class_name)
    return storage_class.provisioner if storage_class is not None else None


def vm_can_be_frozen_or_stopped(vm: VirtualMachine) -> bool:
    """A consistent snapshot is possible when the VM is Stopped, its filesystem is
    already frozen, or its guest agent is ready (so the platform can freeze it)."""
    return (
        vm.phase == "Stopped"
        or vm.condition_true("FilesystemFrozen")
        or vm.condition_true("AgentReady")
    )


def consistency_required(value: bool | None) -> bool:
    """requiredConsistency defaults to true (SPEC, Defaults)."""
    return value is None or value is True


# A VirtualDisk of a VM as the snapshot rules judge it, once per decision:
# (name, disk or None when it does not exist, resizing, Ready condition True and current).
# A plain tuple: a NamedTuple's constructor is a measurable share of this hot path.
VmDisk = tuple[str, VirtualDisk | None, bool, bool]


def _judge_disk(name: str, disk: VirtualDisk | None) -> VmDisk:
    if disk is None:
        return (name, None, False, False)
    # One pass over the conditions (this runs for every disk of every snapshot request):
    # find Ready, and call disk_resizing only for a disk that can be resizing at all.
    ready = None
    maybe_resizing = disk.status.phase == "Resizing"
    for condition in disk.status.conditions:
        if condition.type == "Ready":
            if ready is None:  # the first one counts, as in KubeObject.condition
                ready = condition
        elif condition.type in ("Resizing", "Resized"):
            maybe_resizing = True
    return (
        name,
        disk,
        maybe_resizing and disk_resizing(disk),
        ready is not None and ready.status == "True" and disk.is_current(ready),
    )


def vm_disks(ctx: RuleContext, namespace: str, vm: VirtualMachine) -> list[VmDisk]:
    """Every VirtualDisk of the VM, looked up and judged once per decision (several
    rules walk them); empty when the view holds no VirtualDisks (the kind is then
    recorded as needed)."""

    def lookup(inner: RuleContext) -> list[VmDisk]:
        names = vm.disk_names()
        if not names or not inner.needs(kinds.VIRTUAL_DISK):
            return []
        get = inner.view.get
        return [_judge_disk(name, get(VirtualDisk, namespace, name)) for name in names]

    disks: list[VmDisk] = ctx.shared(f"vm-disks/{namespace}/{vm.name}", lookup)
    return disks


CONSISTENCY_FIX = (
    "install and start qemu-guest-agent in the virtual machine, stop the virtual machine, "
    "or set spec.requiredConsistency: false to accept a possibly inconsistent snapshot"
)
