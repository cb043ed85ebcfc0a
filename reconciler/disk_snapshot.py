"""The VirtualDiskSnapshot controller: the platform's phase machine (reference §1.6)
with its condition types, reasons and messages, minus KubeVirt and CSI.

    ""         -> Pending (after the cleanup finalizer is on the VDS)
    Pending    -> the engine's vds-* rules on a fresh view: a denial -> Failed with the
                  platform's reason and message; the VM attached, not Stopped, not
                  frozen and unable to freeze with requiredConsistency -> Failed
                  PotentiallyInconsistent; else -> InProgress (Snapshotting)
    InProgress -> (no VolumeSnapshot yet) rules again, freeze the VM if it runs, then
                  create `d8v-vds-<name>-<uid>`; wait for readyToUse (an error ->
                  Failed); consistent: true when the VM is absent, Stopped or frozen
                  (else Failed if requiredConsistency); thaw; -> Ready
    Ready      -> the VolumeSnapshot gone or not ready -> Failed (Lost)
    deletion   -> Terminating; protection finalizer off the VolumeSnapshot, delete it;
                  thaw; cleanup finalizer off the VDS

Every step is one write followed by a requeue, and every step can be repeated: the
VolumeSnapshot's name is deterministic and it is accepted on a second sight only when
its owner reference names this VDS's uid.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies import kinds
from policies.catalogue import Operation
from policies.engine import Decision, EngineRequest

from . import freeze as fs
from .objects import (
    ACCESS_MODE_ANNOTATION,
    AGAIN,
    DONE,
    FAILED,
    IN_PROGRESS,
    PENDING,
    READY,
    STORAGE_CLASS_ANNOTATION,
    TERMINATING,
    VD_HAD_OWNER_REFERENCE_ANNOTATION,
    VD_ORIGINAL_ANNOTATIONS_ANNOTATION,
    VD_ORIGINAL_LABELS_ANNOTATION,
    VD_ORIGINAL_SIZE_ANNOTATION,
    VDS_CLEANUP_FINALIZER,
    VDS_PROTECTION_FINALIZER,
    VOLUME_MODE_ANNOTATION,
    Context,
    ForeignObject,
    JSONObject,
    Result,
    StatusBuilder,
    ViewReader,
    add_finalizer,
    annotations_of,
    create_once,
    deleting,
    ensure_period,
    finalizers_of,
    json_annotation,
    meta,
    name_of,
    owned_by,
    owner_reference,
    phase_of,
    remove_finalizer,
    spec_of,
    status_of,
    uid_of,
    volume_snapshot_name,
    write_status,
)

VDS = kinds.VIRTUAL_DISK_SNAPSHOT
VS = kinds.VOLUME_SNAPSHOT

# Condition types and reasons (`api/core/v1alpha2/vdscondition/condition.go`).
VIRTUAL_DISK_READY = "VirtualDiskReady"
NOT_READY_FOR_SNAPSHOTTING = "VirtualDiskNotReadyForSnapshotting"
SNAPSHOT_READY = "VirtualDiskSnapshotReady"
WAITING_FOR_THE_DISK = "WaitingForTheVirtualDisk"
POTENTIALLY_INCONSISTENT = "PotentiallyInconsistent"
LOST = "Lost"
FILESYSTEM_FREEZING = "FileSystemFreezing"
FILESYSTEM_UNFREEZING = "FileSystemUnfreezing"
SNAPSHOTTING = "Snapshotting"
SNAPSHOT_FAILED = "VirtualDiskSnapshotFailed"
UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Failure:
    """A failed precondition: the VirtualDiskSnapshotReady reason and message, and
    the VirtualDiskReady condition when the disk is what failed."""

    reason: str
    message: str
    disk_ready_message: str | None = None


@dataclass(frozen=True)
class Checked:
    disk: JSONObject
    pvc: JSONObject
    vm: JSONObject | None


def required_consistency(vds: JSONObject) -> bool:
    return spec_of(vds).get("requiredConsistency") is not False


def inconsistent_message(disk: str, vm: JSONObject) -> str:
    base = f'Cannot take a consistent snapshot of virtual disk "{disk}" attached to virtual machine "{name_of(vm)}"'
    if not fs.agent_ready(vm):
        return base + ": virtual machine agent is not ready and the virtual machine cannot be frozen."
    return base + "."


def volume_snapshot_annotations(disk: JSONObject, pvc: JSONObject) -> dict[str, str]:
    """§1.7: what the restore needs to know about the source disk and its PVC."""
    annotations: dict[str, str] = {}
    pvc_spec = spec_of(pvc)
    if pvc_spec.get("storageClassName"):
        annotations[STORAGE_CLASS_ANNOTATION] = str(pvc_spec["storageClassName"])
    if pvc_spec.get("volumeMode"):
        annotations[VOLUME_MODE_ANNOTATION] = str(pvc_spec["volumeMode"])
    access_modes = status_of(pvc).get("accessModes") or []
    if access_modes:
        annotations[ACCESS_MODE_ANNOTATION] = ",".join(str(mode) for mode in access_modes)
    disk_annotations = annotations_of(disk)
    if disk_annotations:
        annotations[VD_ORIGINAL_ANNOTATIONS_ANNOTATION] = json_annotation(disk_annotations)
    labels = meta(disk).get("labels")
    if isinstance(labels, dict) and labels:
        annotations[VD_ORIGINAL_LABELS_ANNOTATION] = json_annotation({str(k): str(v) for k, v in labels.items()})
    size = (spec_of(disk).get("persistentVolumeClaim") or {}).get("size")
    if not size:
        size = ((pvc_spec.get("resources") or {}).get("requests") or {}).get("storage")
    if size:
        annotations[VD_ORIGINAL_SIZE_ANNOTATION] = str(size)
    if any(
        isinstance(ref, dict) and ref.get("kind") == kinds.VIRTUAL_MACHINE
        for ref in meta(disk).get("ownerReferences") or []
    ):
        annotations[VD_HAD_OWNER_REFERENCE_ANNOTATION] = "true"
    return annotations


def desired_volume_snapshot(vds: JSONObject, disk: JSONObject, pvc: JSONObject) -> JSONObject:
    spec: JSONObject = {"source": {"persistentVolumeClaimName": name_of(pvc)}}
    # v0.14 - v0.23 snapshots name their VolumeSnapshotClass; later ones leave it to the
    # CSI driver's default class.
    class_name = spec_of(vds).get("volumeSnapshotClassName")
    if class_name:
        spec["volumeSnapshotClassName"] = class_name
    metadata: JSONObject = {
        "name": volume_snapshot_name(vds),
        "namespace": meta(vds)["namespace"],
        "ownerReferences": [owner_reference(vds)],
        "finalizers": [VDS_PROTECTION_FINALIZER],
    }
    annotations = volume_snapshot_annotations(disk, pvc)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": kinds.KINDS[VS].api_version, "kind": VS, "metadata": metadata, "spec": spec}


class DiskSnapshotController:
    kind = VDS

    def __init__(self, context: Context) -> None:
        self.context = context
        self.client = context.client

    # --- entry --------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Result:
        vds = self.client.get(VDS, namespace, name)
        if vds is None:
            # Gone without our finalizer (or after it): it may have held a freeze.
            fs.release_orphans(self.client, namespace)
            return DONE
        if deleting(vds):
            return self._delete(vds)
        phase = phase_of(vds)
        if phase in ("", PENDING, IN_PROGRESS):
            # Before anything is created: whatever we create, deletion cleans up.
            vds = add_finalizer(self.client, vds, VDS_CLEANUP_FINALIZER)
        if phase == "":
            write_status(self.client, vds, StatusBuilder(vds).phase(PENDING))
            return AGAIN
        if phase == PENDING:
            return self._pending(vds)
        if phase == IN_PROGRESS:
            return self._in_progress(vds)
        if phase == READY:
            return self._ready(vds)
        if phase == FAILED:
            self._release(vds)
        return DONE

    # --- preconditions ------------------------------------------------------------

    def _decide(self, vds: JSONObject, reader: ViewReader) -> Decision:
        request = EngineRequest(
            Operation.CREATE, VDS, meta(vds)["namespace"], name_of(vds), vds, uid=uid_of(vds)
        )
        return self.context.engine.decide(request, reader.view)

    def _check(self, vds: JSONObject) -> Failure | Checked:
        """The preconditions, decided by the engine's vds-* rules on what the cluster
        holds now, reported as the platform reports them."""
        namespace = meta(vds)["namespace"]
        reader = ViewReader.new(self.client)
        disk_name = str(spec_of(vds).get("virtualDiskName") or "")
        disk = reader.get(kinds.VIRTUAL_DISK, namespace, disk_name)
        target = status_of(disk or {}).get("target") or {}
        pvc_name = str(target.get("persistentVolumeClaimName") or "")
        pvc = reader.get(kinds.PERSISTENT_VOLUME_CLAIM, namespace, pvc_name)
        attached = [
            str(entry.get("name"))
            for entry in status_of(disk or {}).get("attachedToVirtualMachines") or []
            if isinstance(entry, dict) and entry.get("name")
        ]
        machines = reader.get_many(kinds.VIRTUAL_MACHINE, namespace, attached)
        storage_class = spec_of(pvc or {}).get("storageClassName")
        reader.get(kinds.STORAGE_CLASS, None, str(storage_class or ""))
        class_name = spec_of(vds).get("volumeSnapshotClassName")
        if class_name:
            reader.get(kinds.VOLUME_SNAPSHOT_CLASS, None, str(class_name))
        decision = self._decide(vds, reader)
        failure = self._failure(decision, disk_name, disk, pvc_name, pvc, machines)
        if failure is not None:
            return failure
        assert disk is not None and pvc is not None  # the rules passed
        vm_name = fs.attached_vm_name(disk)
        return Checked(disk, pvc, machines.get(vm_name) if vm_name else None)

    @staticmethod
    def _failure(
        decision: Decision,
        disk_name: str,
        disk: JSONObject | None,
        pvc_name: str,
        pvc: JSONObject | None,
        machines: dict[str, JSONObject],
    ) -> Failure | None:
        fired = {violation.rule: violation.message for violation in decision.violations}
        # Without a disk or a PVC there is nothing to snapshot, whatever the policy
        # says of the rules that report them.
        if pvc is None:
            fired.setdefault("vds-disk-pvc-bound", "")
        if not fired:
            return None
        if disk is None or "vds-disk-exists" in fired:
            return Failure(
                WAITING_FOR_THE_DISK,
                f'Cannot take a snapshot: the virtual disk "{disk_name}" does not exist.',
                f'The virtual disk "{disk_name}" was not found.',
            )
        if "vds-disk-ready" in fired or "vds-disk-resizing" in fired:
            disk_phase = phase_of(disk)
            if deleting(disk):
                detail = f'The virtual disk "{disk_name}" is in the process of deletion.'
            elif disk_phase != "Ready":
                detail = (
                    f'The virtual disk "{disk_name}" is in the "{disk_phase}" phase: '
                    "waiting for it to reach the Ready phase."
                )
            else:
                snapshotting: JSONObject = next(
                    (c for c in status_of(disk).get("conditions") or [] if c.get("type") == "Snapshotting"), {}
                )
                detail = str(snapshotting.get("message") or fired.get("vds-disk-ready") or "")
            return Failure(
                WAITING_FOR_THE_DISK, f'Cannot take a snapshot: the virtual disk "{disk_name}" is not ready.', detail
            )
        if "vds-disk-pvc-bound" in fired:
            if pvc is None:
                message = (
                    "Cannot take a snapshot: the persistent volume claim for virtual disk "
                    f'"{disk_name}" does not exist.'
                )
            else:
                message = (
                    f'Cannot take a snapshot: the persistent volume claim "{pvc_name}" for virtual disk '
                    f'"{disk_name}" is not in phase Bound.'
                )
            return Failure(WAITING_FOR_THE_DISK, message)
        if "vds-single-attachment" in fired:
            return Failure(SNAPSHOT_FAILED, f'The virtual disk "{disk_name}" is attached to multiple virtual machines.')
        if "vds-consistency" in fired:
            vm_name = fs.attached_vm_name(disk)
            vm = machines.get(vm_name or "")
            if vm is not None:
                return Failure(POTENTIALLY_INCONSISTENT, inconsistent_message(disk_name, vm))
        # A rule with no platform counterpart (e.g. vds-snapshot-class), or one turned
        # to deny by the policy: its own message.
        return Failure(SNAPSHOT_FAILED, ensure_period(next(iter(fired.values()))))

    # --- phases -------------------------------------------------------------------

    def _fail(self, vds: JSONObject, failure: Failure) -> Result:
        builder = StatusBuilder(vds).phase(FAILED)
        if failure.disk_ready_message is not None:
            builder.condition(VIRTUAL_DISK_READY, "False", NOT_READY_FOR_SNAPSHOTTING, failure.disk_ready_message)
        builder.condition(SNAPSHOT_READY, "False", failure.reason, failure.message)
        write_status(self.client, vds, builder)
        self._release(vds)
        return DONE

    def _pending(self, vds: JSONObject) -> Result:
        checked = self._check(vds)
        if isinstance(checked, Failure):
            return self._fail(vds, checked)
        vm = checked.vm
        if (
            vm is not None
            and phase_of(vm) != "Stopped"
            and not fs.frozen(vm)
            and not fs.can_freeze(vm)
            and required_consistency(vds)
        ):
            disk = str(spec_of(vds).get("virtualDiskName"))
            return self._fail(vds, Failure(POTENTIALLY_INCONSISTENT, inconsistent_message(disk, vm)))
        builder = (
            StatusBuilder(vds)
            .phase(IN_PROGRESS)
            .condition(VIRTUAL_DISK_READY, "True", VIRTUAL_DISK_READY)
            .condition(SNAPSHOT_READY, "False", SNAPSHOTTING, "The snapshotting process has started.")
        )
        write_status(self.client, vds, builder)
        return AGAIN

    def _in_progress(self, vds: JSONObject) -> Result:
        namespace = meta(vds)["namespace"]
        disk_name = str(spec_of(vds).get("virtualDiskName") or "")
        vs_name = str(status_of(vds).get("volumeSnapshotName") or volume_snapshot_name(vds))
        vs = self.client.get(VS, namespace, vs_name)
        if vs is None:
            return self._take(vds, disk_name)
        if not owned_by(vs, uid_of(vds)):
            return self._fail(vds, self._foreign(vds, vs))
        error = (status_of(vs).get("error") or {}).get("message")
        if error:
            return self._fail(vds, Failure(SNAPSHOT_FAILED, f'VolumeSnapshot "{vs_name}" has an error: {error}.'))
        if status_of(vs).get("readyToUse") is not True:
            builder = (
                StatusBuilder(vds)
                .set("volumeSnapshotName", vs_name)
                .condition(
                    SNAPSHOT_READY,
                    "False",
                    SNAPSHOTTING,
                    f'Waiting for the snapshot of virtual disk "{disk_name}" to be ready to use.',
                )
            )
            write_status(self.client, vds, builder)
            return Result(requeue_after=self.context.poll_interval)
        disk = self.client.get(kinds.VIRTUAL_DISK, namespace, disk_name)
        vm_name = fs.attached_vm_name(disk)
        vm = self.client.get(kinds.VIRTUAL_MACHINE, namespace, vm_name) if vm_name else None
        if status_of(vds).get("consistent") is not True:
            if vm is None or phase_of(vm) == "Stopped" or fs.frozen(vm):
                # Recorded before the thaw: a restart after the thaw must not judge the
                # (by then unfrozen) VM again.
                builder = StatusBuilder(vds).set("consistent", True)
                if fs.frozen(vm):
                    builder.condition(
                        SNAPSHOT_READY,
                        "False",
                        FILESYSTEM_UNFREEZING,
                        f'The virtual machine "{vm_name}" is in the process of being unfrozen after taking a snapshot.',
                    )
                write_status(self.client, vds, builder)
                return AGAIN
            if required_consistency(vds):
                return self._fail(
                    vds,
                    Failure(
                        SNAPSHOT_FAILED,
                        "Virtual disk snapshot is not consistent because the virtual machine "
                        f"{vm_name} has not been stopped or its filesystem has not been frozen.",
                    ),
                )
        if fs.frozen(vm):
            # Not allowed while another snapshot of the VM is in progress: that one thaws.
            fs.release(self.client, namespace, vm_name, except_disk_snapshot=name_of(vds))
        builder = (
            StatusBuilder(vds)
            .phase(READY)
            .set("volumeSnapshotName", vs_name)
            .condition(VIRTUAL_DISK_READY, "True", VIRTUAL_DISK_READY)
            .condition(SNAPSHOT_READY, "True", "VirtualDiskSnapshotReady")
        )
        write_status(self.client, vds, builder)
        return DONE

    def _take(self, vds: JSONObject, disk_name: str) -> Result:
        """No VolumeSnapshot yet: preconditions again, freeze if needed, create it."""
        checked = self._check(vds)
        if isinstance(checked, Failure):
            return self._fail(vds, checked)
        vm = checked.vm
        if vm is not None and phase_of(vm) != "Stopped" and not fs.frozen(vm):
            # The platform freezes whenever it can, even without requiredConsistency.
            if fs.can_freeze(vm):
                fs.freeze(self.client, vm)
                builder = StatusBuilder(vds).condition(
                    SNAPSHOT_READY,
                    "False",
                    FILESYSTEM_FREEZING,
                    f'The virtual machine "{name_of(vm)}" with an attached virtual disk "{disk_name}" is in '
                    "the process of being frozen for taking a snapshot.",
                )
                write_status(self.client, vds, builder)
                return AGAIN
            if required_consistency(vds):
                return self._fail(vds, Failure(POTENTIALLY_INCONSISTENT, inconsistent_message(disk_name, vm)))
        desired = desired_volume_snapshot(vds, checked.disk, checked.pvc)
        uid = uid_of(vds)
        try:
            create_once(self.client, desired, lambda existing: owned_by(existing, uid))
        except ForeignObject as foreign:
            return self._fail(vds, self._foreign(vds, foreign.existing))
        builder = (
            StatusBuilder(vds)
            .set("volumeSnapshotName", name_of(desired))
            .condition(
                SNAPSHOT_READY,
                "False",
                SNAPSHOTTING,
                f'The snapshotting process for virtual disk "{disk_name}" has started.',
            )
        )
        write_status(self.client, vds, builder)
        return AGAIN

    @staticmethod
    def _foreign(vds: JSONObject, vs: JSONObject) -> Failure:
        return Failure(
            SNAPSHOT_FAILED,
            f'The VolumeSnapshot "{name_of(vs)}" already exists and does not belong to the virtual disk '
            f'snapshot "{name_of(vds)}" (no owner reference to uid {uid_of(vds)}): delete that '
            "VolumeSnapshot or recreate the virtual disk snapshot.",
        )

    def _ready(self, vds: JSONObject) -> Result:
        vs_name = str(status_of(vds).get("volumeSnapshotName") or volume_snapshot_name(vds))
        vs = self.client.get(VS, meta(vds)["namespace"], vs_name)
        if vs is None or status_of(vs).get("readyToUse") is not True:
            builder = (
                StatusBuilder(vds)
                .phase(FAILED)
                .condition(SNAPSHOT_READY, "False", LOST, f'The underlying VolumeSnapshot "{vs_name}" is no longer available.')
            )
            write_status(self.client, vds, builder)
        return DONE

    def _release(self, vds: JSONObject) -> None:
        namespace = meta(vds)["namespace"]
        disk = self.client.get(kinds.VIRTUAL_DISK, namespace, str(spec_of(vds).get("virtualDiskName") or ""))
        fs.release(self.client, namespace, fs.attached_vm_name(disk), except_disk_snapshot=name_of(vds))

    # --- deletion -----------------------------------------------------------------

    def _delete(self, vds: JSONObject) -> Result:
        if VDS_CLEANUP_FINALIZER not in finalizers_of(vds):
            return DONE
        if phase_of(vds) != TERMINATING:
            builder = StatusBuilder(vds).phase(TERMINATING).condition(SNAPSHOT_READY, UNKNOWN, UNKNOWN)
            vds = write_status(self.client, vds, builder)
        namespace = meta(vds)["namespace"]
        vs_name = str(status_of(vds).get("volumeSnapshotName") or volume_snapshot_name(vds))
        vs = self.client.get(VS, namespace, vs_name)
        if vs is not None and owned_by(vs, uid_of(vds)):
            vs = remove_finalizer(self.client, vs, VDS_PROTECTION_FINALIZER)
            if not deleting(vs):
                self.client.delete(VS, namespace, vs_name)
        self._release(vds)
        remove_finalizer(self.client, vds, VDS_CLEANUP_FINALIZER)
        return DONE
