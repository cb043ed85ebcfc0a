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


CONSISTENCY_FIX = (
    "install and start qemu-guest-agent in the virtual machine, stop the virtual machine, "
    "or set spec.requiredConsistency: false to accept a possibly inconsistent snapshot"
)
