"""The restore plan of a VirtualMachineRestore: what its snapshot Secret holds, which
objects the restore creates, under which names, and (for the reconciler) the objects
themselves, names replaced, ready to create.

The `vmr-*` rules and the reconciler share this module so that what the webhook checks
is exactly what the reconciler creates. It follows the platform (v1.8.4, the last one
with VirtualMachineRestore): `vmrestore/internal/restorer/overrider.go` for the name
replacements, `service/restorer/secret_restorer.go` for the Secret's encoding.

Pure: stdlib and pydantic only, no I/O. The caller looks up the VirtualMachineSnapshot,
its Secret and its VirtualDiskSnapshots and hands them in.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import kinds, limits
from .models import NameReplacement, VirtualDiskSnapshot

JSONObject = dict[str, Any]

# Data keys of the snapshot Secret (`service/restorer/keys.go`).
KEY_VM = "vm"
KEY_VMIP = "vmip"
KEY_VMMACS = "vmmacs"
KEY_PROVISIONER = "provisioner"
KEY_VMBDAS = "vmbdas"

# The kinds a restore creates, the only ones a nameReplacements `from.kind` can match.
RESTORED_KINDS: tuple[str, ...] = (
    kinds.VIRTUAL_MACHINE,
    kinds.VIRTUAL_DISK,
    kinds.VIRTUAL_MACHINE_IP_ADDRESS,
    kinds.VIRTUAL_MACHINE_MAC_ADDRESS,
    kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT,
    kinds.SECRET,
)

# What a clone (vmop Clone, vmsop) creates, the only kinds its `from.kind` may name: no
# VirtualMachineIPAddress or VirtualMachineMACAddress, the copy gets new addresses.
CLONED_KINDS: tuple[str, ...] = (
    kinds.VIRTUAL_MACHINE,
    kinds.VIRTUAL_DISK,
    kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT,
    kinds.SECRET,
)
# CEL limits of the v1.10 CRDs on a clone's nameReplacement `to`, namePrefix, nameSuffix.
MAX_CUSTOMIZATION_LENGTH = 59

# VolumeSnapshot annotations holding the original disk's metadata (platform v1.0.0+).
VD_ORIGINAL_LABELS_ANNOTATION = "virtualization.deckhouse.io/vd-original-labels"
VD_ORIGINAL_ANNOTATIONS_ANNOTATION = "virtualization.deckhouse.io/vd-original-annotations"


# --- the snapshot Secret -----------------------------------------------------------


@dataclass(frozen=True)
class SnapshotContentError:
    """A snapshot Secret whose content cannot be read: a value, never an exception."""

    secret: str
    key: str
    problem: str

    @property
    def message(self) -> str:
        return f'data key "{self.key}" of the snapshot Secret "{self.secret}" {self.problem}'


@dataclass(frozen=True)
class SnapshotContent:
    """The objects a VirtualMachineSnapshot stored in its Secret, as the platform's Go
    JSON encoder wrote them (metadata, spec and status)."""

    secret: str
    vm: JSONObject
    vmip: JSONObject | None = None
    vmmacs: tuple[JSONObject, ...] = ()
    provisioner: JSONObject | None = None
    vmbdas: tuple[JSONObject, ...] = ()


class _Unreadable(ValueError):
    """Why one value of the Secret cannot be read (becomes a SnapshotContentError)."""


def _strict_base64(text: str | bytes, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Unreadable(f"is not {what}") from None


def decode_snapshot_value(value: str) -> Any:
    """The JSON value behind one `data` value of a snapshot Secret.

    `value` is what the API returns: the Secret's own base64. Platforms since v1.0.0
    (#1419) put raw JSON under it; earlier ones base64-encoded the JSON once more. So
    after the Secret's base64, a value whose first non-space byte is `{` or `[` is JSON,
    and anything else must be strict, padded base64 of JSON. Returns None for an empty
    value. Raises ValueError (with a reason fit for a message) for anything else."""
    raw = _strict_base64(value, "valid base64 (a Secret's data values are base64)")
    text = raw.strip()
    if not text:
        return None
    if text[:1] not in (b"{", b"["):
        text = _strict_base64(text, "JSON nor base64-encoded JSON (as platforms before v1.0 wrote it)")
    try:
        decoded = json.loads(text, parse_int=limits.parse_int)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise _Unreadable(f"is not valid JSON ({error})") from None
    except RecursionError:
        raise _Unreadable(f"holds JSON nested deeper than {limits.MAX_DEPTH} levels") from None
    problem = limits.find_problem(decoded)
    if problem is not None:
        # A value no rule could walk safely: decided here, as unreadable, so that no
        # `vmr-*` rule errors out (which `ruleErrors: warn` would admit).
        raise _Unreadable(f"holds JSON beyond the input limits ({problem})")
    return decoded


def _object(value: Any, secret: str, key: str, where: str = "") -> JSONObject | SnapshotContentError:
    if not isinstance(value, dict):
        return SnapshotContentError(secret, key, f"holds {where}a JSON {_json_type(value)}, not an object")
    metadata = value.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        return SnapshotContentError(secret, key, f"holds {where}an object without metadata.name")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else "object"


def decode_snapshot_secret(secret: str, data: Mapping[str, str]) -> SnapshotContent | SnapshotContentError:
    """Decode the `data` of the snapshot Secret named `secret`: `vm` (an object, always
    present), `vmip` and `provisioner` (objects), `vmmacs` and `vmbdas` (arrays of
    objects). Every stored object must have a metadata.name. Errors are values."""
    values: dict[str, Any] = {}
    for key in (KEY_VM, KEY_VMIP, KEY_VMMACS, KEY_PROVISIONER, KEY_VMBDAS):
        if key not in data:
            continue
        try:
            values[key] = decode_snapshot_value(data[key])
        except ValueError as error:
            return SnapshotContentError(secret, key, str(error))
    if values.get(KEY_VM) is None:
        return SnapshotContentError(secret, KEY_VM, "is missing: the Secret holds no virtual machine")
    singles: dict[str, JSONObject | None] = {}
    for key in (KEY_VM, KEY_VMIP, KEY_PROVISIONER):
        value = values.get(key)
        if value is None:
            singles[key] = None
            continue
        checked = _object(value, secret, key)
        if isinstance(checked, SnapshotContentError):
            return checked
        singles[key] = checked
    arrays: dict[str, tuple[JSONObject, ...]] = {}
    for key in (KEY_VMMACS, KEY_VMBDAS):
        value = values.get(key)
        if value is None:  # the Go encoder writes a nil slice as null
            arrays[key] = ()
            continue
        if not isinstance(value, list):
            return SnapshotContentError(secret, key, f"holds a JSON {_json_type(value)}, not an array")
        items: list[JSONObject] = []
        for position, item in enumerate(value):
            checked = _object(item, secret, key, f"at item {position} ")
            if isinstance(checked, SnapshotContentError):
                return checked
            items.append(checked)
        arrays[key] = tuple(items)
    vm = singles[KEY_VM]
    assert vm is not None  # checked above
    return SnapshotContent(
        secret=secret,
        vm=vm,
        vmip=singles[KEY_VMIP],
        vmmacs=arrays[KEY_VMMACS],
        provisioner=singles[KEY_PROVISIONER],
        vmbdas=arrays[KEY_VMBDAS],
    )


def secret_data_bytes(data: Mapping[str, Any] | None) -> dict[str, bytes]:
    """A Secret's `data` decoded to bytes, for comparing two Secrets by content. The
    platform compares the bytes; a value that is not base64 is compared as its text."""
    result: dict[str, bytes] = {}
    for key, value in (data or {}).items():
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            result[key] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            result[key] = text.encode()
    return result


# --- name replacements -------------------------------------------------------------


def replacement_for(replacements: Sequence[NameReplacement], kind: str, name: str) -> int | None:
    """The index of the nameReplacements entry that renames (kind, name), or None."""
    if not name:
        return None  # an empty name is never renamed
    for index, replacement in enumerate(replacements):
        source = replacement.from_
        if (not source.kind or source.kind == kind) and source.name == name:
            return index
    return None


def apply_name_replacements(replacements: Sequence[NameReplacement], kind: str, name: str) -> str:
    """The name the restore gives an object, exactly as the platform: an empty name is
    never renamed; otherwise the first entry whose from.name is the name and whose
    from.kind is empty or the kind gives its `to`; no entry keeps the name."""
    index = replacement_for(replacements, kind, name)
    return name if index is None else replacements[index].to or ""


# The kinds a clone's namePrefix/nameSuffix apply to: not VirtualImage and
# ClusterVirtualImage, which a VMBDA may refer to (reference, "Name replacement
# algorithm": customization skips VMBDA image refs).
CUSTOMIZED_KINDS = frozenset(RESTORED_KINDS)


@dataclass(frozen=True)
class Naming:
    """How a restore or a clone names what it creates: the name replacements (the
    first matching entry wins), then, for a clone, `prefix` + name + `suffix`.

    `field` is where the replacements live in the request (`spec.nameReplacements` of a
    VirtualMachineRestore, `spec.clone.nameReplacement` of a vmop Clone,
    `spec.createVirtualMachine.nameReplacement` of a vmsop), for messages; a vmop
    Restore renames nothing (`Naming()`)."""

    replacements: tuple[NameReplacement, ...] = ()
    prefix: str = ""
    suffix: str = ""
    field: str = ""

    @property
    def customized(self) -> bool:
        return bool(self.prefix or self.suffix)

    def replacement_index(self, kind: str, name: str) -> int | None:
        return replacement_for(self.replacements, kind, name)

    def rename(self, kind: str, name: str) -> str:
        if not name:
            return name
        renamed = apply_name_replacements(self.replacements, kind, name)
        if kind in CUSTOMIZED_KINDS and self.customized:
            return f"{self.prefix}{renamed}{self.suffix}"
        return renamed


def as_naming(naming: Naming | Sequence[NameReplacement]) -> Naming:
    """A VirtualMachineRestore's nameReplacements as a Naming (a Naming stays itself)."""
    if isinstance(naming, Naming):
        return naming
    return Naming(tuple(naming), field="spec.nameReplacements")


# --- the plan ----------------------------------------------------------------------


def metadata_name(obj: Mapping[str, Any] | None) -> str:
    metadata = (obj or {}).get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


@dataclass(frozen=True)
class RestoredObject:
    """One object a restore creates: its kind, its name in the snapshot, its name after
    nameReplacements, the stored JSON (None for a VirtualDisk, which is created from its
    VirtualDiskSnapshot) and, for a disk, that VirtualDiskSnapshot's name."""

    kind: str
    original_name: str
    restored_name: str
    stored: JSONObject | None = field(default=None, compare=False)
    disk_snapshot: str = ""
    # Index of the nameReplacements entry that renamed it, None when it keeps its name.
    replacement: int | None = None

    @property
    def renamed(self) -> bool:
        return self.restored_name != self.original_name


@dataclass(frozen=True)
class RestorePlan:
    """What a VirtualMachineRestore creates, in the restore's namespace (a namespace
    inside the stored JSON is ignored), in the platform's order of validation and
    creation: the VMIP, the VMMACs, the VM, the VirtualDisks, the VMBDAs, the
    provisioning Secret. `missing_disk_snapshots` lists the snapshot's
    VirtualDiskSnapshots that were not handed in (their disks cannot be planned)."""

    namespace: str
    naming: Naming
    content: SnapshotContent
    objects: tuple[RestoredObject, ...]
    missing_disk_snapshots: tuple[str, ...] = ()

    @property
    def replacements(self) -> tuple[NameReplacement, ...]:
        return self.naming.replacements

    def of_kind(self, kind: str) -> list[RestoredObject]:
        return [obj for obj in self.objects if obj.kind == kind]

    def _single(self, kind: str) -> RestoredObject | None:
        return next((obj for obj in self.objects if obj.kind == kind), None)

    @property
    def vm(self) -> RestoredObject:
        vm = self._single(kinds.VIRTUAL_MACHINE)
        assert vm is not None  # every plan has its VM
        return vm

    @property
    def vmip(self) -> RestoredObject | None:
        return self._single(kinds.VIRTUAL_MACHINE_IP_ADDRESS)

    @property
    def provisioning_secret(self) -> RestoredObject | None:
        return self._single(kinds.SECRET)

    def rename(self, kind: str, name: str) -> str:
        return self.naming.rename(kind, name)


def restored_objects(
    naming: Naming | Sequence[NameReplacement],
    content: SnapshotContent,
    disk_snapshot_names: Sequence[str],
    disk_snapshots: Mapping[str, VirtualDiskSnapshot],
    *,
    addresses: bool = True,
    disk_names: Sequence[str] = (),
) -> tuple[RestoredObject, ...]:
    """The objects a restore (or, without `addresses`, a clone: no VMIP, no VMMAC, the
    copy gets new addresses) creates, named by `naming`. A restored VirtualDisk is named
    after its VirtualDiskSnapshot's spec.virtualDiskName; a VirtualDiskSnapshot absent
    from `disk_snapshots` (or naming no disk) yields no disk."""
    naming = as_naming(naming)

    def planned(kind: str, stored: JSONObject | None, name: str, disk_snapshot: str = "") -> RestoredObject:
        index = naming.replacement_index(kind, name)
        return RestoredObject(kind, name, naming.rename(kind, name), stored, disk_snapshot, index)

    objects: list[RestoredObject] = []
    if content.vmip is not None and addresses:
        objects.append(planned(kinds.VIRTUAL_MACHINE_IP_ADDRESS, content.vmip, metadata_name(content.vmip)))
    for mac in content.vmmacs if addresses else ():
        objects.append(planned(kinds.VIRTUAL_MACHINE_MAC_ADDRESS, mac, metadata_name(mac)))
    objects.append(planned(kinds.VIRTUAL_MACHINE, content.vm, metadata_name(content.vm)))
    for snapshot_name in disk_snapshot_names:
        snapshot = disk_snapshots.get(snapshot_name)
        disk_name = snapshot.spec.virtual_disk_name if snapshot is not None else None
        if disk_name:
            objects.append(planned(kinds.VIRTUAL_DISK, None, disk_name, snapshot_name))
    # A clone of a live VM copies its disks themselves, not disks of a snapshot.
    objects.extend(planned(kinds.VIRTUAL_DISK, None, name) for name in disk_names)
    for attachment in content.vmbdas:
        objects.append(
            planned(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT, attachment, metadata_name(attachment))
        )
    if content.provisioner is not None:
        objects.append(planned(kinds.SECRET, content.provisioner, metadata_name(content.provisioner)))
    return tuple(objects)


def plan_restore(
    namespace: str,
    naming: Naming | Sequence[NameReplacement],
    content: SnapshotContent,
    disk_snapshot_names: Sequence[str],
    disk_snapshots: Mapping[str, VirtualDiskSnapshot],
    *,
    addresses: bool = True,
) -> RestorePlan:
    """The plan of a restore (or clone, without `addresses`) in `namespace` of the
    snapshot whose Secret holds `content` and whose status.virtualDiskSnapshotNames is
    `disk_snapshot_names` (`disk_snapshots`: those of them that exist, by name). Every
    front-end plans through here: VirtualMachineRestore, vmop Restore and Clone, vmsop."""
    naming = as_naming(naming)
    return RestorePlan(
        namespace=namespace,
        naming=naming,
        content=content,
        objects=restored_objects(naming, content, disk_snapshot_names, disk_snapshots, addresses=addresses),
        missing_disk_snapshots=tuple(
            name
            for name in disk_snapshot_names
            if name not in disk_snapshots or not disk_snapshots[name].spec.virtual_disk_name
        ),
    )


def plan_clone_of_vm(
    namespace: str,
    naming: Naming,
    vm_name: str,
    disk_names: Sequence[str],
    attachment_names: Sequence[str],
    secret: tuple[str, Mapping[str, str]] | None,
) -> RestorePlan:
    """The objects a vmop Clone creates from the VM as it is now: the VM, its disks, its
    VMBDAs and its provisioning Secret (name, data), named by `naming`; no VMIP or VMMAC
    (the copy gets new addresses). The same plan shape as a restore's, so the clone
    rules read both alike."""
    content = SnapshotContent(
        secret="",
        vm={"metadata": {"name": vm_name}},
        provisioner={"metadata": {"name": secret[0]}, "data": dict(secret[1])} if secret else None,
        vmbdas=tuple({"metadata": {"name": name}} for name in attachment_names),
    )
    return RestorePlan(
        namespace=namespace,
        naming=naming,
        content=content,
        objects=restored_objects(naming, content, (), {}, addresses=False, disk_names=disk_names),
    )


# --- the objects to create (for the reconciler) ------------------------------------


@dataclass(frozen=True)
class DiskMetadata:
    """Labels and annotations of the original disk, which the platform (v1.0.0+) saves
    on the VolumeSnapshot and copies onto the restored disk."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def original_disk_metadata(volume_snapshot_annotations: Mapping[str, str]) -> DiskMetadata:
    """The original disk's labels and annotations from its VolumeSnapshot's annotations
    (absent or unreadable JSON gives none: snapshots before v1.0.0 saved nothing)."""

    def string_map(key: str) -> dict[str, str]:
        try:
            value = json.loads(volume_snapshot_annotations.get(key) or "{}", parse_int=limits.parse_int)
        except (ValueError, RecursionError):
            return {}
        if not isinstance(value, dict) or limits.find_problem(value) is not None:
            return {}
        return {str(k): str(v) for k, v in value.items()}

    return DiskMetadata(
        string_map(VD_ORIGINAL_LABELS_ANNOTATION), string_map(VD_ORIGINAL_ANNOTATIONS_ANNOTATION)
    )


def _string_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _dict(value: Any) -> JSONObject:
    return copy.deepcopy(value) if isinstance(value, dict) else {}


def _metadata(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str], restore_uid: str
) -> JSONObject:
    annotated = dict(annotations)
    if restore_uid:
        annotated[kinds.RESTORE_ANNOTATION] = restore_uid
    metadata: JSONObject = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    if annotated:
        metadata["annotations"] = annotated
    return metadata


def _header(kind: str) -> JSONObject:
    info = kinds.KINDS[kind]
    return {"apiVersion": info.api_version, "kind": kind}


def _stored_metadata(stored: JSONObject | None) -> tuple[dict[str, str], dict[str, str]]:
    metadata = (stored or {}).get("metadata")
    if not isinstance(metadata, dict):
        return {}, {}
    return _string_map(metadata.get("labels")), _string_map(metadata.get("annotations"))


def _restored_vm(plan: RestorePlan, vm: RestoredObject, restore_uid: str) -> JSONObject:
    stored = vm.stored or {}
    labels, annotations = _stored_metadata(stored)
    if vm.renamed:
        # v1.8.4+: "do not clone labels due to potential issues with traffic from services".
        labels = {}
    spec = _dict(stored.get("spec"))
    vmip = plan.content.vmip
    if vmip is not None:
        spec["virtualMachineIPAddressName"] = metadata_name(vmip)
    if spec.get("virtualMachineIPAddressName"):
        spec["virtualMachineIPAddressName"] = plan.rename(
            kinds.VIRTUAL_MACHINE_IP_ADDRESS, str(spec["virtualMachineIPAddressName"])
        )
    provisioning = spec.get("provisioning")
    user_data_ref = provisioning.get("userDataRef") if isinstance(provisioning, dict) else None
    # The CRD defaults the ref's kind to Secret. sysprepRef is not renamed (platform).
    if (
        isinstance(user_data_ref, dict)
        and (user_data_ref.get("kind") or kinds.SECRET) == kinds.SECRET
        and user_data_ref.get("name")
    ):
        user_data_ref["name"] = plan.rename(kinds.SECRET, str(user_data_ref["name"]))
    for ref in spec.get("blockDeviceRefs") or []:
        if isinstance(ref, dict) and ref.get("kind") == kinds.VIRTUAL_DISK and ref.get("name"):
            ref["name"] = plan.rename(kinds.VIRTUAL_DISK, str(ref["name"]))
    _link_mac_addresses(spec, stored, plan.content.vmmacs)
    return {
        **_header(kinds.VIRTUAL_MACHINE),
        "metadata": _metadata(vm.restored_name, plan.namespace, labels, annotations, restore_uid),
        "spec": spec,
    }


def _link_mac_addresses(spec: JSONObject, stored_vm: JSONObject, macs: Sequence[JSONObject]) -> None:
    """As the platform: each non-Main entry of spec.networks, matched by position with
    the stored status.networks, refers to the stored VMMAC holding that entry's MAC.
    The reference keeps the VMMAC's original name (the platform does not rename it)."""
    networks = spec.get("networks")
    status = stored_vm.get("status")
    statuses = status.get("networks") if isinstance(status, dict) else None
    if not isinstance(networks, list) or not isinstance(statuses, list) or not macs:
        return
    by_address: dict[str, str] = {}
    for mac in macs:
        mac_status = mac.get("status")
        address = mac_status.get("address") if isinstance(mac_status, dict) else None
        if isinstance(address, str) and address:
            by_address[address.lower()] = metadata_name(mac)
    for network, network_status in zip(networks, statuses, strict=False):
        if not isinstance(network, dict) or not isinstance(network_status, dict):
            continue
        if network.get("type") == "Main":
            continue
        address = network_status.get("macAddress")
        name = by_address.get(address.lower()) if isinstance(address, str) else None
        if name:
            network["virtualMachineMACAddressName"] = name


def _restored_plain(plan: RestorePlan, obj: RestoredObject, restore_uid: str) -> JSONObject:
    """VMIP and VMMAC: the stored spec under the restored name."""
    stored = obj.stored or {}
    labels, annotations = _stored_metadata(stored)
    return {
        **_header(obj.kind),
        "metadata": _metadata(obj.restored_name, plan.namespace, labels, annotations, restore_uid),
        "spec": _dict(stored.get("spec")),
    }


def _restored_attachment(plan: RestorePlan, obj: RestoredObject, restore_uid: str) -> JSONObject:
    restored = _restored_plain(plan, obj, restore_uid)
    spec = restored["spec"]
    if spec.get("virtualMachineName"):
        spec["virtualMachineName"] = plan.rename(kinds.VIRTUAL_MACHINE, str(spec["virtualMachineName"]))
    ref = spec.get("blockDeviceRef")
    if isinstance(ref, dict) and ref.get("name"):
        ref["name"] = plan.rename(str(ref.get("kind") or ""), str(ref["name"]))
    return restored


def _restored_secret(plan: RestorePlan, obj: RestoredObject, restore_uid: str) -> JSONObject:
    stored = obj.stored or {}
    labels, annotations = _stored_metadata(stored)
    restored: JSONObject = {
        **_header(kinds.SECRET),
        "metadata": _metadata(obj.restored_name, plan.namespace, labels, annotations, restore_uid),
    }
    for key in ("type", "data", "immutable"):
        if key in stored:
            restored[key] = copy.deepcopy(stored[key])
    return restored


def _restored_disk(
    plan: RestorePlan, obj: RestoredObject, restore_uid: str, metadata: DiskMetadata | None
) -> JSONObject:
    original = metadata or DiskMetadata()
    return {
        **_header(kinds.VIRTUAL_DISK),
        "metadata": _metadata(
            obj.restored_name, plan.namespace, original.labels, original.annotations, restore_uid
        ),
        "spec": {
            # Always the original VirtualDiskSnapshot: nameReplacements never rename it.
            "dataSource": {
                "type": "ObjectRef",
                "objectRef": {"kind": kinds.VIRTUAL_DISK_SNAPSHOT, "name": obj.disk_snapshot},
            }
        },
    }


def build_restored_objects(
    plan: RestorePlan,
    restore_uid: str,
    disk_metadata: Mapping[str, DiskMetadata] | None = None,
) -> list[JSONObject]:
    """The full objects to create, in plan order, with names and references replaced
    (the platform's "Name replacement algorithm") and the annotation
    `virtualization.deckhouse.io/vmrestore: <restore_uid>` (none when it is empty):

    * the VM keeps only name, namespace, labels (cleared when the VM was renamed),
      annotations and spec; its spec.virtualMachineIPAddressName is the stored VMIP's,
      userDataRef (kind Secret) and blockDeviceRefs of kind VirtualDisk are renamed;
    * a VirtualDisk is `dataSource: ObjectRef` to its VirtualDiskSnapshot, with the
      original disk's labels and annotations from `disk_metadata` (by
      VirtualDiskSnapshot name; see `original_disk_metadata`);
    * a VMBDA gets its spec.virtualMachineName and blockDeviceRef.name renamed;
    * VMIP, VMMAC and the Secret keep their stored spec (or type and data).

    Stored objects are copied; the plan is not changed."""
    built: list[JSONObject] = []
    for obj in plan.objects:
        if obj.kind == kinds.VIRTUAL_MACHINE:
            built.append(_restored_vm(plan, obj, restore_uid))
        elif obj.kind == kinds.VIRTUAL_DISK:
            built.append(_restored_disk(plan, obj, restore_uid, (disk_metadata or {}).get(obj.disk_snapshot)))
        elif obj.kind == kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT:
            built.append(_restored_attachment(plan, obj, restore_uid))
        elif obj.kind == kinds.SECRET:
            built.append(_restored_secret(plan, obj, restore_uid))
        else:
            built.append(_restored_plain(plan, obj, restore_uid))
    return built
