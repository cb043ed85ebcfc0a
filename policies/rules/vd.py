"""Rules for a VirtualDisk created from a VirtualDiskSnapshot (SPEC 2, "VirtualDisk
restored from a snapshot"). They apply only when spec.dataSource is an ObjectRef to a
VirtualDiskSnapshot; every other disk is not governed.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import kinds
from ..catalogue import Action, Finding, RuleContext, RuleRequest, rule
from ..models import KubeObject, VirtualDisk, VirtualDiskSnapshot, VolumeSnapshot
from ..quantity import parse_quantity
from .common import disk_storage_class, storage_class_provisioner

VD = kinds.VIRTUAL_DISK
SOURCE_FIELD = "spec.dataSource.objectRef.name"


def _from_snapshot(obj: KubeObject) -> bool:
    return isinstance(obj, VirtualDisk) and obj.snapshot_source is not None


def _snapshot(req: RuleRequest[VirtualDisk], ctx: RuleContext) -> VirtualDiskSnapshot | None:
    name = req.obj.snapshot_source
    if not name or not ctx.needs(kinds.VIRTUAL_DISK_SNAPSHOT):
        return None
    return ctx.view.get(VirtualDiskSnapshot, req.namespace, name)


def _volume_snapshot(
    ctx: RuleContext, snapshot: VirtualDiskSnapshot
) -> VolumeSnapshot | None:
    name = snapshot.status.volume_snapshot_name
    if not name or not ctx.needs(kinds.VOLUME_SNAPSHOT):
        return None
    return ctx.view.get(VolumeSnapshot, snapshot.namespace, name)


@rule(
    "vd-snapshot-exists",
    kinds=(VD,),
    summary="the VirtualDiskSnapshot a disk is created from exists",
    applies=_from_snapshot,
)
def vd_snapshot_exists(req: RuleRequest[VirtualDisk], ctx: RuleContext) -> Iterator[Finding]:
    name = req.obj.snapshot_source
    if not name:
        yield Finding(
            f'VirtualDisk "{req.name}" is created from a VirtualDiskSnapshot but names none: '
            "set spec.dataSource.objectRef.name",
            SOURCE_FIELD,
        )
        return
    if ctx.needs(kinds.VIRTUAL_DISK_SNAPSHOT) and ctx.view.get(
        VirtualDiskSnapshot, req.namespace, name
    ) is None:
        yield Finding(
            f'VirtualDisk "{req.name}" cannot be created: the virtual disk snapshot "{name}" does '
            f'not exist in namespace "{req.namespace}"; name an existing snapshot '
            "(kubectl get vdsnapshot)",
            SOURCE_FIELD,
        )


@rule(
    "vd-snapshot-ready",
    kinds=(VD,),
    default=Action.WARN,
    summary="the source VirtualDiskSnapshot is Ready (else the disk waits in Pending)",
    applies=_from_snapshot,
)
def vd_snapshot_ready(req: RuleRequest[VirtualDisk], ctx: RuleContext) -> Iterator[Finding]:
    snapshot = _snapshot(req, ctx)
    if snapshot is not None and snapshot.phase != "Ready":
        yield Finding(
            f'The virtual disk snapshot "{snapshot.name}" is not ready to use (phase '
            f'"{snapshot.phase or "unknown"}"): VirtualDisk "{req.name}" will wait in Pending until '
            "it is Ready; if the snapshot Failed, take a new one",
            SOURCE_FIELD,
        )


@rule(
    "vd-snapshot-size",
    kinds=(VD,),
    summary="spec.persistentVolumeClaim.size is not smaller than the snapshot",
    applies=_from_snapshot,
)
def vd_snapshot_size(req: RuleRequest[VirtualDisk], ctx: RuleContext) -> Iterator[Finding]:
    requested_raw = req.obj.spec.persistent_volume_claim.size
    requested = parse_quantity(requested_raw)
    if requested is None:
        return  # no size: the platform takes the snapshot's size
    snapshot = _snapshot(req, ctx)
    if snapshot is None:
        return
    source_raw: str | int | None = None
    volume_snapshot = _volume_snapshot(ctx, snapshot)
    if volume_snapshot is not None:
        source_raw = volume_snapshot.status.restore_size
    if parse_quantity(source_raw) is None and snapshot.spec.virtual_disk_name and ctx.needs(VD):
        source_disk = ctx.view.get(VirtualDisk, req.namespace, snapshot.spec.virtual_disk_name)
        if source_disk is not None:
            source_raw = source_disk.status.capacity
    source = parse_quantity(source_raw)
    if source is not None and requested < source:
        yield Finding(
            f'VirtualDisk "{req.name}" asks for {requested_raw}, less than the {source_raw} of '
            f'virtual disk snapshot "{snapshot.name}"; set spec.persistentVolumeClaim.size to at '
            f"least {source_raw} or omit it",
            "spec.persistentVolumeClaim.size",
        )


@rule(
    "vd-snapshot-storage-class",
    kinds=(VD,),
    summary="the disk's storage class uses the same CSI driver as the snapshot's source",
    applies=_from_snapshot,
)
def vd_snapshot_storage_class(req: RuleRequest[VirtualDisk], ctx: RuleContext) -> Iterator[Finding]:
    target_class = req.obj.spec.persistent_volume_claim.storage_class_name
    if not target_class:
        return  # the platform then uses the snapshot's own class
    snapshot = _snapshot(req, ctx)
    if snapshot is None:
        return
    source_class: str | None = None
    if snapshot.spec.virtual_disk_name and ctx.needs(VD):
        source_disk = ctx.view.get(VirtualDisk, req.namespace, snapshot.spec.virtual_disk_name)
        if source_disk is not None:
            source_class = disk_storage_class(ctx, source_disk)
    if not source_class:
        volume_snapshot = _volume_snapshot(ctx, snapshot)
        if volume_snapshot is not None:
            annotations = volume_snapshot.metadata.annotations
            source_class = annotations.get(
                kinds.VOLUME_SNAPSHOT_STORAGE_CLASS_ANNOTATION
            ) or annotations.get("storageClass")
    target = storage_class_provisioner(ctx, target_class)
    source = storage_class_provisioner(ctx, source_class)
    if target and source and target != source:
        yield Finding(
            f'virtual disk storage class "{target_class}" provisioner "{target}" does not match the '
            f'source VirtualDiskSnapshot "{snapshot.name}" provisioner "{source}": creating a disk '
            f'from a snapshot on a different CSI driver is not supported; use a storage class of '
            f'"{source}" (such as "{source_class}") or omit spec.persistentVolumeClaim.storageClassName',
            "spec.persistentVolumeClaim.storageClassName",
        )
