"""Rules that exist because the platform changed between releases (SPEC 2, "Platform
versions"): fields a release no longer reads, and kinds a release deprecated or no
longer serves. `op-not-served` lives with the operation rules (op.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import kinds
from ..catalogue import Action, Finding, RuleContext, RuleRequest, rule
from ..models import VirtualDiskSnapshot
from ..platform import (
    V0_24_CLASS_FIELDS_REMOVED,
    V1_2_SNAPSHOT_OPERATIONS,
    V1_9_RESTORE_REMOVED,
    VersionRange,
)


@rule(
    "snapshot-class-field-ignored",
    kinds=(kinds.VIRTUAL_DISK_SNAPSHOT, kinds.VIRTUAL_MACHINE_SNAPSHOT),
    default=Action.WARN,
    versions=VersionRange(since=V0_24_CLASS_FIELDS_REMOVED),
    summary="(v0.24+) the spec sets a VolumeSnapshotClass field the platform no longer has",
)
def snapshot_class_field_ignored(req: RuleRequest[Any], ctx: RuleContext) -> Iterator[Finding]:
    obj = req.obj
    if isinstance(obj, VirtualDiskSnapshot):
        field, present = "spec.volumeSnapshotClassName", bool(obj.spec.volume_snapshot_class_name)
    else:
        field, present = "spec.volumeSnapshotClasses", bool(obj.spec.volume_snapshot_classes)
    if present:
        yield Finding(
            f"{field} was removed from the platform in v0.24 and is ignored on "
            f"{req.platform.label}: the VolumeSnapshot takes the default VolumeSnapshotClass of "
            "the disk's CSI driver (annotation snapshot.storage.kubernetes.io/is-default-class: "
            f'"true"); remove the field',
            field,
        )


@rule(
    "vmr-deprecated",
    kinds=(kinds.VIRTUAL_MACHINE_RESTORE,),
    default=Action.WARN,
    # Deprecated from v1.2 (a warning), removed in v1.9 (the kind is no longer served).
    default_changes=((V1_9_RESTORE_REMOVED, Action.DENY),),
    summary="(v1.2+) VirtualMachineRestore is deprecated, and no longer served from v1.9",
)
def vmr_deprecated(req: RuleRequest[Any], ctx: RuleContext) -> Iterator[Finding]:
    if req.platform < V1_2_SNAPSHOT_OPERATIONS:
        return  # the restore API of v0.14 - v1.1
    mode = req.obj.spec.restore_mode or "Safe"
    replacement = (
        "a VirtualMachineOperation of type Restore (in place)"
        if mode == "Forced" or not req.obj.spec.name_replacements
        else "a VirtualMachineSnapshotOperation of type CreateVirtualMachine (a new virtual machine)"
    )
    state = (
        f"is not served from v1.9 (this platform is {req.platform.label})"
        if req.platform >= V1_9_RESTORE_REMOVED
        else f"is deprecated since v1.2 (this platform is {req.platform.label})"
    )
    yield Finding(
        f"The VirtualMachineRestore resource {state}: use {replacement} instead; "
        "`snapguard convert` rewrites the manifest",
        "kind",
    )
