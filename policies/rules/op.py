"""Rules for VirtualMachineOperation (types Restore and Clone) and
VirtualMachineSnapshotOperation CREATE (SPEC 2, "VirtualMachineOperation (Restore,
Clone) and VirtualMachineSnapshotOperation — CREATE").

The restore API of platform v1.1+ (vmop) and v1.2+ (vmsop). The platform's CRD schema
and CEL rules refuse a malformed spec (`op-spec-valid` says the same offline, for CI);
everything else its controllers find minutes later and fail the operation with
(reference OPR-1..6, CL-1..7). These rules say it at `kubectl apply`.

What a restore or clone writes is planned once per decision by the shared pieces
(`rules/source.py`, `policies/restore.py`): from the snapshot's Secret for a vmop
Restore (stored names, nothing renamed) and a vmsop (nameReplacement, then prefix and
suffix), from the VM as it is now for a vmop Clone. A vmop Clone's implied
VirtualMachineSnapshot is decided by the VirtualMachineSnapshot rules themselves
(`implies` below).

Mode DryRun turns what these rules find into warnings (the engine, `dry_run_warns`);
BestEffort skips the Secret-data rules, as the platform ignores that conflict then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import kinds
from ..catalogue import Action, Finding, ImpliedRequest, RuleContext, RuleRequest, implies, rule
from ..models import (
    CloneSpec,
    ClusterVirtualImage,
    KubeObject,
    Secret,
    VirtualDisk,
    VirtualImage,
    VirtualMachine,
    VirtualMachineBlockDeviceAttachment,
    VirtualMachineIPAddress,
    VirtualMachineMACAddress,
    VirtualMachineOperation,
    VirtualMachineSnapshot,
    VirtualMachineSnapshotOperation,
)
from ..platform import V1_1_OPERATIONS, V1_2_SNAPSHOT_OPERATIONS, PlatformVersion, VersionRange
from ..restore import (
    CLONED_KINDS,
    MAX_CUSTOMIZATION_LENGTH,
    Naming,
    RestoredObject,
    RestorePlan,
    plan_clone_of_vm,
)
from .source import (
    CONFLICT_MODELS,
    KIND_WORDS,
    MAX_NAME_LENGTH,
    MAX_VM_NAME_LENGTH,
    RestoreState,
    invalid_name_reason,
    secret_mismatch,
    snapshot_not_ready,
    snapshot_source,
    valid_name_like,
)

VMOP = kinds.VIRTUAL_MACHINE_OPERATION
VMSOP = kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION
Operation = VirtualMachineOperation | VirtualMachineSnapshotOperation
MODES = ("DryRun", "Strict", "BestEffort")
# The VirtualMachineSnapshot rules that decide a vmop Clone's own snapshot (SPEC).
CLONE_SNAPSHOT_RULES = frozenset(
    {
        "vms-vm-ready",
        "vms-block-devices-ready",
        "vms-disk-resizing",
        "vms-consistency",
        "vms-dependencies",
        "snapshot-class-default",
    }
)
# What the kubectl short names are, for the hints.
SHORT = {VMOP: "vmop", VMSOP: "vmsop"}


# --- which requests, on which platform -------------------------------------------


def is_governed(obj: KubeObject) -> bool:
    """vmops of type Restore or Clone, and every vmsop (its one type creates a VM)."""
    if isinstance(obj, VirtualMachineOperation):
        return obj.spec.type in kinds.GOVERNED_OPERATION_TYPES
    return isinstance(obj, VirtualMachineSnapshotOperation)


def _is_restore(obj: KubeObject) -> bool:
    return isinstance(obj, VirtualMachineOperation) and obj.spec.type == "Restore"


def _is_clone(obj: KubeObject) -> bool:
    return isinstance(obj, VirtualMachineOperation) and obj.spec.type == "Clone"


def _is_vmop(obj: KubeObject) -> bool:
    return _is_restore(obj) or _is_clone(obj)


def _is_restore_or_vmsop(obj: KubeObject) -> bool:
    return _is_restore(obj) or isinstance(obj, VirtualMachineSnapshotOperation)


def _is_clone_or_vmsop(obj: KubeObject) -> bool:
    return _is_clone(obj) or isinstance(obj, VirtualMachineSnapshotOperation)


def served(obj: KubeObject, version: PlatformVersion) -> bool:
    """vmop Restore/Clone exist from v1.1, vmsop from v1.2 (op-not-served otherwise)."""
    since = V1_2_SNAPSHOT_OPERATIONS if isinstance(obj, VirtualMachineSnapshotOperation) else V1_1_OPERATIONS
    return version >= since


OpCheck = Callable[[RuleRequest[Any], RuleContext], Iterator[Finding]]


def op_rule(
    id: str,
    *,
    applies: Callable[[KubeObject], bool] = is_governed,
    default: Action = Action.DENY,
    summary: str,
    dry_run_warns: bool = True,
) -> Callable[[OpCheck], OpCheck]:
    """A rule of the operations table: decides only governed operations on a platform
    that serves them (`op-not-served` speaks for the others), and, but for
    op-spec-valid, reports as a warning in DryRun."""

    def register(check: OpCheck) -> OpCheck:
        @functools.wraps(check)
        def guarded(req: RuleRequest[Any], ctx: RuleContext) -> Iterator[Finding]:
            if served(req.obj, req.platform):
                yield from check(req, ctx)

        rule(
            id,
            kinds=(VMOP, VMSOP),
            default=default,
            summary=summary,
            applies=applies,
            versions=VersionRange(since=V1_1_OPERATIONS),
            dry_run_warns=dry_run_warns,
        )(guarded)
        return check

    return register


# --- fields and wording ------------------------------------------------------------


def _word(obj: KubeObject) -> str:
    """How messages name the request: `VirtualMachineOperation "x"`."""
    return f'{obj.KIND} "{obj.name}"'


def _clone_spec(obj: Operation) -> tuple[CloneSpec | None, str]:
    """The clone part of a vmop Clone or a vmsop, and its path."""
    if isinstance(obj, VirtualMachineOperation):
        return obj.spec.clone, "spec.clone"
    return obj.spec.create_virtual_machine, "spec.createVirtualMachine"


def _mode_path(obj: Operation) -> str:
    if isinstance(obj, VirtualMachineOperation):
        return "spec.restore.mode" if obj.spec.type == "Restore" else "spec.clone.mode"
    return "spec.createVirtualMachine.mode"


def _snapshot_field(obj: Operation) -> str:
    if isinstance(obj, VirtualMachineOperation):
        return "spec.restore.virtualMachineSnapshotName"
    return "spec.virtualMachineSnapshotName"


def _naming(obj: Operation) -> Naming:
    clone, path = _clone_spec(obj)
    if clone is None:
        return Naming()
    customization = clone.customization
    return Naming(
        tuple(clone.name_replacement),
        (customization.name_prefix or "") if customization else "",
        (customization.name_suffix or "") if customization else "",
        field=f"{path}.nameReplacement",
    )


def _best_effort(obj: Operation) -> bool:
    return obj.mode == "BestEffort"


# --- the source of the objects written, once per decision --------------------------


def _source(req: RuleRequest[Any], ctx: RuleContext) -> RestoreState:
    """The snapshot and the plan of a vmop Restore (stored names, VMIP and VMMACs
    restored too) or a vmsop (renamed, no addresses)."""
    obj = req.obj
    if isinstance(obj, VirtualMachineOperation):
        return snapshot_source(ctx, req.namespace, obj.snapshot_name, Naming())
    return snapshot_source(ctx, req.namespace, obj.snapshot_name, _naming(obj), addresses=False)


def _vm(req: RuleRequest[Any], ctx: RuleContext) -> VirtualMachine | None:
    """The operation's VM (vmop only), None when unnamed, missing or not in the view."""
    obj = req.obj
    if not isinstance(obj, VirtualMachineOperation):
        return None
    name = obj.spec.virtual_machine_name
    if not name or not ctx.needs(kinds.VIRTUAL_MACHINE):
        return None
    return ctx.view.get(VirtualMachine, req.namespace, name)


def _clone_plan(req: RuleRequest[Any], ctx: RuleContext) -> RestorePlan | None:
    """What the clone creates: for a vmsop from its snapshot's Secret, for a vmop Clone
    from the VM as it is now (looked up once per decision)."""
    obj = req.obj
    if isinstance(obj, VirtualMachineSnapshotOperation):
        return _source(req, ctx).plan

    def compute(inner: RuleContext) -> RestorePlan | None:
        vm = _vm(req, inner)
        if vm is None:
            return None
        attachments = (
            sorted(a.name for a in inner.view.attachments_of(req.namespace, vm.name))
            if inner.needs(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT)
            else []
        )
        secret: tuple[str, dict[str, str]] | None = None
        names = vm.provisioning_secret_names()
        if names and inner.needs(kinds.SECRET):
            found = inner.view.get(Secret, req.namespace, names[0][1])
            if found is not None:  # a missing one is vms-dependencies' (clone's snapshot)
                secret = (found.name, dict(found.data))
        return plan_clone_of_vm(req.namespace, _naming(obj), vm.name, vm.disk_names(), attachments, secret)

    plan: RestorePlan | None = ctx.shared("clone-plan", compute)
    return plan


# --- the rules ---------------------------------------------------------------------


@rule(
    "op-not-served",
    kinds=(VMOP, VMSOP),
    applies=is_governed,
    summary="the platform version serves the operation (vmop Restore/Clone from v1.1, vmsop from v1.2)",
)
def op_not_served(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    obj = req.obj
    if served(obj, req.platform):
        return
    if isinstance(obj, VirtualMachineSnapshotOperation):
        yield Finding(
            f"{_word(obj)}: VirtualMachineSnapshotOperation exists from DVP v1.2, but this platform "
            f"is {req.platform.label}: create the virtual machine with a VirtualMachineRestore "
            "and spec.nameReplacements instead, or upgrade the platform",
            "kind",
        )
        return
    yield Finding(
        f"{_word(obj)}: a VirtualMachineOperation of type {obj.spec.type} exists from DVP v1.1, "
        f"but this platform is {req.platform.label}: restore with a VirtualMachineRestore "
        "instead, or upgrade the platform",
        "spec.type",
    )


def _length_problem(value: str | None, what: str, message: str) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_CUSTOMIZATION_LENGTH:
        return f"{message} ({what} is {len(value)} characters)"
    return None


def _spec_problems(obj: Operation) -> Iterator[tuple[str, str]]:
    """(message, field) of everything the platform's schema and CEL rules refuse."""
    if isinstance(obj, VirtualMachineOperation):
        if not obj.spec.virtual_machine_name:
            yield (
                "spec.virtualMachineName: Required value: name the virtual machine to "
                f"{(obj.spec.type or '').lower()}",
                "spec.virtualMachineName",
            )
        if obj.spec.type == "Restore":
            restore = obj.spec.restore
            if restore is None:
                yield (
                    "Restore requires restore field. Add spec.restore with mode (DryRun, Strict or "
                    "BestEffort) and virtualMachineSnapshotName",
                    "spec.restore",
                )
                return
            if not restore.virtual_machine_snapshot_name:
                yield (
                    "spec.restore.virtualMachineSnapshotName: Required value: name the "
                    "VirtualMachineSnapshot to restore from",
                    "spec.restore.virtualMachineSnapshotName",
                )
            yield from _mode_problem(restore.mode, "spec.restore.mode")
            return
        if obj.spec.clone is None:
            yield (
                "Clone requires clone field. Add spec.clone with mode and a "
                "customization.namePrefix, customization.nameSuffix or nameReplacement",
                "spec.clone",
            )
            return
        yield from _clone_problems(obj.spec.clone, "spec.clone")
        return
    if not obj.spec.virtual_machine_snapshot_name:
        yield (
            "spec.virtualMachineSnapshotName: Required value: name the VirtualMachineSnapshot to "
            "create the virtual machine from",
            "spec.virtualMachineSnapshotName",
        )
    if obj.spec.type != "CreateVirtualMachine":
        yield (
            f'spec.type: Unsupported value: "{obj.spec.type or ""}": supported values: '
            '"CreateVirtualMachine"',
            "spec.type",
        )
    if obj.spec.create_virtual_machine is None:
        # The v1.10 CRD's CEL rule for this tests a type that cannot exist
        # ('CreateVirtualMachineName'), so the API server lets it through and the
        # operation has nothing to do; say it here.
        yield (
            "CreateVirtualMachine requires createVirtualMachine field. Add "
            "spec.createVirtualMachine with mode and a customization.namePrefix, "
            "customization.nameSuffix or nameReplacement",
            "spec.createVirtualMachine",
        )
        return
    yield from _clone_problems(obj.spec.create_virtual_machine, "spec.createVirtualMachine")


def _mode_problem(mode: str | None, path: str) -> Iterator[tuple[str, str]]:
    if mode is None:
        yield (f"{path}: Required value: set it to DryRun, Strict or BestEffort", path)
    elif mode not in MODES:
        yield (
            f'{path}: Unsupported value: "{mode}": supported values: "DryRun", "Strict", "BestEffort"',
            path,
        )


def _clone_problems(clone: CloneSpec, path: str) -> Iterator[tuple[str, str]]:
    yield from _mode_problem(clone.mode, f"{path}.mode")
    customization = clone.customization
    prefix = customization.name_prefix if customization else None
    suffix = customization.name_suffix if customization else None
    if not prefix and not suffix and not clone.name_replacement:
        yield (
            "At least one of customization.namePrefix, customization.nameSuffix, or "
            'nameReplacement must be set: e.g. customization: {namePrefix: "copy-"}',
            path,
        )
    for value, key in ((prefix, "namePrefix"), (suffix, "nameSuffix")):
        problem = _length_problem(value, key, f"{key} length must be between 1 and 59 characters if set")
        if problem:
            yield (f"{problem}: shorten it or omit the field", f"{path}.customization.{key}")
    for index, replacement in enumerate(clone.name_replacement):
        entry = f"{path}.nameReplacement[{index}]"
        problem = _length_problem(
            replacement.to or "", "to", "Each nameReplacement.to must be between 1 and 59 characters"
        )
        if problem:
            yield (f"{problem}: choose a shorter name", f"{entry}.to")
        if not replacement.from_.name:
            yield (f"{entry}.from.name: Required value: the name of the object to rename", f"{entry}.from.name")
        if replacement.from_.kind == "":
            yield (
                f"{entry}.from.kind: Invalid value: \"\": should be at least 1 chars long; omit "
                "from.kind to match any kind",
                f"{entry}.from.kind",
            )


@op_rule(
    "op-spec-valid",
    summary="the spec passes the platform's schema and CEL rules (decided offline too)",
    dry_run_warns=False,
)
def op_spec_valid(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    for message, field in _spec_problems(req.obj):
        yield Finding(message, field)


@op_rule(
    "op-in-progress",
    summary="no other unfinished operation for the same VM (vmop) or snapshot (vmsop)",
)
def op_in_progress(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    obj = req.obj
    if isinstance(obj, VirtualMachineOperation):
        vm = obj.spec.virtual_machine_name
        if not vm or not ctx.needs(VMOP):
            return
        others: list[KubeObject] = list(ctx.view.unfinished_operations_of_vm(req.namespace, vm))
        field = "spec.virtualMachineName"
    else:
        snapshot = obj.snapshot_name
        if not snapshot or not ctx.needs(VMSOP):
            return
        others = list(ctx.view.unfinished_operations_of_snapshot(req.namespace, snapshot))
        field = "spec.virtualMachineSnapshotName"
    for other in sorted(others, key=lambda o: o.name):
        if other.name == req.name:
            continue  # the request itself, seen again (an audit, a replayed apply)
        prefix = (
            "VMOP cannot be executed now"
            if isinstance(obj, VirtualMachineOperation)
            else "The operation cannot start yet"
        )
        yield Finding(
            f'{prefix}. Previously created operation "{other.name}" should finish first '
            f'(phase "{other.phase or "Pending"}"): wait until it is Completed or Failed '
            f"(kubectl get {SHORT[obj.KIND]} {other.name} -n {req.namespace}), or delete it",
            field,
        )


@op_rule(
    "op-vm-exists",
    applies=_is_vmop,
    summary="the VirtualMachine named by spec.virtualMachineName exists",
)
def op_vm_exists(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    name = req.obj.spec.virtual_machine_name
    if not name or not ctx.needs(kinds.VIRTUAL_MACHINE):
        return  # an empty name is op-spec-valid's
    if ctx.view.get(VirtualMachine, req.namespace, name) is None:
        fix = (
            f"to create it from the snapshot, use a VirtualMachineSnapshotOperation of type "
            f"CreateVirtualMachine (snapshot \"{req.obj.snapshot_name}\")"
            if req.obj.spec.type == "Restore"
            else "name an existing virtual machine"
        )
        yield Finding(
            f'VirtualMachine not found: the virtual machine "{name}" does not exist in namespace '
            f'"{req.namespace}"; {fix}',
            "spec.virtualMachineName",
        )


@op_rule(
    "op-vm-phase",
    applies=_is_vmop,
    summary="the VM is not being deleted and is Stopped, Running or Pending (Restore) / Stopped or Running (Clone)",
)
def op_vm_phase(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    vm = _vm(req, ctx)
    if vm is None:
        return
    op_type = req.obj.spec.type or ""
    if vm.deleting:
        yield Finding(
            f'Operation type {op_type} is not applicable for VirtualMachine "{vm.name}": it is being '
            "deleted",
            "spec.virtualMachineName",
        )
        return
    allowed = ("Stopped", "Running", "Pending") if op_type == "Restore" else ("Stopped", "Running")
    if vm.phase not in allowed:
        yield Finding(
            f"Operation type {op_type} is not applicable for VirtualMachine in phase "
            f'{vm.phase or "unknown"} (virtual machine "{vm.name}"): wait until it is '
            f"{' or '.join(allowed)}, then create the operation",
            "spec.virtualMachineName",
        )


@op_rule(
    "op-snapshot-exists",
    applies=_is_restore_or_vmsop,
    summary="the VirtualMachineSnapshot named by the operation exists",
)
def op_snapshot_exists(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    name = req.obj.snapshot_name
    if not name or not ctx.needs(kinds.VIRTUAL_MACHINE_SNAPSHOT):
        return  # an empty name is op-spec-valid's
    if ctx.view.get(VirtualMachineSnapshot, req.namespace, name) is None:
        yield Finding(
            f'The VirtualMachineSnapshot "{name}" was not found in namespace "{req.namespace}": the '
            "operation would fail; name an existing snapshot "
            f"(kubectl get vmsnapshot -n {req.namespace})",
            _snapshot_field(req.obj),
        )


@op_rule(
    "op-snapshot-ready",
    applies=_is_restore_or_vmsop,
    summary="the snapshot is Ready, its Secret is readable and its VirtualDiskSnapshots are Ready",
)
def op_snapshot_ready(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    yield from snapshot_not_ready(_source(req, ctx), ctx, req.namespace, _snapshot_field(req.obj))


@op_rule(
    "op-snapshot-of-vm",
    applies=_is_restore,
    summary="the snapshot is of the VM being restored",
)
def op_snapshot_of_vm(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    target = req.obj.spec.virtual_machine_name
    state = _source(req, ctx)
    if not target or state.snapshot is None:
        return
    source_vm = state.snapshot.spec.virtual_machine_name or (
        state.plan.vm.original_name if state.plan is not None else ""
    )
    if source_vm and source_vm != target:
        yield Finding(
            f'The VirtualMachineSnapshot "{state.snapshot.name}" is of virtual machine "{source_vm}", '
            f'not of "{target}": the restore would write "{source_vm}"\'s manifest; restore '
            f'"{source_vm}" (spec.virtualMachineName: {source_vm}), or create a new virtual machine '
            "from this snapshot with a VirtualMachineSnapshotOperation of type CreateVirtualMachine",
            "spec.restore.virtualMachineSnapshotName",
        )


@op_rule(
    "restore-running-vm",
    applies=_is_restore,
    default=Action.WARN,
    summary="the restore stops a Running or Pending VM and starts it again after",
)
def restore_running_vm(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    vm = _vm(req, ctx)
    if vm is None or vm.phase not in ("Running", "Pending"):
        return
    yield Finding(
        f'The virtual machine "{vm.name}" is {vm.phase}: the restore puts it into maintenance, '
        "stops it, and starts it again when the restore completes; stop it first "
        f"(a vmop of type Stop) if it must not start again",
        "spec.virtualMachineName",
    )


def _restore_plan(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext, *, disks: bool = False) -> RestorePlan | None:
    state = _source(req, ctx)
    if state.plan is not None and disks and not state.disks_known:
        ctx.needs(kinds.VIRTUAL_DISK_SNAPSHOT)
    return state.plan


def _snapshot_vm(plan: RestorePlan) -> str:
    """The VM the snapshot was taken of: objects attached to it are the restore's own."""
    return plan.vm.original_name


@op_rule(
    "restore-disk-in-use",
    applies=_is_restore,
    summary="no VirtualDisk under a restored name is attached to another VM",
)
def restore_disk_in_use(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    plan = _restore_plan(req, ctx, disks=True)
    if plan is None or not ctx.needs(kinds.VIRTUAL_DISK):
        return
    owner = _snapshot_vm(plan)
    for disk in plan.of_kind(kinds.VIRTUAL_DISK):
        existing = ctx.view.get(VirtualDisk, req.namespace, disk.restored_name)
        if existing is None:
            continue
        users = sorted({a.name for a in existing.status.attached_to_virtual_machines if a.name and a.name != owner})
        if users:
            yield Finding(
                f'the virtual disk "{disk.restored_name}" already in use: it is attached to virtual '
                f'machine "{users[0]}", and the restore would delete and recreate it; detach it from '
                f'"{users[0]}" first, or create a new virtual machine from the snapshot with a '
                "VirtualMachineSnapshotOperation and a namePrefix",
                "spec.restore.virtualMachineSnapshotName",
            )


@op_rule(
    "restore-vmbda-in-use",
    applies=_is_restore,
    summary="no VMBDA under a restored name belongs to another VM",
)
def restore_vmbda_in_use(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    plan = _restore_plan(req, ctx)
    if plan is None:
        return
    attachments = plan.of_kind(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT)
    if not attachments or not ctx.needs(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT):
        return
    owner = _snapshot_vm(plan)
    for attachment in attachments:
        existing = ctx.view.get(VirtualMachineBlockDeviceAttachment, req.namespace, attachment.restored_name)
        holder = existing.spec.virtual_machine_name if existing is not None else None
        if existing is not None and holder and holder != owner:
            yield Finding(
                f'the virtual machine block device attachment "{attachment.restored_name}" already in '
                f'use: it attaches a device to virtual machine "{holder}"; delete it first (kubectl '
                f"delete vmbda {attachment.restored_name} -n {req.namespace}), or create a new virtual "
                "machine from the snapshot with a VirtualMachineSnapshotOperation",
                "spec.restore.virtualMachineSnapshotName",
            )


def _stored(obj: RestoredObject, section: str, key: str) -> str:
    part = (obj.stored or {}).get(section)
    value = part.get(key) if isinstance(part, dict) else None
    return value if isinstance(value, str) else ""


def _by_name(obj: KubeObject) -> str:
    return obj.name


def _address_conflicts(
    req: RuleRequest[VirtualMachineOperation],
    plan: RestorePlan,
    obj: RestoredObject,
    existing: VirtualMachineIPAddress | VirtualMachineMACAddress | None,
    holders: Sequence[VirtualMachineIPAddress | VirtualMachineMACAddress],
    address: str,
) -> Iterator[Finding]:
    """OPR-5c..e: the address object under the stored name is attached to another VM, or
    another address object, attached to another VM, holds the stored address."""
    owner = _snapshot_vm(plan)
    words = KIND_WORDS[obj.kind]
    field = "spec.restore.virtualMachineSnapshotName"
    if existing is not None and existing.attached and existing.status.virtual_machine_name not in (None, "", owner):
        yield Finding(
            f'the {words} "{obj.restored_name}" is already in use and cannot be used for the restored '
            f'virtual machine: it is attached to virtual machine "{existing.status.virtual_machine_name}"; '
            "free it first (give that virtual machine another address)",
            field,
        )
    label = "IP Address" if obj.kind == kinds.VIRTUAL_MACHINE_IP_ADDRESS else "MAC address"
    for other in sorted(holders, key=_by_name):
        holder = other.status.virtual_machine_name
        if other.name == obj.restored_name or not other.attached or holder in (None, "", owner):
            continue
        yield Finding(
            f'the {label} "{address}" cannot be used for the restore: it is taken by '
            f'{obj.kind}/{other.name} and already in use by the different virtual machine "{holder}"; '
            f"free it first, or restore with keepIPAddress: Never snapshots (which hold no address)",
            field,
        )


@op_rule(
    "restore-ip-conflict",
    applies=_is_restore,
    summary="the stored IP address and its VirtualMachineIPAddress are not in use by another VM",
)
def restore_ip_conflict(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    plan = _restore_plan(req, ctx)
    vmip = plan.vmip if plan is not None else None
    if plan is None or vmip is None or not ctx.needs(kinds.VIRTUAL_MACHINE_IP_ADDRESS):
        return
    existing = ctx.view.get(VirtualMachineIPAddress, req.namespace, vmip.restored_name)
    address = _stored(vmip, "spec", "staticIP")
    holders = list(ctx.view.ip_addresses_holding(req.namespace, address)) if address else []
    yield from _address_conflicts(req, plan, vmip, existing, holders, address)


@op_rule(
    "restore-mac-conflict",
    applies=_is_restore,
    summary="no stored MAC address or its VirtualMachineMACAddress is in use by another VM",
)
def restore_mac_conflict(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    plan = _restore_plan(req, ctx)
    macs = plan.of_kind(kinds.VIRTUAL_MACHINE_MAC_ADDRESS) if plan is not None else []
    if plan is None or not macs or not ctx.needs(kinds.VIRTUAL_MACHINE_MAC_ADDRESS):
        return
    for mac in macs:
        existing = ctx.view.get(VirtualMachineMACAddress, req.namespace, mac.restored_name)
        address = _stored(mac, "spec", "address") or _stored(mac, "status", "address")
        holders = list(ctx.view.mac_addresses_holding(req.namespace, address)) if address else []
        yield from _address_conflicts(req, plan, mac, existing, holders, address)


@op_rule(
    "restore-secret-mismatch",
    applies=_is_restore,
    summary="a Secret under the stored provisioning Secret's name holds the stored data (not in BestEffort)",
)
def restoresecret_mismatch(req: RuleRequest[VirtualMachineOperation], ctx: RuleContext) -> Iterator[Finding]:
    plan = _restore_plan(req, ctx)
    if plan is None or _best_effort(req.obj):
        return
    mismatch = secret_mismatch(plan, ctx, req.namespace)
    if mismatch is not None:
        secret, keys = mismatch
        yield Finding(
            f'the provisioner secret "{secret.restored_name}" the secret has different data (differing '
            f"keys: {', '.join(keys)}): put the stored data back or delete the Secret, or restore with "
            "spec.restore.mode: BestEffort, which keeps the existing Secret",
            "spec.restore.mode",
        )


@op_rule(
    "restore-images-missing",
    applies=_is_restore_or_vmsop,
    default=Action.WARN,
    summary="the stored VM's VirtualImages and ClusterVirtualImages still exist",
)
def restore_images_missing(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    plan = _source(req, ctx).plan
    if plan is None:
        return
    spec = (plan.vm.stored or {}).get("spec")
    refs = spec.get("blockDeviceRefs") if isinstance(spec, dict) else None
    for ref in refs if isinstance(refs, list) else []:
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            continue
        kind, name = ref.get("kind"), ref["name"]
        model: type[KubeObject]
        if kind == kinds.VIRTUAL_IMAGE:
            model, namespace = VirtualImage, req.namespace
        elif kind == kinds.CLUSTER_VIRTUAL_IMAGE:
            model, namespace = ClusterVirtualImage, ""
        else:
            continue
        if not ctx.needs(kind) or ctx.view.get(model, namespace, name) is not None:
            continue
        outcome = (
            "with mode BestEffort the device is dropped from the virtual machine"
            if _best_effort(req.obj)
            else "with mode Strict the virtual machine will stay Pending; use mode BestEffort to drop "
            "the device, or recreate the image"
        )
        yield Finding(
            f'the virtual image is not found: the stored virtual machine "{plan.vm.original_name}" '
            f'refers to {kind} "{name}", which no longer exists; {outcome}',
            _mode_path(req.obj),
        )


def _clone_hint(obj: RestoredObject, naming: Naming) -> str:
    """A prefix or nameReplacement that gives `obj` a free name."""
    if naming.customized:
        return "choose another customization.namePrefix or nameSuffix"
    suggestion = valid_name_like(f"{obj.restored_name}-copy")
    return (
        f"add the nameReplacement entry - {{from: {{kind: {obj.kind}, name: {obj.original_name}}}, "
        f"to: {suggestion}}}, or set customization.namePrefix"
    )


@op_rule(
    "clone-names",
    applies=_is_clone_or_vmsop,
    summary="the clone's resulting names are valid and distinct, and its nameReplacement entries apply",
)
def clone_names(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    clone, path = _clone_spec(req.obj)
    if clone is None:
        return
    seen: dict[tuple[str, str], int] = {}
    for index, replacement in enumerate(clone.name_replacement):
        entry = f"{path}.nameReplacement[{index}]"
        kind = replacement.from_.kind or ""
        if kind and kind not in CLONED_KINDS:
            close = next((k for k in CLONED_KINDS if k.lower() == kind.lower()), None)
            fix = f'write "{close}"' if close else f"use one of {', '.join(CLONED_KINDS)}"
            yield Finding(
                f'{entry}.from.kind "{kind}" is not a kind a clone creates, so the entry never applies; '
                f"{fix}, or omit from.kind",
                f"{entry}.from.kind",
            )
        key = (kind, replacement.from_.name or "")
        if key in seen:
            yield Finding(
                f"{entry} has the same from as {path}.nameReplacement[{seen[key]}]: only the first "
                "applies; remove one of them",
                f"{entry}.from",
            )
        else:
            seen[key] = index
    plan = _clone_plan(req, ctx)
    if plan is None:
        return
    by_name: dict[tuple[str, str], RestoredObject] = {}
    for obj in plan.objects:
        name = obj.restored_name
        limit = MAX_VM_NAME_LENGTH if obj.kind == kinds.VIRTUAL_MACHINE else MAX_NAME_LENGTH
        if len(name) > limit:
            yield Finding(
                f'name "{name}" too long ({len(name)} > {limit}): resource name exceeds maximum allowed '
                f'length ({KIND_WORDS[obj.kind]} "{obj.original_name}"); shorten the prefix, suffix or '
                "nameReplacement",
                f"{path}.customization",
            )
        else:
            reason = invalid_name_reason(name, obj.kind)
            if reason:
                yield Finding(
                    f'the {KIND_WORDS[obj.kind]} "{obj.original_name}" would be named "{name}", which '
                    f"{reason}; change the prefix, suffix or nameReplacement",
                    f"{path}.customization",
                )
        other = by_name.setdefault((obj.kind, name), obj)
        if other is not obj and other.original_name != obj.original_name:
            yield Finding(
                f'the clone would give two {KIND_WORDS[obj.kind]}s the same name "{name}" (from '
                f'"{other.original_name}" and "{obj.original_name}"): give each its own nameReplacement',
                f"{path}.nameReplacement",
            )


@op_rule(
    "clone-name-conflict",
    applies=_is_clone_or_vmsop,
    summary="no VirtualMachine, VirtualDisk or VMBDA already exists under a resulting name",
)
def clone_name_conflict(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    plan = _clone_plan(req, ctx)
    if plan is None:
        return
    _, path = _clone_spec(req.obj)
    for obj in plan.objects:
        model = CONFLICT_MODELS.get(obj.kind)
        if model is None or not obj.restored_name or not ctx.needs(obj.kind):
            continue
        if ctx.view.get(model, req.namespace, obj.restored_name) is None:
            continue
        yield Finding(
            f"{obj.kind} with name {obj.restored_name} already exists in namespace "
            f'"{req.namespace}"; {_clone_hint(obj, plan.naming)}',
            f"{path}.nameReplacement",
        )


@op_rule(
    "clone-secret-mismatch",
    applies=_is_clone_or_vmsop,
    summary="a Secret under the resulting provisioning Secret's name holds the same data (not in BestEffort)",
)
def clonesecret_mismatch(req: RuleRequest[Operation], ctx: RuleContext) -> Iterator[Finding]:
    if _best_effort(req.obj):
        return
    plan = _clone_plan(req, ctx)
    mismatch = secret_mismatch(plan, ctx, req.namespace) if plan is not None else None
    if plan is None or mismatch is None:
        return
    secret, keys = mismatch
    _, path = _clone_spec(req.obj)
    yield Finding(
        f"content of the secret {secret.restored_name} is different from that in the snapshot "
        f"(differing keys: {', '.join(keys)}); {_clone_hint(secret, plan.naming)}, or use mode "
        "BestEffort to keep the existing Secret",
        f"{path}.mode",
    )


@implies(VMOP)
def clone_snapshot(obj: KubeObject, namespace: str, platform: PlatformVersion) -> list[ImpliedRequest]:
    """A vmop Clone first takes a VirtualMachineSnapshot of its VM (requiredConsistency
    true, keepIPAddress Never; reference R3 step 1)."""
    if not _is_clone(obj) or not isinstance(obj, VirtualMachineOperation) or not served(obj, platform):
        return []
    vm = obj.spec.virtual_machine_name
    if not vm:
        return []
    snapshot = {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.VIRTUAL_MACHINE_SNAPSHOT,
        "metadata": {"name": f"vmop-clone-{obj.name}"[:MAX_NAME_LENGTH], "namespace": namespace},
        "spec": {"virtualMachineName": vm, "requiredConsistency": True, "keepIPAddress": "Never"},
    }
    return [
        ImpliedRequest(
            kinds.VIRTUAL_MACHINE_SNAPSHOT,
            namespace,
            snapshot,
            CLONE_SNAPSHOT_RULES,
            f'the clone first takes a consistent snapshot of virtual machine "{vm}"',
            "spec.virtualMachineName",
        )
    ]
