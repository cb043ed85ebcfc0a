"""Pydantic v2 models of the kinds the rules read.

Tolerant by design: unknown fields are ignored and every field the platform may omit has
a default, so both the v0.22 and the v1.10 shapes of the CRDs (and objects from a CI
dump that carry only what matters) parse. Only the fields the rules, the audit and the
reconciler read are modelled; the raw object is kept by whoever needs all of it (the
defaulter patches the raw request object, never a re-serialised model).

Pure: no I/O here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from . import kinds


class Model(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        # Kubernetes JSON never carries Python-side defaults we would need to validate.
        validate_default=False,
    )


class Condition(Model):
    type: str = ""
    status: str = "Unknown"
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None


class OwnerReference(Model):
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class ObjectMeta(Model):
    name: str = ""
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)


class Status(Model):
    phase: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class KubeObject(Model):
    """Common shape of every object: apiVersion, kind, metadata."""

    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = True

    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""

    @property
    def deleting(self) -> bool:
        return bool(self.metadata.deletion_timestamp)

    def _conditions(self) -> list[Condition]:
        status = getattr(self, "status", None)
        return status.conditions if isinstance(status, Status) else []

    def condition(self, type_: str) -> Condition | None:
        for condition in self._conditions():
            if condition.type == type_:
                return condition
        return None

    def is_current(self, condition: Condition) -> bool:
        """SPEC: a condition is current when its observedGeneration equals the object's
        generation; one without observedGeneration counts as current."""
        if condition.observed_generation is None:
            return True
        return condition.observed_generation == self.metadata.generation

    def condition_true(self, type_: str, *, current: bool = False) -> bool:
        condition = self.condition(type_)
        if condition is None or condition.status != "True":
            return False
        return not current or self.is_current(condition)

    @property
    def phase(self) -> str:
        status = getattr(self, "status", None)
        return (status.phase or "") if isinstance(status, Status) else ""


# --- VirtualDisk -------------------------------------------------------------------


class ObjectRef(Model):
    kind: str | None = None
    name: str | None = None


class DataSource(Model):
    type: str | None = None
    object_ref: ObjectRef | None = None


class DiskPersistentVolumeClaim(Model):
    size: str | int | None = None
    storage_class_name: str | None = None


class VirtualDiskSpec(Model):
    data_source: DataSource | None = None
    persistent_volume_claim: DiskPersistentVolumeClaim = Field(default_factory=DiskPersistentVolumeClaim)


class AttachedVirtualMachine(Model):
    name: str = ""
    mounted: bool | None = None


class DiskTarget(Model):
    persistent_volume_claim_name: str | None = None


class VirtualDiskStatus(Status):
    target: DiskTarget = Field(default_factory=DiskTarget)
    attached_to_virtual_machines: list[AttachedVirtualMachine] = Field(default_factory=list)
    capacity: str | None = None
    storage_class_name: str | None = None


class VirtualDisk(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_DISK
    spec: VirtualDiskSpec = Field(default_factory=VirtualDiskSpec)
    status: VirtualDiskStatus = Field(default_factory=VirtualDiskStatus)

    @property
    def snapshot_source(self) -> str | None:
        """Name of the VirtualDiskSnapshot this disk is created from, if any."""
        source = self.spec.data_source
        if source is None or source.type != "ObjectRef" or source.object_ref is None:
            return None
        if source.object_ref.kind != kinds.VIRTUAL_DISK_SNAPSHOT:
            return None
        return source.object_ref.name or ""


# --- VirtualMachine ----------------------------------------------------------------


class BlockDeviceRef(Model):
    kind: str = ""
    name: str = ""


class BlockDeviceStatusRef(Model):
    kind: str = ""
    name: str = ""
    size: str | None = None
    attached: bool | None = None
    hotplugged: bool | None = None
    virtual_machine_block_device_attachment_name: str | None = None


class ProvisioningRef(Model):
    kind: str | None = None
    name: str | None = None


class Provisioning(Model):
    type: str | None = None
    user_data_ref: ProvisioningRef | None = None
    sysprep_ref: ProvisioningRef | None = None


class NetworkSpec(Model):
    type: str | None = None
    name: str | None = None
    virtual_machine_mac_address_name: str | None = Field(
        default=None, alias="virtualMachineMACAddressName"
    )


class NetworkStatus(Model):
    type: str | None = None
    name: str | None = None
    mac_address: str | None = None
    virtual_machine_mac_address_name: str | None = Field(
        default=None, alias="virtualMachineMACAddressName"
    )


class VirtualMachineSpec(Model):
    virtual_machine_ip_address_name: str | None = Field(
        default=None, alias="virtualMachineIPAddressName"
    )
    block_device_refs: list[BlockDeviceRef] = Field(default_factory=list)
    provisioning: Provisioning | None = None
    networks: list[NetworkSpec] = Field(default_factory=list)
    run_policy: str | None = None


class VirtualMachineStatus(Status):
    virtual_machine_ip_address_name: str | None = Field(
        default=None, alias="virtualMachineIPAddressName"
    )
    ip_address: str | None = None
    block_device_refs: list[BlockDeviceStatusRef] = Field(default_factory=list)
    restart_awaiting_changes: list[Any] = Field(default_factory=list)
    networks: list[NetworkStatus] = Field(default_factory=list)


class VirtualMachine(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE
    spec: VirtualMachineSpec = Field(default_factory=VirtualMachineSpec)
    status: VirtualMachineStatus = Field(default_factory=VirtualMachineStatus)

    def disk_names(self) -> list[str]:
        """The VirtualDisks of the VM: its status.blockDeviceRefs (which include
        hot-plugged disks), else its spec.blockDeviceRefs, of kind VirtualDisk."""
        refs: list[BlockDeviceRef] | list[BlockDeviceStatusRef] = (
            self.status.block_device_refs or self.spec.block_device_refs
        )
        return [ref.name for ref in refs if ref.kind == kinds.VIRTUAL_DISK and ref.name]

    def provisioning_secret_names(self) -> list[tuple[str, str]]:
        """(field path, Secret name) of the provisioning Secrets the VM references."""
        result: list[tuple[str, str]] = []
        provisioning = self.spec.provisioning
        if provisioning is None:
            return result
        for field, ref in (
            ("spec.provisioning.userDataRef", provisioning.user_data_ref),
            ("spec.provisioning.sysprepRef", provisioning.sysprep_ref),
        ):
            # The CRD defaults the ref kind to Secret.
            if ref is not None and ref.name and (ref.kind or kinds.SECRET) == kinds.SECRET:
                result.append((field, ref.name))
        return result

    def mac_address_names(self) -> list[str]:
        names: list[str] = []
        networks: list[NetworkSpec | NetworkStatus] = [*self.spec.networks, *self.status.networks]
        for network in networks:
            if network.type == "Main":
                continue
            name = network.virtual_machine_mac_address_name
            if name and name not in names:
                names.append(name)
        return names


# --- addresses and attachments -----------------------------------------------------


class VirtualMachineIPAddressSpec(Model):
    type: str | None = None
    static_ip: str | None = Field(default=None, alias="staticIP")


class AddressStatus(Status):
    address: str | None = None
    virtual_machine_name: str | None = None


class VirtualMachineIPAddress(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE_IP_ADDRESS
    spec: VirtualMachineIPAddressSpec = Field(default_factory=VirtualMachineIPAddressSpec)
    status: AddressStatus = Field(default_factory=AddressStatus)

    def addresses(self) -> set[str]:
        return {a for a in (self.spec.static_ip, self.status.address) if a}

    @property
    def attached(self) -> bool:
        return self.status.phase == "Attached" or bool(self.status.virtual_machine_name)


class VirtualMachineMACAddressSpec(Model):
    address: str | None = None


class VirtualMachineMACAddress(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE_MAC_ADDRESS
    spec: VirtualMachineMACAddressSpec = Field(default_factory=VirtualMachineMACAddressSpec)
    status: AddressStatus = Field(default_factory=AddressStatus)

    def addresses(self) -> set[str]:
        return {a.lower() for a in (self.spec.address, self.status.address) if a}

    @property
    def attached(self) -> bool:
        return self.status.phase == "Attached" or bool(self.status.virtual_machine_name)


class BlockDeviceAttachmentSpec(Model):
    virtual_machine_name: str | None = None
    block_device_ref: BlockDeviceRef | None = None


class AttachmentStatus(Status):
    virtual_machine_name: str | None = None


class VirtualMachineBlockDeviceAttachment(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT
    spec: BlockDeviceAttachmentSpec = Field(default_factory=BlockDeviceAttachmentSpec)
    status: AttachmentStatus = Field(default_factory=AttachmentStatus)


# --- snapshots and restores --------------------------------------------------------


class VirtualDiskSnapshotSpec(Model):
    virtual_disk_name: str | None = None
    required_consistency: bool | None = None
    # v0.14 - v0.23 only (required there); removed in v0.24.
    volume_snapshot_class_name: str | None = None


class VirtualDiskSnapshotStatus(Status):
    volume_snapshot_name: str | None = None
    consistent: bool | None = None


class VirtualDiskSnapshot(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_DISK_SNAPSHOT
    spec: VirtualDiskSnapshotSpec = Field(default_factory=VirtualDiskSnapshotSpec)
    status: VirtualDiskSnapshotStatus = Field(default_factory=VirtualDiskSnapshotStatus)


class VolumeSnapshotClassEntry(Model):
    storage_class_name: str | None = None
    volume_snapshot_class_name: str | None = None


class ResourceRef(Model):
    api_version: str | None = None
    kind: str | None = None
    name: str | None = None


class VirtualMachineSnapshotSpec(Model):
    virtual_machine_name: str | None = None
    required_consistency: bool | None = None
    keep_ip_address: str | None = Field(default=None, alias="keepIPAddress")
    # v0.14 - v0.23 only; removed in v0.24.
    volume_snapshot_classes: list[VolumeSnapshotClassEntry] = Field(default_factory=list)


class VirtualMachineSnapshotStatus(Status):
    consistent: bool | None = None
    virtual_machine_snapshot_secret_name: str | None = None
    virtual_disk_snapshot_names: list[str] = Field(default_factory=list)
    resources: list[ResourceRef] = Field(default_factory=list)


class VirtualMachineSnapshot(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE_SNAPSHOT
    spec: VirtualMachineSnapshotSpec = Field(default_factory=VirtualMachineSnapshotSpec)
    status: VirtualMachineSnapshotStatus = Field(default_factory=VirtualMachineSnapshotStatus)


class NameReplacementFrom(Model):
    kind: str | None = None
    name: str | None = None


class NameReplacement(Model):
    from_: NameReplacementFrom = Field(default_factory=NameReplacementFrom, alias="from")
    to: str | None = None


class VirtualMachineRestoreSpec(Model):
    virtual_machine_snapshot_name: str | None = None
    restore_mode: str | None = None
    name_replacements: list[NameReplacement] = Field(default_factory=list)


class VirtualMachineRestore(KubeObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE_RESTORE
    spec: VirtualMachineRestoreSpec = Field(default_factory=VirtualMachineRestoreSpec)
    status: Status = Field(default_factory=Status)


# --- VirtualMachineOperation and VirtualMachineSnapshotOperation (platform v1.1+) ---


class NameCustomization(Model):
    name_prefix: str | None = None
    name_suffix: str | None = None


class CloneSpec(Model):
    """`spec.clone` of a vmop Clone and `spec.createVirtualMachine` of a vmsop: the
    same shape and CEL rules. Note the singular `nameReplacement` (VirtualMachineRestore
    had `nameReplacements`)."""

    mode: str | None = None
    name_replacement: list[NameReplacement] = Field(default_factory=list)
    customization: NameCustomization | None = None


class RestoreOperationSpec(Model):
    mode: str | None = None
    virtual_machine_snapshot_name: str | None = None


class VirtualMachineOperationSpec(Model):
    type: str | None = None
    virtual_machine_name: str | None = None
    force: bool | None = None
    restore: RestoreOperationSpec | None = None
    clone: CloneSpec | None = None


class OperationResource(Model):
    """One item of an operation's status.resources (v1.10: all fields required)."""

    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    status: str | None = None
    message: str | None = None


class OperationStatus(Status):
    resources: list[OperationResource] = Field(default_factory=list)


# Phases after which an operation no longer blocks another one (OP-A6, CL-7).
FINISHED_OPERATION_PHASES = frozenset({"Completed", "Failed", "Superseded"})


class OperationObject(KubeObject):
    """What VirtualMachineOperation and VirtualMachineSnapshotOperation share."""

    status: OperationStatus = Field(default_factory=OperationStatus)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_OPERATION_PHASES


class VirtualMachineOperation(OperationObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE_OPERATION
    spec: VirtualMachineOperationSpec = Field(default_factory=VirtualMachineOperationSpec)

    @property
    def mode(self) -> str:
        spec = self.spec.restore if self.spec.type == "Restore" else self.spec.clone
        return (spec.mode or "") if spec is not None else ""

    @property
    def snapshot_name(self) -> str:
        restore = self.spec.restore
        return (restore.virtual_machine_snapshot_name or "") if restore is not None else ""


class VirtualMachineSnapshotOperationSpec(Model):
    type: str | None = None
    virtual_machine_snapshot_name: str | None = None
    create_virtual_machine: CloneSpec | None = None


class VirtualMachineSnapshotOperation(OperationObject):
    KIND: ClassVar[str] = kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION
    spec: VirtualMachineSnapshotOperationSpec = Field(default_factory=VirtualMachineSnapshotOperationSpec)

    @property
    def mode(self) -> str:
        spec = self.spec.create_virtual_machine
        return (spec.mode or "") if spec is not None else ""

    @property
    def snapshot_name(self) -> str:
        return self.spec.virtual_machine_snapshot_name or ""


class VirtualImage(KubeObject):
    """Only its existence matters (restore-images-missing)."""

    KIND: ClassVar[str] = kinds.VIRTUAL_IMAGE


class ClusterVirtualImage(KubeObject):
    KIND: ClassVar[str] = kinds.CLUSTER_VIRTUAL_IMAGE
    NAMESPACED: ClassVar[bool] = False


# --- core, storage and snapshot kinds ----------------------------------------------


class Secret(KubeObject):
    KIND: ClassVar[str] = kinds.SECRET
    type: str | None = None
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)


class PersistentVolumeClaimSpec(Model):
    storage_class_name: str | None = None


class PersistentVolumeClaim(KubeObject):
    KIND: ClassVar[str] = kinds.PERSISTENT_VOLUME_CLAIM
    spec: PersistentVolumeClaimSpec = Field(default_factory=PersistentVolumeClaimSpec)
    status: Status = Field(default_factory=Status)


class StorageClass(KubeObject):
    KIND: ClassVar[str] = kinds.STORAGE_CLASS
    NAMESPACED: ClassVar[bool] = False
    provisioner: str | None = None


class VolumeSnapshotClass(KubeObject):
    KIND: ClassVar[str] = kinds.VOLUME_SNAPSHOT_CLASS
    NAMESPACED: ClassVar[bool] = False
    driver: str | None = None
    deletion_policy: str | None = None

    @property
    def is_default(self) -> bool:
        return self.metadata.annotations.get(kinds.DEFAULT_CLASS_ANNOTATION) == "true"


class VolumeSnapshotSource(Model):
    persistent_volume_claim_name: str | None = None


class VolumeSnapshotSpec(Model):
    source: VolumeSnapshotSource = Field(default_factory=VolumeSnapshotSource)
    volume_snapshot_class_name: str | None = None


class VolumeSnapshotError(Model):
    message: str | None = None


class VolumeSnapshotStatus(Model):
    ready_to_use: bool | None = None
    restore_size: str | int | None = None
    error: VolumeSnapshotError | None = None


class VolumeSnapshot(KubeObject):
    KIND: ClassVar[str] = kinds.VOLUME_SNAPSHOT
    spec: VolumeSnapshotSpec = Field(default_factory=VolumeSnapshotSpec)
    status: VolumeSnapshotStatus = Field(default_factory=VolumeSnapshotStatus)


MODELS: dict[str, type[KubeObject]] = {
    model.KIND: model
    for model in (
        VirtualDisk,
        VirtualMachine,
        VirtualMachineIPAddress,
        VirtualMachineMACAddress,
        VirtualMachineBlockDeviceAttachment,
        VirtualDiskSnapshot,
        VirtualMachineSnapshot,
        VirtualMachineRestore,
        VirtualMachineOperation,
        VirtualMachineSnapshotOperation,
        VirtualImage,
        ClusterVirtualImage,
        Secret,
        PersistentVolumeClaim,
        StorageClass,
        VolumeSnapshotClass,
        VolumeSnapshot,
    )
}


def parse_object(raw: Any) -> KubeObject:
    """Parse a raw object of a known kind into its model.

    Raises pydantic.ValidationError for a wrong shape and KeyError for an unknown kind;
    callers turn both into messages naming the object and field."""
    kind = raw.get("kind") if isinstance(raw, dict) else None
    model = MODELS[kind] if isinstance(kind, str) else None
    if model is None:
        raise KeyError(kind)
    return model.model_validate(raw)
