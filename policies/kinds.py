"""The kinds the product governs or reads, with their API coordinates.

One table, so the webhook configuration, the state loader, the watch cache and the
reconciler agree on groups, versions, plurals and scope. Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "virtualization.deckhouse.io"
VERSION = "v1alpha2"
API_VERSION = f"{GROUP}/{VERSION}"

# The snapshot Secret type the platform gives the Secret of a VirtualMachineSnapshot.
SNAPSHOT_SECRET_TYPE = "virtualmachine.virtualization.deckhouse.io/snapshot"
# Annotation the platform (and our reconciler) puts on every object a restore creates.
RESTORE_ANNOTATION = "virtualization.deckhouse.io/vmrestore"
DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
VOLUME_SNAPSHOT_STORAGE_CLASS_ANNOTATION = "virtualization.deckhouse.io/storage-class-name"


@dataclass(frozen=True)
class KindInfo:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True
    short: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


VIRTUAL_DISK = "VirtualDisk"
VIRTUAL_MACHINE = "VirtualMachine"
VIRTUAL_MACHINE_IP_ADDRESS = "VirtualMachineIPAddress"
VIRTUAL_MACHINE_MAC_ADDRESS = "VirtualMachineMACAddress"
VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT = "VirtualMachineBlockDeviceAttachment"
VIRTUAL_DISK_SNAPSHOT = "VirtualDiskSnapshot"
VIRTUAL_MACHINE_SNAPSHOT = "VirtualMachineSnapshot"
VIRTUAL_MACHINE_RESTORE = "VirtualMachineRestore"
VIRTUAL_MACHINE_OPERATION = "VirtualMachineOperation"
VIRTUAL_MACHINE_SNAPSHOT_OPERATION = "VirtualMachineSnapshotOperation"
VIRTUAL_IMAGE = "VirtualImage"
CLUSTER_VIRTUAL_IMAGE = "ClusterVirtualImage"
SECRET = "Secret"
PERSISTENT_VOLUME_CLAIM = "PersistentVolumeClaim"
STORAGE_CLASS = "StorageClass"
VOLUME_SNAPSHOT_CLASS = "VolumeSnapshotClass"
VOLUME_SNAPSHOT = "VolumeSnapshot"

KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo(VIRTUAL_DISK, GROUP, VERSION, "virtualdisks", short="vd"),
        KindInfo(VIRTUAL_MACHINE, GROUP, VERSION, "virtualmachines", short="vm"),
        KindInfo(VIRTUAL_MACHINE_IP_ADDRESS, GROUP, VERSION, "virtualmachineipaddresses", short="vmip"),
        KindInfo(VIRTUAL_MACHINE_MAC_ADDRESS, GROUP, VERSION, "virtualmachinemacaddresses", short="vmmac"),
        KindInfo(
            VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT,
            GROUP,
            VERSION,
            "virtualmachineblockdeviceattachments",
            short="vmbda",
        ),
        KindInfo(VIRTUAL_DISK_SNAPSHOT, GROUP, VERSION, "virtualdisksnapshots", short="vds"),
        KindInfo(VIRTUAL_MACHINE_SNAPSHOT, GROUP, VERSION, "virtualmachinesnapshots", short="vms"),
        KindInfo(VIRTUAL_MACHINE_RESTORE, GROUP, VERSION, "virtualmachinerestores", short="vmrestore"),
        KindInfo(VIRTUAL_MACHINE_OPERATION, GROUP, VERSION, "virtualmachineoperations", short="vmop"),
        KindInfo(
            VIRTUAL_MACHINE_SNAPSHOT_OPERATION,
            GROUP,
            VERSION,
            "virtualmachinesnapshotoperations",
            short="vmsop",
        ),
        KindInfo(VIRTUAL_IMAGE, GROUP, VERSION, "virtualimages", short="vi"),
        KindInfo(CLUSTER_VIRTUAL_IMAGE, GROUP, VERSION, "clustervirtualimages", namespaced=False, short="cvi"),
        KindInfo(SECRET, "", "v1", "secrets"),
        KindInfo(PERSISTENT_VOLUME_CLAIM, "", "v1", "persistentvolumeclaims", short="pvc"),
        KindInfo(STORAGE_CLASS, "storage.k8s.io", "v1", "storageclasses", namespaced=False, short="sc"),
        KindInfo(
            VOLUME_SNAPSHOT_CLASS,
            "snapshot.storage.k8s.io",
            "v1",
            "volumesnapshotclasses",
            namespaced=False,
            short="vsclass",
        ),
        KindInfo(VOLUME_SNAPSHOT, "snapshot.storage.k8s.io", "v1", "volumesnapshots", short="vs"),
    )
}

# Kinds whose CREATE/UPDATE the product decides.
SNAPSHOT_KINDS = (VIRTUAL_DISK_SNAPSHOT, VIRTUAL_MACHINE_SNAPSHOT, VIRTUAL_MACHINE_RESTORE)
# The restore API of platform v1.1+ (vmop Restore/Clone) and v1.2+ (vmsop).
OPERATION_KINDS = (VIRTUAL_MACHINE_OPERATION, VIRTUAL_MACHINE_SNAPSHOT_OPERATION)
# vmop types the product governs; Start, Stop, Restart, Migrate and Evict are not.
GOVERNED_OPERATION_TYPES = ("Restore", "Clone")
GOVERNED_KINDS = (*SNAPSHOT_KINDS, *OPERATION_KINDS, VIRTUAL_DISK)


def kind_info(kind: str) -> KindInfo | None:
    return KINDS.get(kind)


def is_namespaced(kind: str) -> bool:
    info = KINDS.get(kind)
    return info.namespaced if info else True
