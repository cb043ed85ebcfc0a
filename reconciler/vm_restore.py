"""The VirtualMachineRestore controller: "Restore flow R1" of the reference (platform
v1.8.4, the last with VirtualMachineRestore), Safe mode.

    ""         -> Pending
    Pending    -> restoreMode Forced -> Failed (this reconciler restores in Safe mode
                  only); the snapshot not ready (VMR-1..5) -> stays Pending with
                  VirtualMachineSnapshotReadyToUse False; then the engine's vmr-* rules
                  on a view read *now* (the cluster may have changed since admission):
                  a denial -> Failed (VirtualMachineRestoreConflict, the rule's
                  message); else create, in order, the VMIP, the VMMACs, the VM, the
                  VirtualDisks (dataSource ObjectRef to their VirtualDiskSnapshots), the
                  VMBDAs and the provisioning Secret, built by
                  `policies.restore.build_restored_objects` (nameReplacements applied,
                  annotation virtualization.deckhouse.io/vmrestore: <restore uid>)
                  -> InProgress
    InProgress -> Ready (the platform does not wait for the VM or its disks either)

Crash safety: every object carries the restore's uid in its annotation, so the rules
exempt what this restore already created and a restarted reconciler creates only what
is missing. An object found under a planned name is accepted only when it carries the
annotation, or is one the platform reuses (an unattached VMIP or VMMAC, a Secret with
the same data); anything else fails the restore as a conflict.

Not reproduced: step 8 of R1 (deleting every VMBDA of the *original* VM name that
lacks the annotation, even when the VM is renamed): this reconciler never deletes
objects it did not create.
"""

from __future__ import annotations

from policies import kinds
from policies.catalogue import Operation, Outcome
from policies.engine import Decision, EngineRequest
from policies.models import VirtualDiskSnapshot, VirtualMachineRestore
from policies.restore import (
    DiskMetadata,
    SnapshotContentError,
    build_restored_objects,
    decode_snapshot_secret,
    original_disk_metadata,
    plan_restore,
    secret_data_bytes,
)
from policies.rules.source import KIND_WORDS

from .objects import (
    AGAIN,
    DONE,
    FAILED,
    IN_PROGRESS,
    PENDING,
    READY,
    TERMINATING,
    Context,
    ForeignObject,
    JSONObject,
    Result,
    StatusBuilder,
    ViewReader,
    annotations_of,
    condition,
    create_once,
    deleting,
    meta,
    name_of,
    phase_of,
    spec_of,
    status_of,
    uid_of,
    write_status,
)

VMR = kinds.VIRTUAL_MACHINE_RESTORE
VMS = kinds.VIRTUAL_MACHINE_SNAPSHOT

# Condition types and reasons (`api/core/v1alpha2/vm-restore-condition/condition.go`).
SNAPSHOT_READY_TO_USE = "VirtualMachineSnapshotReadyToUse"
SNAPSHOT_NOT_FOUND = "VirtualMachineSnapshotNotFound"
SNAPSHOT_NOT_READY = "VirtualMachineSnapshotNotReady"
RESTORE_READY = "VirtualMachineRestoreReady"
SNAPSHOT_NOT_READY_TO_USE = "VirtualMachineSnapshotNotReadyToUse"
RESTORE_CONFLICT = "VirtualMachineRestoreConflict"
RESTORE_FAILED = "VirtualMachineRestoreFailed"
UNKNOWN = "Unknown"

FORCED_UNSUPPORTED = (
    "Restoration with `Forced` mode is not supported by the dvp-snapguard reconciler, which restores in "
    "`Safe` mode only: delete the virtual machine and its disks and restore with `Safe` mode, or restore "
    "under new names with spec.nameReplacements."
)

# The rules whose denial means "the snapshot is not ready yet": the platform waits.
SNAPSHOT_RULES = ("vmr-snapshot-exists", "vmr-snapshot-ready")




class Waiting(Exception):
    """The snapshot is not ready to use: stay Pending with this ReadyToUse reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _attached(obj: JSONObject) -> bool:
    status = status_of(obj)
    return status.get("phase") == "Attached" or bool(status.get("virtualMachineName"))


def foreign_message(kind: str, name: str) -> str:
    """The platform's conflict messages (VMR-6 .. VMR-12)."""
    if kind in (kinds.VIRTUAL_MACHINE_IP_ADDRESS, kinds.VIRTUAL_MACHINE_MAC_ADDRESS):
        return f'The {KIND_WORDS[kind]} "{name}" is already in use and cannot be used for the restored virtual machine.'
    if kind == kinds.SECRET:
        return f'The provisioner secret "{name}" already exists and does not have the same data content.'
    return f'The {KIND_WORDS.get(kind, kind)} "{name}" already exists.'


class RestoreController:
    kind = VMR

    def __init__(self, context: Context) -> None:
        self.context = context
        self.client = context.client

    def reconcile(self, namespace: str, name: str) -> Result:
        vmr = self.client.get(VMR, namespace, name)
        if vmr is None:
            return DONE
        phase = phase_of(vmr)
        if deleting(vmr):
            # Restored objects outlive their restore: nothing to clean up.
            if phase != TERMINATING:
                write_status(self.client, vmr, StatusBuilder(vmr).phase(TERMINATING))
            return DONE
        if phase in (READY, FAILED, TERMINATING):
            return DONE
        if phase == "":
            write_status(self.client, vmr, StatusBuilder(vmr).phase(PENDING))
            return AGAIN
        if phase == IN_PROGRESS:
            builder = StatusBuilder(vmr).phase(READY).condition(RESTORE_READY, "True", "VirtualMachineRestoreReady")
            write_status(self.client, vmr, builder)
            return DONE
        if spec_of(vmr).get("restoreMode") == "Forced":
            return self._fail(vmr, RESTORE_FAILED, FORCED_UNSUPPORTED)
        try:
            return self._restore(vmr)
        except Waiting as waiting:
            snapshot = str(spec_of(vmr).get("virtualMachineSnapshotName") or "")
            builder = (
                StatusBuilder(vmr)
                .phase(PENDING)
                .condition(SNAPSHOT_READY_TO_USE, "False", waiting.reason, waiting.message)
                .condition(
                    RESTORE_READY,
                    "False",
                    SNAPSHOT_NOT_READY_TO_USE,
                    f'Waiting for the virtual machine snapshot "{snapshot}" to be ready to use.',
                )
            )
            write_status(self.client, vmr, builder)
            return Result(requeue_after=self.context.poll_interval)

    def _fail(self, vmr: JSONObject, reason: str, message: str) -> Result:
        builder = StatusBuilder(vmr).phase(FAILED).condition(RESTORE_READY, "False", reason, message)
        write_status(self.client, vmr, builder)
        return DONE

    # --- Pending ------------------------------------------------------------------

    def _snapshot(self, vmr: JSONObject, reader: ViewReader) -> tuple[JSONObject, JSONObject, dict[str, JSONObject]]:
        """The snapshot, its Secret and its VirtualDiskSnapshots, or Waiting (VMR-1..5)."""
        namespace = meta(vmr)["namespace"]
        name = str(spec_of(vmr).get("virtualMachineSnapshotName") or "")
        vms = reader.get(VMS, namespace, name)
        if vms is None:
            raise Waiting(SNAPSHOT_NOT_FOUND, f'The virtual machine snapshot "{name}" not found.')
        if deleting(vms):
            raise Waiting(SNAPSHOT_NOT_READY, f'The virtual machine snapshot "{name}" is in the process if deleting.')
        ready = condition(vms, "VirtualMachineSnapshotReady")
        if phase_of(vms) != READY or ready is None or ready.get("status") != "True":
            raise Waiting(SNAPSHOT_NOT_READY, f'Waiting for the virtual machine snapshot "{name}" to be ready for use.')
        if meta(vms).get("generation") != status_of(vms).get("observedGeneration"):
            raise Waiting(
                SNAPSHOT_NOT_READY,
                f'Waiting for the virtual machine snapshot "{name}" to be observed in its latest state generation.',
            )
        disk_snapshots: dict[str, JSONObject] = {}
        for disk_snapshot in status_of(vms).get("virtualDiskSnapshotNames") or []:
            found = reader.get(kinds.VIRTUAL_DISK_SNAPSHOT, namespace, str(disk_snapshot))
            if found is None:
                raise Waiting(SNAPSHOT_NOT_READY, f'The virtual disk snapshot "{disk_snapshot}" not found.')
            disk_snapshots[str(disk_snapshot)] = found
        secret = reader.get(kinds.SECRET, namespace, str(status_of(vms).get("virtualMachineSnapshotSecretName") or ""))
        if secret is None:
            raise Waiting(
                SNAPSHOT_NOT_READY,
                f'The snapshot secret of the virtual machine snapshot "{name}" not found.',
            )
        return vms, secret, disk_snapshots

    def _disk_metadata(self, namespace: str, disk_snapshots: dict[str, JSONObject]) -> dict[str, DiskMetadata]:
        """The original disks' labels and annotations, saved on their VolumeSnapshots."""
        metadata: dict[str, DiskMetadata] = {}
        for name, disk_snapshot in disk_snapshots.items():
            vs_name = status_of(disk_snapshot).get("volumeSnapshotName")
            vs = self.client.get(kinds.VOLUME_SNAPSHOT, namespace, str(vs_name)) if vs_name else None
            if vs is not None:
                metadata[name] = original_disk_metadata(annotations_of(vs))
        return metadata

    def _decide(self, vmr: JSONObject, reader: ViewReader) -> Decision:
        request = EngineRequest(Operation.CREATE, VMR, meta(vmr)["namespace"], name_of(vmr), vmr, uid=uid_of(vmr))
        return self.context.engine.decide(request, reader.view)

    def _restore(self, vmr: JSONObject) -> Result:
        namespace = meta(vmr)["namespace"]
        uid = uid_of(vmr)
        reader = ViewReader.new(self.client)
        vms, secret, disk_snapshots = self._snapshot(vmr, reader)
        secret_name = name_of(secret)
        content = decode_snapshot_secret(secret_name, secret.get("data") or {})
        if isinstance(content, SnapshotContentError):
            raise Waiting(SNAPSHOT_NOT_READY, content.message[0].upper() + content.message[1:] + ".")
        models = {name: VirtualDiskSnapshot.model_validate(raw) for name, raw in disk_snapshots.items()}
        names = [str(n) for n in status_of(vms).get("virtualDiskSnapshotNames") or []]
        replacements = VirtualMachineRestore.model_validate(vmr).spec.name_replacements
        plan = plan_restore(namespace, replacements, content, names, models)
        # What the rules look up under the restored names, read now.
        for obj in plan.objects:
            reader.get(obj.kind, namespace, obj.restored_name)
        for kind in (
            kinds.VIRTUAL_MACHINE,
            kinds.VIRTUAL_DISK,
            kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT,
            kinds.SECRET,
        ):
            reader.view.mark_given(kind)
        reader.list(kinds.VIRTUAL_MACHINE_IP_ADDRESS, namespace)
        reader.list(kinds.VIRTUAL_MACHINE_MAC_ADDRESS, namespace)
        decision = self._decide(vmr, reader)
        if decision.violations:
            first = decision.violations[0]
            if first.rule in SNAPSHOT_RULES:
                raise Waiting(SNAPSHOT_NOT_READY, first.message)
            errored = {r.rule for r in decision.results if r.outcome is Outcome.ERROR}
            reason = RESTORE_FAILED if first.rule in errored or first.rule == "object-invalid" else RESTORE_CONFLICT
            return self._fail(vmr, reason, first.message)

        objects = build_restored_objects(plan, uid, self._disk_metadata(namespace, disk_snapshots))
        for desired in objects:

            def reusable(existing: JSONObject, desired: JSONObject = desired) -> bool:
                return self._reusable(existing, desired, uid)

            try:
                create_once(self.client, desired, reusable)
            except ForeignObject as foreign:
                return self._fail(vmr, RESTORE_CONFLICT, foreign_message(desired["kind"], name_of(foreign.existing)))
        builder = (
            StatusBuilder(vmr)
            .phase(IN_PROGRESS)
            .condition(SNAPSHOT_READY_TO_USE, "True", "VirtualMachineSnapshotReadyToUse")
            .condition(
                # The platform's reason here is indeed VirtualMachineSnapshotNotReady (R1 step 11).
                RESTORE_READY,
                "False",
                SNAPSHOT_NOT_READY,
                f'The virtual machine "{plan.vm.original_name}" is in the process of restore.',
            )
        )
        write_status(self.client, vmr, builder)
        return AGAIN

    @staticmethod
    def _reusable(existing: JSONObject, desired: JSONObject, uid: str) -> bool:
        """An object found under a planned name: created by this restore, or one the
        platform reuses as it is (an unattached address, a Secret with the same data)."""
        if uid and annotations_of(existing).get(kinds.RESTORE_ANNOTATION) == uid:
            return True
        kind = desired["kind"]
        if kind == kinds.SECRET:
            return secret_data_bytes(existing.get("data")) == secret_data_bytes(desired.get("data"))
        if kind in (kinds.VIRTUAL_MACHINE_IP_ADDRESS, kinds.VIRTUAL_MACHINE_MAC_ADDRESS):
            return not _attached(existing)
        return False
