"""The VirtualMachineSnapshot controller: the platform's phase machine (reference §2.5),
the snapshot Secret (§2.6, §2.7) and status.resources (§2.8).

    ""         -> Pending
    Pending    -> the engine's vms-* rules on a fresh view: a denial -> Failed with the
                  platform's reason and message (vms-pending-changes: stays Pending
                  with RestartAwaitingChanges, as v0.14 - v1.0 did); else -> InProgress
    InProgress -> freeze the VM when needed (requiredConsistency, not Stopped, not
                  frozen); the Secret `d8v-vms-<name>-<uid>`; status records the Secret
                  and the child names; one child VirtualDiskSnapshot `<disk>-<uid>` per
                  disk of the *stored* VM; a failed child -> Failed; all Ready ->
                  consistent, thaw, status.resources, Ready
    Ready      -> a child gone -> Failed (VirtualDiskSnapshotLost)

The Secret and the children are owned by the VMS (Kubernetes' garbage collector removes
them with it). The children are derived from the VM stored in the Secret, not from the
live VM, so a restart never snapshots a different set of disks than the Secret holds.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from pydantic import ValidationError

from policies import kinds
from policies.catalogue import Operation
from policies.engine import Decision, EngineRequest
from policies.models import VirtualDisk, VirtualMachine
from policies.restore import SnapshotContentError, decode_snapshot_secret
from policies.rules.common import disk_resizing

from . import freeze as fs
from .objects import (
    AGAIN,
    DONE,
    FAILED,
    FILESYSTEM_REQUEST_ANNOTATION,
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
    child_disk_snapshot_name,
    condition,
    condition_true,
    create_once,
    deleting,
    ensure_period,
    meta,
    name_of,
    owned_by,
    owner_reference,
    phase_of,
    snapshot_secret_name,
    spec_of,
    status_of,
    uid_of,
    write_status,
)

VMS = kinds.VIRTUAL_MACHINE_SNAPSHOT
VDS = kinds.VIRTUAL_DISK_SNAPSHOT

# Condition types and reasons (`api/core/v1alpha2/vmscondition/condition.go`).
VIRTUAL_MACHINE_READY = "VirtualMachineReady"
NOT_READY_FOR_SNAPSHOTTING = "VirtualMachineNotReadyForSnapshotting"
SNAPSHOT_READY = "VirtualMachineSnapshotReady"
WAITING_FOR_THE_VM = "WaitingForTheVirtualMachine"
BLOCK_DEVICES_NOT_READY = "BlockDevicesNotReady"
POTENTIALLY_INCONSISTENT = "PotentiallyInconsistent"
DISK_SNAPSHOT_LOST = "VirtualDiskSnapshotLost"
FILESYSTEM_FREEZING = "FileSystemFreezing"
FILESYSTEM_UNFREEZING = "FileSystemUnfreezing"
SNAPSHOTTING = "Snapshotting"
SNAPSHOT_FAILED = "VirtualMachineSnapshotFailed"
# Removed from the platform in v1.1.0; used while vms-pending-changes denies (below).
RESTART_AWAITING_CHANGES = "RestartAwaitingChanges"
UNKNOWN = "Unknown"

STATIC_WITHOUT_SPEC = (
    "Not possible to use static ip address with omitted .spec.VirtualMachineIPAddress, please report a bug."
)


class SnapshotFailure(Exception):
    """A failure with the VirtualMachineSnapshotReady reason and message to record."""

    def __init__(self, reason: str, message: str, vm_ready_message: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.vm_ready_message = vm_ready_message


def _encode(value: Any) -> str:
    """A data value as platforms since v1.0.0 write it: raw JSON (#1419), which the
    Secret's own base64 then wraps."""
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def required_consistency(vms: JSONObject) -> bool:
    return spec_of(vms).get("requiredConsistency") is not False


def keep_ip_address(vms: JSONObject) -> str:
    return str(spec_of(vms).get("keepIPAddress") or "Always")


def inconsistent_message(vm: JSONObject) -> str:
    base = f'Cannot take a consistent snapshot of virtual machine "{name_of(vm)}"'
    if not fs.agent_ready(vm):
        return base + ": virtual machine agent is not ready and the virtual machine cannot be frozen."
    return base + "."


def _model(vm: JSONObject) -> VirtualMachine:
    try:
        return VirtualMachine.model_validate(vm)
    except ValidationError:
        return VirtualMachine()


class MachineSnapshotController:
    kind = VMS

    def __init__(self, context: Context) -> None:
        self.context = context
        self.client = context.client

    # --- entry --------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Result:
        vms = self.client.get(VMS, namespace, name)
        if vms is None:
            # The platform puts no finalizer on a VMS: a deleted one may have held a freeze.
            fs.release_orphans(self.client, namespace)
            return DONE
        if deleting(vms):
            if phase_of(vms) != TERMINATING:
                builder = StatusBuilder(vms).phase(TERMINATING).condition(SNAPSHOT_READY, UNKNOWN, UNKNOWN)
                vms = write_status(self.client, vms, builder)
            self._release(vms)
            return DONE
        phase = phase_of(vms)
        try:
            if phase == "":
                write_status(self.client, vms, StatusBuilder(vms).phase(PENDING))
                return AGAIN
            if phase == PENDING:
                return self._pending(vms)
            if phase == IN_PROGRESS:
                return self._in_progress(vms)
        except SnapshotFailure as failure:
            return self._fail(vms, failure)
        if phase == READY:
            return self._ready(vms)
        if phase == FAILED:
            self._release(vms)
        return DONE

    def _fail(self, vms: JSONObject, failure: SnapshotFailure) -> Result:
        builder = StatusBuilder(vms).phase(FAILED)
        if failure.vm_ready_message is not None:
            builder.condition(VIRTUAL_MACHINE_READY, "False", NOT_READY_FOR_SNAPSHOTTING, failure.vm_ready_message)
        builder.condition(SNAPSHOT_READY, "False", failure.reason, failure.message)
        write_status(self.client, vms, builder)
        self._release(vms)
        return DONE

    def _release(self, vms: JSONObject) -> None:
        fs.release(
            self.client,
            meta(vms)["namespace"],
            str(spec_of(vms).get("virtualMachineName") or ""),
            except_machine_snapshot=name_of(vms),
        )

    # --- Pending: the preconditions -----------------------------------------------

    def _pending(self, vms: JSONObject) -> Result:
        namespace = meta(vms)["namespace"]
        vm_name = str(spec_of(vms).get("virtualMachineName") or "")
        reader = ViewReader.new(self.client)
        vm = reader.get(kinds.VIRTUAL_MACHINE, namespace, vm_name)
        model = _model(vm) if vm is not None else VirtualMachine()
        disks = reader.get_many(kinds.VIRTUAL_DISK, namespace, model.disk_names())
        reader.get_many(
            kinds.PERSISTENT_VOLUME_CLAIM,
            namespace,
            [
                str((status_of(disk).get("target") or {}).get("persistentVolumeClaimName") or "")
                for disk in disks.values()
            ],
        )
        reader.get(kinds.VIRTUAL_MACHINE_IP_ADDRESS, namespace, model.status.virtual_machine_ip_address_name)
        reader.get_many(kinds.SECRET, namespace, [name for _, name in model.provisioning_secret_names()])
        reader.get_many(
            kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT,
            namespace,
            [ref.virtual_machine_block_device_attachment_name or "" for ref in model.status.block_device_refs],
        )
        reader.get_many(kinds.VIRTUAL_MACHINE_MAC_ADDRESS, namespace, model.mac_address_names())
        classes = spec_of(vms).get("volumeSnapshotClasses") or []
        if classes:
            reader.list(kinds.VOLUME_SNAPSHOT_CLASS, None)
            for entry in classes:
                if isinstance(entry, dict):
                    reader.get(kinds.STORAGE_CLASS, None, str(entry.get("storageClassName") or ""))
        request = EngineRequest(Operation.CREATE, VMS, namespace, name_of(vms), vms, uid=uid_of(vms))
        decision = self.context.engine.decide(request, reader.view)
        if decision.violations:
            return self._precondition_failed(vms, decision, vm_name, vm, model, reader)
        builder = (
            StatusBuilder(vms)
            .phase(IN_PROGRESS)
            .condition(VIRTUAL_MACHINE_READY, "True", VIRTUAL_MACHINE_READY)
            .condition(SNAPSHOT_READY, "False", FILESYSTEM_FREEZING, "The snapshotting process has started.")
        )
        write_status(self.client, vms, builder)
        return AGAIN

    def _precondition_failed(
        self,
        vms: JSONObject,
        decision: Decision,
        vm_name: str,
        vm: JSONObject | None,
        model: VirtualMachine,
        reader: ViewReader,
    ) -> Result:
        fired = {violation.rule: violation.message for violation in decision.violations}
        if vm is None or "vms-vm-exists" in fired:
            raise SnapshotFailure(
                WAITING_FOR_THE_VM,
                f'Cannot take a snapshot: the virtual machine "{vm_name}" does not exist.',
                f'The virtual machine "{vm_name}" was not found.',
            )
        if "vms-vm-ready" in fired:
            detail = (
                f'The virtual machine "{vm_name}" is in the process of deletion.'
                if deleting(vm)
                else f'The virtual machine "{vm_name}" is in the "{phase_of(vm)}" phase: waiting for it to '
                "reach the Running or Stopped phase."
            )
            raise SnapshotFailure(
                WAITING_FOR_THE_VM, f'Cannot take a snapshot: the virtual machine "{vm_name}" is not ready.', detail
            )
        if "vms-block-devices-ready" in fired:
            raise SnapshotFailure(BLOCK_DEVICES_NOT_READY, self._block_devices_message(vm, model, reader))
        if "vms-disk-resizing" in fired:
            resizing = next(
                (
                    name
                    for name in model.disk_names()
                    if (disk := reader.view.get(VirtualDisk, meta(vms)["namespace"], name)) is not None
                    and disk_resizing(disk)
                ),
                "",
            )
            raise SnapshotFailure(
                BLOCK_DEVICES_NOT_READY,
                f'Virtual disk is in the process of resizing: waiting for the virtual disk "{resizing}" to be resized.',
            )
        if "vms-pending-changes" in fired:
            # The platform stopped waiting for this in v1.1.0; the rule still denies by
            # default, so the reconciler waits as v0.14 - v1.0 did (turn the rule off
            # in the policy to snapshot the unapplied configuration instead).
            builder = (
                StatusBuilder(vms)
                .phase(PENDING)
                .condition(
                    SNAPSHOT_READY,
                    "False",
                    RESTART_AWAITING_CHANGES,
                    f'Waiting for the restart and approval of changes to virtual machine "{vm_name}" before '
                    "taking the snapshot.",
                )
            )
            write_status(self.client, vms, builder)
            return Result(requeue_after=self.context.poll_interval)
        if "vms-consistency" in fired:
            raise SnapshotFailure(POTENTIALLY_INCONSISTENT, inconsistent_message(vm))
        if "vms-ip-address" in fired or "vms-dependencies" in fired:
            # The same checks the Secret makes, in the platform's words.
            self._snapshot_data(vms, vm)
        raise SnapshotFailure(SNAPSHOT_FAILED, ensure_period(decision.violations[0].message))

    @staticmethod
    def _block_devices_message(vm: JSONObject, model: VirtualMachine, reader: ViewReader) -> str:
        if not condition_true(vm, "BlockDevicesReady"):
            return f'Block devices not ready: waiting for the block devices of the virtual machine "{name_of(vm)}" to be ready.'
        namespace = meta(vm)["namespace"]
        for name in model.disk_names():
            disk = reader.view.get(VirtualDisk, namespace, name)
            if disk is None or disk.phase != "Ready":
                return f'Virtual disk not ready: waiting for the virtual disk "{name}" to be Ready.'
            if not disk.condition_true("Ready", current=True):
                return f'Virtual disk not ready: waiting for the Ready condition of the virtual disk "{name}" to be True.'
        return f'Block devices not ready: waiting for the block devices of the virtual machine "{name_of(vm)}" to be ready.'

    # --- InProgress ---------------------------------------------------------------

    def _in_progress(self, vms: JSONObject) -> Result:
        namespace = meta(vms)["namespace"]
        vm_name = str(spec_of(vms).get("virtualMachineName") or "")
        status = status_of(vms)
        vm = self.client.get(kinds.VIRTUAL_MACHINE, namespace, vm_name)
        need_to_freeze = (
            status.get("consistent") is not True
            and required_consistency(vms)
            and (vm is None or phase_of(vm) != "Stopped")
            and not fs.frozen(vm)
        )
        if need_to_freeze:
            if vm is None:
                raise SnapshotFailure(
                    WAITING_FOR_THE_VM, f'Cannot take a snapshot: the virtual machine "{vm_name}" does not exist.'
                )
            if not fs.can_freeze(vm):
                if phase_of(vm) != "Running":
                    raise SnapshotFailure(
                        SNAPSHOT_FAILED, f"Cannot freeze not Running {namespace}/{vm_name} virtual machine."
                    )
                raise SnapshotFailure(POTENTIALLY_INCONSISTENT, inconsistent_message(vm))
            fs.freeze(self.client, vm)
            builder = StatusBuilder(vms).condition(
                SNAPSHOT_READY,
                "False",
                FILESYSTEM_FREEZING,
                f'The virtual machine "{vm_name}" is in the process of being frozen for taking a snapshot.',
            )
            write_status(self.client, vms, builder)
            return AGAIN

        stored_vm = self._ensure_secret(vms, vm)
        disks = _model(stored_vm).disk_names()
        children = [child_disk_snapshot_name(disk, uid_of(vms)) for disk in disks]
        secret_name = snapshot_secret_name(vms)
        if (
            status.get("virtualMachineSnapshotSecretName") != secret_name
            or status.get("virtualDiskSnapshotNames") != children
        ):
            # Recorded before the children exist: a restart creates exactly these.
            builder = (
                StatusBuilder(vms)
                .set("virtualMachineSnapshotSecretName", secret_name)
                .set("virtualDiskSnapshotNames", children)
                .condition(SNAPSHOT_READY, "False", SNAPSHOTTING, "The snapshotting process has started.")
            )
            write_status(self.client, vms, builder)
            return AGAIN

        found = self._ensure_children(vms, disks, children)
        failed = next((child for child in found if phase_of(child) == FAILED), None)
        if failed is not None:
            child_message = str((condition(failed, "VirtualDiskSnapshotReady") or {}).get("message") or "")
            raise SnapshotFailure(
                SNAPSHOT_FAILED,
                ensure_period(
                    f'The virtual disk snapshot "{name_of(failed)}" is failed: cannot take snapshot. {child_message}'
                ),
            )
        ready = [child for child in found if phase_of(child) == READY]
        if len(ready) < len(children):
            builder = StatusBuilder(vms).condition(
                SNAPSHOT_READY,
                "False",
                SNAPSHOTTING,
                "Waiting for the virtual disk snapshots to be taken for the block devices of the virtual "
                f'machine "{vm_name}" ({len(ready)}/{len(children)}).',
            )
            write_status(self.client, vms, builder)
            return Result(requeue_after=self.context.poll_interval)

        # A VM without disks counts as consistent.
        consistent = all(status_of(child).get("consistent") is True for child in ready)
        if consistent and status.get("consistent") is not True:
            # Recorded before the thaw, so a restart does not freeze the VM again.
            builder = StatusBuilder(vms).set("consistent", True)
            if fs.frozen(vm):
                builder.condition(
                    SNAPSHOT_READY,
                    "False",
                    FILESYSTEM_UNFREEZING,
                    f'The virtual machine "{vm_name}" is in the process of being unfrozen after taking a snapshot.',
                )
            write_status(self.client, vms, builder)
            return AGAIN
        if fs.frozen(vm):
            fs.release(self.client, namespace, vm_name, except_machine_snapshot=name_of(vms))
        builder = (
            StatusBuilder(vms)
            .phase(READY)
            .set("resources", self._resources(vms, stored_vm))
            .condition(VIRTUAL_MACHINE_READY, "True", VIRTUAL_MACHINE_READY)
            .condition(SNAPSHOT_READY, "True", "VirtualMachineSnapshotReady")
        )
        write_status(self.client, vms, builder)
        return DONE

    # --- the Secret ---------------------------------------------------------------

    def _ensure_secret(self, vms: JSONObject, vm: JSONObject | None) -> JSONObject:
        """The snapshot Secret, created once; returns the VM it stores."""
        namespace = meta(vms)["namespace"]
        name = snapshot_secret_name(vms)
        uid = uid_of(vms)
        secret = self.client.get(kinds.SECRET, namespace, name)
        if secret is None:
            if vm is None:
                vm_name = spec_of(vms).get("virtualMachineName")
                raise SnapshotFailure(
                    WAITING_FOR_THE_VM, f'Cannot take a snapshot: the virtual machine "{vm_name}" does not exist.'
                )
            desired = {
                "apiVersion": "v1",
                "kind": kinds.SECRET,
                "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner_reference(vms)]},
                "type": kinds.SNAPSHOT_SECRET_TYPE,
                "data": self._snapshot_data(vms, vm),
            }
            try:
                secret = create_once(self.client, desired, lambda existing: owned_by(existing, uid))
            except ForeignObject:
                secret = None
        if secret is None or not owned_by(secret, uid):
            raise SnapshotFailure(
                SNAPSHOT_FAILED,
                f'The snapshot secret "{name}" already exists and does not belong to the virtual machine '
                f'snapshot "{name_of(vms)}" (no owner reference to uid {uid}): delete that Secret or recreate '
                "the virtual machine snapshot.",
            )
        content = decode_snapshot_secret(name, secret.get("data") or {})
        if isinstance(content, SnapshotContentError):
            raise SnapshotFailure(SNAPSHOT_FAILED, ensure_period(content.message[0].upper() + content.message[1:]))
        return content.vm

    def _snapshot_data(self, vms: JSONObject, vm: JSONObject) -> dict[str, str]:
        """§2.7: the VM, its VMIP (converted per keepIPAddress, §2.6), its MAC
        addresses, its provisioning Secret and its hot-plug attachments."""
        namespace = meta(vms)["namespace"]
        stored_vm = copy.deepcopy(vm)
        # Our stand-in for the VMI annotation must not travel into restored VMs.
        annotations = stored_vm.get("metadata", {}).get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(FILESYSTEM_REQUEST_ANNOTATION, None)
            if not annotations:
                del stored_vm["metadata"]["annotations"]
        data = {"vm": _encode(stored_vm)}

        vmip_name = status_of(vm).get("virtualMachineIPAddressName")
        if vmip_name:
            vmip = self.client.get(kinds.VIRTUAL_MACHINE_IP_ADDRESS, namespace, str(vmip_name))
            if vmip is None:
                raise SnapshotFailure(SNAPSHOT_FAILED, f'The virtual machine ip address "{vmip_name}" not found.')
            ip_type = spec_of(vmip).get("type")
            in_spec = bool(spec_of(vm).get("virtualMachineIPAddressName"))
            if ip_type == "Static" and not in_spec:
                raise SnapshotFailure(SNAPSHOT_FAILED, STATIC_WITHOUT_SPEC)
            keep = keep_ip_address(vms)
            if not (keep == "Never" and ip_type == "Auto" and not in_spec):
                stored_vmip = copy.deepcopy(vmip)
                if keep == "Always" and ip_type == "Auto":
                    stored_vmip["spec"] = {
                        **spec_of(vmip),
                        "type": "Static",
                        "staticIP": status_of(vmip).get("address") or "",
                    }
                data["vmip"] = _encode(stored_vmip)

        macs: list[JSONObject] = []
        for network in status_of(vm).get("networks") or []:
            if not isinstance(network, dict) or network.get("type") == "Main":
                continue
            mac_name = network.get("virtualMachineMACAddressName")
            if not mac_name:
                continue
            mac = self.client.get(kinds.VIRTUAL_MACHINE_MAC_ADDRESS, namespace, str(mac_name))
            if mac is None:
                raise SnapshotFailure(SNAPSHOT_FAILED, f'The virtual machine mac address "{mac_name}" not found.')
            stored_mac = copy.deepcopy(mac)
            stored_mac["spec"] = {**spec_of(mac), "address": status_of(mac).get("address")}
            macs.append(stored_mac)
        if macs:
            data["vmmacs"] = _encode(macs)

        for _, secret_name in _model(vm).provisioning_secret_names():
            provisioner = self.client.get(kinds.SECRET, namespace, secret_name)
            if provisioner is None:
                raise SnapshotFailure(
                    SNAPSHOT_FAILED, f'The virtual machine provisioning secret "{secret_name}" not found.'
                )
            data["provisioner"] = _encode(provisioner)
            break  # userDataRef and sysprepRef exclude each other (CRD)

        attachments: list[JSONObject] = []
        for ref in status_of(vm).get("blockDeviceRefs") or []:
            if not isinstance(ref, dict) or ref.get("hotplugged") is not True:
                continue
            attachment_name = ref.get("virtualMachineBlockDeviceAttachmentName")
            if not attachment_name:
                continue
            attachment = self.client.get(
                kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT, namespace, str(attachment_name)
            )
            if attachment is None:
                raise SnapshotFailure(
                    SNAPSHOT_FAILED,
                    f'The virtual machine block device attachment "{attachment_name}" not found.',
                )
            attachments.append(attachment)
        if attachments:
            data["vmbdas"] = _encode(attachments)
        return data

    # --- the children -------------------------------------------------------------

    def _ensure_children(self, vms: JSONObject, disks: list[str], children: list[str]) -> list[JSONObject]:
        """The child VirtualDiskSnapshots that exist (creating the missing ones)."""
        namespace = meta(vms)["namespace"]
        uid = uid_of(vms)
        found: list[JSONObject] = []
        for disk_name, child_name in zip(disks, children, strict=True):
            child = self.client.get(VDS, namespace, child_name)
            if child is None:
                self._check_disk(namespace, disk_name)
                desired = {
                    "apiVersion": kinds.KINDS[VDS].api_version,
                    "kind": VDS,
                    "metadata": {
                        "name": child_name,
                        "namespace": namespace,
                        "ownerReferences": [owner_reference(vms)],
                    },
                    "spec": {"virtualDiskName": disk_name, "requiredConsistency": required_consistency(vms)},
                }
                try:
                    child = create_once(self.client, desired, lambda existing: owned_by(existing, uid))
                except ForeignObject:
                    child = None
            if child is None or not owned_by(child, uid):
                raise SnapshotFailure(
                    SNAPSHOT_FAILED,
                    f'The virtual disk snapshot "{child_name}" already exists and does not belong to the virtual '
                    f'machine snapshot "{name_of(vms)}" (no owner reference to uid {uid}): delete it or recreate '
                    "the virtual machine snapshot.",
                )
            found.append(child)
        return found

    def _check_disk(self, namespace: str, disk_name: str) -> None:
        disk = self.client.get(kinds.VIRTUAL_DISK, namespace, disk_name)
        if disk is None:
            raise SnapshotFailure(SNAPSHOT_FAILED, f'The virtual disk "{disk_name}" not found.')
        pvc_name = str((status_of(disk).get("target") or {}).get("persistentVolumeClaimName") or "")
        pvc = self.client.get(kinds.PERSISTENT_VOLUME_CLAIM, namespace, pvc_name) if pvc_name else None
        if pvc is None:
            raise SnapshotFailure(
                SNAPSHOT_FAILED, f'The persistent volume claim "{pvc_name}" not found for the virtual disk "{disk_name}".'
            )
        if not spec_of(pvc).get("storageClassName"):
            raise SnapshotFailure(
                SNAPSHOT_FAILED, f'The persistent volume claim "{pvc_name}" doesn\'t have the storage class name.'
            )

    # --- Ready --------------------------------------------------------------------

    def _resources(self, vms: JSONObject, vm: JSONObject) -> list[JSONObject]:
        """§2.8, in the platform's order."""
        namespace = meta(vms)["namespace"]
        model = _model(vm)

        def entry(kind: str, name: str) -> JSONObject:
            return {"apiVersion": kinds.KINDS[kind].api_version, "kind": kind, "name": name}

        resources = [entry(kinds.VIRTUAL_MACHINE, name_of(vm))]
        if keep_ip_address(vms) == "Always" and model.status.virtual_machine_ip_address_name:
            resources.append(entry(kinds.VIRTUAL_MACHINE_IP_ADDRESS, model.status.virtual_machine_ip_address_name))
        if model.spec.networks:
            resources.extend(entry(kinds.VIRTUAL_MACHINE_MAC_ADDRESS, mac) for mac in model.mac_address_names())
        resources.extend(entry(kinds.SECRET, secret) for _, secret in model.provisioning_secret_names())
        for ref in model.status.block_device_refs:
            attachment = ref.virtual_machine_block_device_attachment_name
            if attachment and self.client.get(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT, namespace, attachment):
                resources.append(entry(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT, attachment))
            if ref.kind == kinds.VIRTUAL_DISK and self.client.get(kinds.VIRTUAL_DISK, namespace, ref.name):
                resources.append(entry(kinds.VIRTUAL_DISK, ref.name))
        return resources

    def _ready(self, vms: JSONObject) -> Result:
        namespace = meta(vms)["namespace"]
        names = [str(n) for n in status_of(vms).get("virtualDiskSnapshotNames") or []]
        lost = [name for name in names if self.client.get(VDS, namespace, name) is None]
        if lost:
            message = (
                f"The underlying virtual disk snapshot ({lost[0]}) is lost."
                if len(lost) == 1
                else f"The underlying virtual disk snapshots ({', '.join(lost)}) are lost."
            )
            write_status(
                self.client,
                vms,
                StatusBuilder(vms).phase(FAILED).condition(SNAPSHOT_READY, "False", DISK_SNAPSHOT_LOST, message),
            )
        return DONE
