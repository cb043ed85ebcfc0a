"""The source of a restore or clone from a VirtualMachineSnapshot, shared by the
VirtualMachineRestore rules (vmr.py) and the operation rules (op.py): the snapshot, its
Secret decoded and the plan of the objects written (`policies.restore`), computed once
per decision; and the snapshot's readiness as the platform judges it.

One mechanism, one place: no rule decodes a snapshot Secret or names restored objects
any other way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .. import kinds
from ..catalogue import Finding, RuleContext
from ..models import (
    KubeObject,
    Secret,
    VirtualDisk,
    VirtualDiskSnapshot,
    VirtualMachine,
    VirtualMachineBlockDeviceAttachment,
    VirtualMachineSnapshot,
)
from ..restore import (
    Naming,
    RestoredObject,
    RestorePlan,
    SnapshotContentError,
    decode_snapshot_secret,
    plan_restore,
    secret_data_bytes,
)

# Kubernetes' DNS-1123 subdomain (k8s.io/apimachinery validation.IsDNS1123Subdomain).
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_NAME_LENGTH = 253
# The platform's MaxVirtualMachineNameLen (`common/validate/validate.go`).
MAX_VM_NAME_LENGTH = 63

# How the platform's messages call each kind a restore creates.
KIND_WORDS = {
    kinds.VIRTUAL_MACHINE: "virtual machine",
    kinds.VIRTUAL_DISK: "virtual disk",
    kinds.VIRTUAL_MACHINE_IP_ADDRESS: "virtual machine ip address",
    kinds.VIRTUAL_MACHINE_MAC_ADDRESS: "virtual machine mac address",
    kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT: "virtual machine block device attachment",
    kinds.SECRET: "provisioner secret",
}
# The kinds vmr-name-conflict looks up under their restored names.
CONFLICT_MODELS: dict[str, type[KubeObject]] = {
    kinds.VIRTUAL_MACHINE: VirtualMachine,
    kinds.VIRTUAL_DISK: VirtualDisk,
    kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT: VirtualMachineBlockDeviceAttachment,
}



def invalid_name_reason(name: str, kind: str | None) -> str | None:
    if kind == kinds.VIRTUAL_MACHINE and len(name) > MAX_VM_NAME_LENGTH:
        return f"is {len(name)} characters long, but a virtual machine name must be at most {MAX_VM_NAME_LENGTH}"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long, but a name must be at most {MAX_NAME_LENGTH}"
    if not DNS1123_SUBDOMAIN.fullmatch(name):
        return (
            "is not a valid name: a lowercase RFC 1123 subdomain must consist of lower case "
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character"
        )
    return None


def valid_name_like(name: str, limit: int = MAX_VM_NAME_LENGTH) -> str:
    """A valid name close to `name`, to suggest in a message."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    return cleaned[:limit].rstrip("-.") or "restored"


@dataclass(frozen=True)
class RestoreState:
    """What one decision knows about the restore's source: the snapshot (None when
    unnamed, missing or its kind not given), its decoded plan, or why the Secret cannot
    be read. `disks_known` is False when the view has no VirtualDiskSnapshot kind, so
    the plan lacks the restored disks; rules that need them call `ctx.needs`."""

    snapshot: VirtualMachineSnapshot | None = None
    secret: Secret | None = None
    plan: RestorePlan | None = None
    error: SnapshotContentError | None = None
    disks_known: bool = True


def snapshot_source(
    ctx: RuleContext,
    namespace: str,
    snapshot_name: str | None,
    naming: Naming,
    *,
    addresses: bool = True,
) -> RestoreState:
    """What a restore or clone from the snapshot `snapshot_name` works from, computed
    once per decision (the kinds it lacked count for every rule that reads it): the
    snapshot, its Secret decoded, and the plan of the objects written, named by
    `naming` (`addresses`: whether the VMIP and VMMACs are written, as by a restore;
    a clone gets new addresses)."""

    def compute(inner: RuleContext) -> RestoreState:
        name = snapshot_name
        if not name or not inner.needs(kinds.VIRTUAL_MACHINE_SNAPSHOT):
            return RestoreState()
        snapshot = inner.view.get(VirtualMachineSnapshot, namespace, name)
        if snapshot is None:
            return RestoreState()
        secret_name = snapshot.status.virtual_machine_snapshot_secret_name
        if not secret_name or not inner.needs(kinds.SECRET):
            return RestoreState(snapshot)
        secret = inner.view.get(Secret, namespace, secret_name)
        if secret is None:
            return RestoreState(snapshot)
        content = decode_snapshot_secret(secret_name, secret.data)
        if isinstance(content, SnapshotContentError):
            return RestoreState(snapshot, secret, error=content)
        disk_snapshot_names = snapshot.status.virtual_disk_snapshot_names
        # Not `needs`: only the rules that read the disks lack them (they ask themselves).
        disks_known = not disk_snapshot_names or inner.view.has_kind(kinds.VIRTUAL_DISK_SNAPSHOT)
        disk_snapshots: dict[str, VirtualDiskSnapshot] = {}
        if disks_known:
            for disk_snapshot_name in disk_snapshot_names:
                found = inner.view.get(VirtualDiskSnapshot, namespace, disk_snapshot_name)
                if found is not None:
                    disk_snapshots[disk_snapshot_name] = found
        plan = plan_restore(
            namespace, naming, content, disk_snapshot_names, disk_snapshots, addresses=addresses
        )
        return RestoreState(snapshot, secret, plan, disks_known=disks_known)

    # One plan per decision: the request names one source (a vmop Clone's plan comes
    # from the VM, see op.py, under another key).
    state: RestoreState = ctx.shared("restore-plan", compute)
    return state



def snapshot_not_ready(
    state: RestoreState, ctx: RuleContext, namespace: str, field: str
) -> Iterator[Finding]:
    """vmr-snapshot-ready and op-snapshot-ready: the snapshot is being deleted, not
    Ready, its Secret is missing or unreadable, or a VirtualDiskSnapshot of it is missing
    or not Ready. `field` is where the request names the snapshot."""
    snapshot = state.snapshot
    if snapshot is None:
        return  # vmr-snapshot-exists reports it
    name = snapshot.name
    if snapshot.deleting:
        yield Finding(
            f'The virtual machine snapshot "{name}" is in the process of deleting: it cannot be '
            "restored; restore from another snapshot",
            field,
        )
        return
    ready = snapshot.condition("VirtualMachineSnapshotReady")
    if snapshot.phase != "Ready" or ready is None or ready.status != "True":
        if snapshot.phase != "Ready":
            why = f'it is in the "{snapshot.phase or "unknown"}" phase'
        elif ready is None:
            why = "it has no VirtualMachineSnapshotReady condition"
        else:
            why = f"its VirtualMachineSnapshotReady condition is {ready.status}" + (
                f" ({ready.message.rstrip('.')})" if ready.message else ""
            )
        yield Finding(
            f'Waiting for the virtual machine snapshot "{name}" to be ready for use: {why}; '
            f"wait until it is Ready (kubectl get vmsnapshot {name} -n {namespace}), or take a "
            "new snapshot if it Failed",
            field,
        )
        return
    secret_name = snapshot.status.virtual_machine_snapshot_secret_name
    if not secret_name:
        yield Finding(
            f'The virtual machine snapshot "{name}" has no snapshot Secret '
            "(status.virtualMachineSnapshotSecretName is empty), so there is nothing to restore "
            "from; take a new snapshot",
            field,
        )
    elif state.error is not None:
        yield Finding(
            f'The snapshot Secret "{secret_name}" of virtual machine snapshot "{name}" cannot be '
            f'read: its data key "{state.error.key}" {state.error.problem}; the Secret must stay as '
            "the platform wrote it, take a new snapshot",
            field,
        )
    elif state.secret is None and ctx.needs(kinds.SECRET):
        yield Finding(
            f'The snapshot Secret "{secret_name}" of virtual machine snapshot "{name}" not found: '
            "the stored virtual machine is lost and cannot be restored; take a new snapshot",
            field,
        )
    disk_snapshot_names = snapshot.status.virtual_disk_snapshot_names
    if not disk_snapshot_names or not ctx.needs(kinds.VIRTUAL_DISK_SNAPSHOT):
        return
    for disk_snapshot_name in disk_snapshot_names:
        disk_snapshot = ctx.view.get(VirtualDiskSnapshot, namespace, disk_snapshot_name)
        if disk_snapshot is None:
            yield Finding(
                f'The virtual disk snapshot "{disk_snapshot_name}" not found: virtual machine '
                f'snapshot "{name}" has lost it and its disk cannot be restored; take a new snapshot',
                field,
            )
        elif disk_snapshot.phase != "Ready":
            yield Finding(
                f'The virtual disk snapshot "{disk_snapshot_name}" of virtual machine snapshot '
                f'"{name}" is not ready to use: it is in the "{disk_snapshot.phase or "unknown"}" '
                "phase; wait until it is Ready, or take a new snapshot if it Failed",
                field,
            )


def secret_mismatch(plan: RestorePlan, ctx: RuleContext, namespace: str) -> tuple[RestoredObject, list[str]] | None:
    """The provisioning Secret the plan writes, and the keys in which an existing Secret
    under its name differs (None when there is none, or it holds the same data)."""
    secret = plan.provisioning_secret
    if secret is None or not secret.restored_name or not ctx.needs(kinds.SECRET):
        return None
    existing = ctx.view.get(Secret, namespace, secret.restored_name)
    if existing is None:
        return None
    stored = secret_data_bytes((secret.stored or {}).get("data"))
    current = secret_data_bytes(existing.data)
    if stored == current:
        return None
    return secret, sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
