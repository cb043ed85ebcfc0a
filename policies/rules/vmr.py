"""Rules for VirtualMachineRestore CREATE (SPEC 2, "VirtualMachineRestore — CREATE").

The platform (v0.14 - v1.8) checks these in its restore controller: a snapshot that is
not ready leaves the restore Pending, a conflict fails it with
`VirtualMachineRestoreConflict` after part of the work is done. These rules say so at
`kubectl apply`.

Every rule after `vmr-snapshot-ready` reads the restore plan (`policies.restore`: the
objects the restore creates and their names after nameReplacements), decoded from the
snapshot's Secret once per decision through `ctx.shared`. When the snapshot or its
Secret is missing or unreadable there is no plan and those rules stay silent: the first
two rules report it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import kinds
from ..catalogue import Finding, RuleContext, RuleRequest, rule
from ..models import (
    KubeObject,
    NameReplacement,
    VirtualMachine,
    VirtualMachineIPAddress,
    VirtualMachineMACAddress,
    VirtualMachineRestore,
    VirtualMachineSnapshot,
)
from ..platform import V1_9_RESTORE_REMOVED, VersionRange
from ..restore import (
    RESTORED_KINDS,
    RestoredObject,
    RestorePlan,
    as_naming,
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

VMR = kinds.VIRTUAL_MACHINE_RESTORE
# v1.9 removed VirtualMachineRestore: from then on only vmr-deprecated speaks.
UNTIL_REMOVED = VersionRange(until=V1_9_RESTORE_REMOVED)
SNAPSHOT_FIELD = "spec.virtualMachineSnapshotName"
REPLACEMENTS_FIELD = "spec.nameReplacements"
MODE_FIELD = "spec.restoreMode"
FORCED = "Forced"

# --- the restore plan, shared by the rules of one decision -------------------------


def _restore_state(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> RestoreState:
    """The restore's source, computed once per decision (source.snapshot_source)."""
    return snapshot_source(
        ctx,
        req.namespace,
        req.obj.spec.virtual_machine_snapshot_name,
        as_naming(req.obj.spec.name_replacements),
    )


def _plan(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext, *, disks: bool = False) -> RestorePlan | None:
    """The plan, or None when there is none. With `disks`, a plan whose disks could not
    be looked up records the VirtualDiskSnapshot kind as needed."""
    state = _restore_state(req, ctx)
    if state.plan is not None and disks and not state.disks_known:
        ctx.needs(kinds.VIRTUAL_DISK_SNAPSHOT)
    return state.plan


def _restore_uid(req: RuleRequest[VirtualMachineRestore]) -> str:
    """The restore's uid: objects carrying it in the restore annotation were created by
    this very restore and never conflict with it. A CREATE request often has no uid
    yet; then nothing is exempt."""
    return req.obj.metadata.uid or ""


def _created_by_restore(obj: KubeObject, uid: str) -> bool:
    return bool(uid) and obj.metadata.annotations.get(kinds.RESTORE_ANNOTATION) == uid


def _forced(req: RuleRequest[VirtualMachineRestore]) -> bool:
    return req.obj.spec.restore_mode == FORCED


def _replacement_entry(kind: str, name: str, to: str) -> str:
    """A nameReplacements entry as YAML flow style, to paste into the spec."""
    return f"{{from: {{kind: {kind}, name: {name}}}, to: {to}}}"


def _suggested_name(kind: str, name: str) -> str:
    limit = MAX_VM_NAME_LENGTH if kind == kinds.VIRTUAL_MACHINE else MAX_NAME_LENGTH
    suffix = "-restored"
    return name[: limit - len(suffix)].rstrip("-.") + suffix


def _rename_hint(obj: RestoredObject) -> str:
    """How to restore `obj` under another name: change the entry that renamed it, or
    add one. Ends the message (the entry is pasted as the last thing)."""
    suggestion = _suggested_name(obj.kind, obj.restored_name)
    if obj.replacement is not None:
        return f'set spec.nameReplacements[{obj.replacement}].to to a free name, e.g. "{suggestion}"'
    return (
        "restore it under another name with the spec.nameReplacements entry "
        f"- {_replacement_entry(obj.kind, obj.original_name, suggestion)}"
    )


# --- rules -------------------------------------------------------------------------


@rule(
    "vmr-snapshot-exists",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="the VirtualMachineSnapshot named by spec.virtualMachineSnapshotName exists",
)
def vmr_snapshot_exists(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    name = req.obj.spec.virtual_machine_snapshot_name
    if not name:
        yield Finding(
            f'VirtualMachineRestore "{req.name}" names no virtual machine snapshot: '
            "set spec.virtualMachineSnapshotName to the snapshot to restore from",
            SNAPSHOT_FIELD,
        )
        return
    if ctx.needs(kinds.VIRTUAL_MACHINE_SNAPSHOT) and ctx.view.get(
        VirtualMachineSnapshot, req.namespace, name
    ) is None:
        yield Finding(
            f'The virtual machine snapshot "{name}" not found in namespace "{req.namespace}": '
            "the restore would wait for it in Pending; name an existing snapshot "
            f"(kubectl get vmsnapshot -n {req.namespace})",
            SNAPSHOT_FIELD,
        )


@rule(
    "vmr-snapshot-ready",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="the snapshot is Ready, its Secret is readable and its VirtualDiskSnapshots are Ready",
)
def vmr_snapshot_ready(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    yield from snapshot_not_ready(_restore_state(req, ctx), ctx, req.namespace, SNAPSHOT_FIELD)


@rule(
    "vmr-name-replacements",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="nameReplacements give valid, distinct names to objects a restore creates",
)
def vmr_name_replacements(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    replacements: list[NameReplacement] = req.obj.spec.name_replacements
    if not replacements:
        return
    seen: dict[tuple[str, str], int] = {}
    for index, replacement in enumerate(replacements):
        kind = replacement.from_.kind or ""
        source_name = replacement.from_.name or ""
        entry = f"spec.nameReplacements[{index}]"
        to = replacement.to or ""
        reason = invalid_name_reason(to, kind)
        if reason:
            yield Finding(
                f'{entry}.to "{to}" {reason}; choose a name such as "{valid_name_like(to)}"',
                f"{entry}.to",
            )
        if kind and kind not in RESTORED_KINDS:
            close = next((k for k in RESTORED_KINDS if k.lower() == kind.lower()), None)
            fix = f'write "{close}"' if close else f"use one of {', '.join(RESTORED_KINDS)}"
            yield Finding(
                f'{entry}.from.kind "{kind}" is not a kind a restore creates, so the entry never '
                f"applies; {fix}, or omit from.kind to match any kind",
                f"{entry}.from.kind",
            )
        key = (kind, source_name)
        if key in seen:
            yield Finding(
                f"{entry} has the same from as spec.nameReplacements[{seen[key]}] "
                f"(kind {kind or '<any>'}, name {source_name}): only the first applies; remove one of them",
                f"{entry}.from",
            )
        else:
            seen[key] = index
    plan = _plan(req, ctx, disks=True)
    if plan is None:
        return
    vm = plan.vm
    # An entry without from.kind that renames the VM: the VM's length limit applies too.
    if (
        vm.replacement is not None
        and not replacements[vm.replacement].from_.kind
        and len(vm.restored_name) > MAX_VM_NAME_LENGTH
    ):
        entry = f"spec.nameReplacements[{vm.replacement}]"
        yield Finding(
            f'{entry}.to "{vm.restored_name}" renames virtual machine "{vm.original_name}" and '
            f"is {len(vm.restored_name)} characters long, but a virtual machine name must be at "
            f"most {MAX_VM_NAME_LENGTH}; choose a shorter name",
            f"{entry}.to",
        )
    by_name: dict[tuple[str, str], RestoredObject] = {}
    for obj in plan.objects:
        if not obj.restored_name:
            continue
        other = by_name.setdefault((obj.kind, obj.restored_name), obj)
        if other is obj or other.original_name == obj.original_name:
            continue
        yield Finding(
            f"nameReplacements give two restored {KIND_WORDS[obj.kind]}s the same name "
            f'"{obj.restored_name}" (from "{other.original_name}" and "{obj.original_name}"): only '
            "one of them could be created; give each its own name",
            REPLACEMENTS_FIELD,
        )


@rule(
    "vmr-name-conflict",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="(Safe mode) no VirtualMachine, VirtualDisk or VMBDA already exists under a restored name",
)
def vmr_name_conflict(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    mode = req.obj.spec.restore_mode
    if mode not in (None, "", "Safe"):
        return
    plan = _plan(req, ctx, disks=True)
    if plan is None:
        return
    uid = _restore_uid(req)
    for obj in plan.objects:
        model = CONFLICT_MODELS.get(obj.kind)
        if model is None or not obj.restored_name or not ctx.needs(obj.kind):
            continue
        existing = ctx.view.get(model, req.namespace, obj.restored_name)
        if existing is None or _created_by_restore(existing, uid):
            continue
        forced = (
            ", set spec.restoreMode: Forced to restore over it (its disks are replaced)"
            if obj.kind == kinds.VIRTUAL_MACHINE
            else ""
        )
        yield Finding(
            f'The {KIND_WORDS[obj.kind]} "{obj.restored_name}" already exists in namespace '
            f'"{req.namespace}"; delete it first{forced}, or {_rename_hint(obj)}',
            REPLACEMENTS_FIELD,
        )


def _attached_elsewhere(
    address: VirtualMachineIPAddress | VirtualMachineMACAddress,
    req: RuleRequest[VirtualMachineRestore],
    plan: RestorePlan,
) -> bool:
    """The existing address is attached to a VM; in Forced mode being attached to the
    VM being restored is no conflict."""
    if not address.attached:
        return False
    holder = address.status.virtual_machine_name
    return not (_forced(req) and holder and holder == plan.vm.restored_name)


def _in_use_message(
    req: RuleRequest[VirtualMachineRestore],
    plan: RestorePlan,
    obj: RestoredObject,
    existing: VirtualMachineIPAddress | VirtualMachineMACAddress,
    stored_address: str,
) -> str:
    """VMR-9 / VMR-11 in the platform's words, then how to fix it. Renaming the address
    helps only when the snapshot pins no address: a renamed copy asks for the same one."""
    holder = existing.status.virtual_machine_name
    user = f'virtual machine "{holder}"' if holder else "the virtual machine using it"
    fixes = [f"delete {user} or detach the address from it first"]
    if stored_address:
        fixes[0] += f' (a new name would not help: the snapshot holds the address "{stored_address}")'
    if holder and holder == plan.vm.restored_name and not _forced(req):
        fixes.append(f'set spec.restoreMode: Forced to restore over virtual machine "{holder}"')
    if not stored_address:
        fixes.append(_rename_hint(obj))
    return (
        f'The {KIND_WORDS[obj.kind]} "{obj.restored_name}" is already in use and cannot be used for '
        f"the restored virtual machine (attached to {user}); " + ", or ".join(fixes)
    )


def _taken_message(
    kind: str, address: str, other: VirtualMachineIPAddress | VirtualMachineMACAddress, reuse: str
) -> str:
    """VMR-10 / VMR-11 in the platform's words, then how to free the address."""
    words = KIND_WORDS[kind]
    holder = other.status.virtual_machine_name
    if other.attached:
        user = f'virtual machine "{holder}"' if holder else "a virtual machine"
        fix = f"{user} uses it: free it first (delete that virtual machine or give it another address)"
    else:
        fix = f'free it by deleting {words} "{other.name}"' + (f", or {reuse}" if reuse else "")
    return (
        f'The set address "{address}" is already in use by the different {words} "{other.name}" and '
        f"cannot be used for the restored virtual machine; {fix}"
    )


@rule(
    "vmr-ip-in-use",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="no VirtualMachineIPAddress under the restored name is attached to another VM",
)
def vmr_ip_in_use(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    plan = _plan(req, ctx)
    vmip = plan.vmip if plan is not None else None
    if plan is None or vmip is None or not vmip.restored_name:
        return
    if not ctx.needs(kinds.VIRTUAL_MACHINE_IP_ADDRESS):
        return
    existing = ctx.view.get(VirtualMachineIPAddress, req.namespace, vmip.restored_name)
    if existing is None or _created_by_restore(existing, _restore_uid(req)):
        return
    if _attached_elsewhere(existing, req, plan):
        yield Finding(
            _in_use_message(req, plan, vmip, existing, _stored_static_ip(plan)), REPLACEMENTS_FIELD
        )


def _stored_section(obj: RestoredObject | None, section: str) -> dict[str, Any]:
    """`spec` or `status` of a stored object ({} when absent or not an object)."""
    value = (obj.stored or {}).get(section) if obj is not None else None
    return value if isinstance(value, dict) else {}


def _stored_string(obj: RestoredObject | None, section: str, key: str) -> str:
    value = _stored_section(obj, section).get(key)
    return value if isinstance(value, str) else ""


def _stored_static_ip(plan: RestorePlan) -> str:
    return _stored_string(plan.vmip, "spec", "staticIP")


@rule(
    "vmr-ip-taken",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="no other VirtualMachineIPAddress holds the stored static IP",
)
def vmr_ip_taken(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    plan = _plan(req, ctx)
    if plan is None or plan.vmip is None:
        return
    address = _stored_static_ip(plan)
    if not address or not ctx.needs(kinds.VIRTUAL_MACHINE_IP_ADDRESS):
        return
    vmip = plan.vmip
    for other in sorted(ctx.view.ip_addresses_holding(req.namespace, address), key=lambda o: o.name):
        if other.name == vmip.restored_name:
            continue
        # An unattached address holding the IP can be reused by restoring onto its name.
        reuse = "restore onto it with the spec.nameReplacements entry - " + _replacement_entry(
            vmip.kind, vmip.original_name, other.name
        )
        yield Finding(_taken_message(vmip.kind, address, other, reuse), SNAPSHOT_FIELD)


@rule(
    "vmr-ip-mismatch",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="a Static VirtualMachineIPAddress under the restored name holds the stored IP",
)
def vmr_ip_mismatch(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    plan = _plan(req, ctx)
    vmip = plan.vmip if plan is not None else None
    if plan is None or vmip is None or not vmip.restored_name:
        return
    expected = _stored_static_ip(plan)
    if not expected and _stored_string(vmip, "spec", "type") == "Auto":
        expected = _stored_string(vmip, "status", "address")
    if not expected:
        return
    if not ctx.needs(kinds.VIRTUAL_MACHINE_IP_ADDRESS):
        return
    existing = ctx.view.get(VirtualMachineIPAddress, req.namespace, vmip.restored_name)
    if existing is None or _created_by_restore(existing, _restore_uid(req)):
        return
    if existing.spec.type == "Static" and existing.spec.static_ip != expected:
        yield Finding(
            f'The virtual machine ip address "{existing.name}" already exists with the static IP '
            f'"{existing.spec.static_ip or ""}", but the snapshot holds "{expected}": the restore would '
            "reuse it and the restored virtual machine would get another address; delete the "
            f"existing address first, or {_rename_hint(vmip)}",
            REPLACEMENTS_FIELD,
        )


def _stored_mac(obj: RestoredObject) -> str:
    """The stored MAC: spec.address (the platform overwrote it with status.address when
    it took the snapshot), else status.address."""
    return _stored_string(obj, "spec", "address") or _stored_string(obj, "status", "address")


@rule(
    "vmr-mac-conflict",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="no stored MAC address is in use by another VM or held by another VirtualMachineMACAddress",
)
def vmr_mac_conflict(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    plan = _plan(req, ctx)
    if plan is None:
        return
    macs = plan.of_kind(kinds.VIRTUAL_MACHINE_MAC_ADDRESS)
    if not macs or not ctx.needs(kinds.VIRTUAL_MACHINE_MAC_ADDRESS):
        return
    uid = _restore_uid(req)
    for mac in macs:
        if not mac.restored_name:
            continue
        existing = ctx.view.get(VirtualMachineMACAddress, req.namespace, mac.restored_name)
        address = _stored_mac(mac)
        if existing is not None and not _created_by_restore(existing, uid) and _attached_elsewhere(
            existing, req, plan
        ):
            yield Finding(_in_use_message(req, plan, mac, existing, address), REPLACEMENTS_FIELD)
        if not address:
            continue
        for other in sorted(ctx.view.mac_addresses_holding(req.namespace, address), key=lambda o: o.name):
            if other.name != mac.restored_name:
                yield Finding(_taken_message(mac.kind, address, other, ""), SNAPSHOT_FIELD)


@rule(
    "vmr-secret-mismatch",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="a Secret under the restored provisioning Secret's name holds the stored data",
)
def vmr_secret_mismatch(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    plan = _plan(req, ctx)
    mismatch = secret_mismatch(plan, ctx, req.namespace) if plan is not None else None
    if plan is None or mismatch is None:
        return
    secret, differing = mismatch
    # The platform renames userDataRef with the Secret, never sysprepRef.
    provisioning = _stored_section(plan.vm, "spec").get("provisioning")
    sysprep = provisioning.get("sysprepRef") if isinstance(provisioning, dict) else None
    by_sysprep = isinstance(sysprep, dict) and sysprep.get("name") == secret.original_name
    fix = (
        "delete it or put the stored data back (a sysprep Secret cannot be renamed by a restore)"
        if by_sysprep
        else f"delete it or put the stored data back, or {_rename_hint(secret)}"
    )
    yield Finding(
        f'The provisioner secret "{secret.restored_name}" already exists and does not have the same '
        f"data content (differing keys: {', '.join(differing)}); {fix}",
        REPLACEMENTS_FIELD,
    )


@rule(
    "vmr-forced-needs-vm",
    kinds=(VMR,),
    versions=UNTIL_REMOVED,
    summary="restoreMode Forced restores over an existing virtual machine",
)
def vmr_forced_needs_vm(req: RuleRequest[VirtualMachineRestore], ctx: RuleContext) -> Iterator[Finding]:
    if not _forced(req):
        return
    plan = _plan(req, ctx)
    if plan is None or not plan.vm.restored_name or not ctx.needs(kinds.VIRTUAL_MACHINE):
        return
    if ctx.view.get(VirtualMachine, req.namespace, plan.vm.restored_name) is None:
        yield Finding(
            f'Restoration with `Forced` mode can be applied only to an existing virtual machine: '
            f'virtual machine "{plan.vm.restored_name}" does not exist in namespace "{req.namespace}"; '
            "restore it with spec.restoreMode: Safe (or omit the field)",
            MODE_FIELD,
        )
