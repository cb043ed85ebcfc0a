"""The read-only view of the cluster the rules decide from, and its in-memory form.

`ClusterView` is the protocol every front-end provides: the CLI and the audit build an
`InMemoryView` from state files, the webhook and the reconciler a watch cache over the
API server (in `cluster/`). Rules only read; every lookup and index costs O(1) in the size
of the view (dictionary lookups, never a scan), so a decision takes the same time on a
100-object CI dump and a 100,000-object cluster.

The view also knows which kinds it was *given* (SPEC: at least one object of the kind,
or an explicit, possibly empty, list of that kind), so a rule can report `unknown`
instead of passing silently when a CI dump lacks, say, PersistentVolumeClaims.

Pure: no I/O here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, cast

from . import kinds
from .models import (
    KubeObject,
    VirtualDisk,
    VirtualMachineBlockDeviceAttachment,
    VirtualMachineIPAddress,
    VirtualMachineMACAddress,
    VirtualMachineOperation,
    VirtualMachineSnapshotOperation,
    VolumeSnapshotClass,
)

T = TypeVar("T", bound=KubeObject)


class ClusterView(Protocol):
    """What a rule may ask of the cluster. Read-only."""

    def has_kind(self, kind: str) -> bool:
        """True when the view was given the kind (even with no object of it)."""

    def get(self, model: type[T], namespace: str, name: str) -> T | None:
        """The object of `model`'s kind by namespace and name ("" for cluster-scoped)."""

    def list(self, model: type[T], namespace: str | None = None) -> Iterable[T]:
        """Every object of a kind, in one namespace or (None) in all."""

    def ip_addresses_holding(self, namespace: str, address: str) -> Sequence[VirtualMachineIPAddress]:
        """VirtualMachineIPAddresses of the namespace whose spec.staticIP or
        status.address is `address` (the platform's own index covers both)."""

    def mac_addresses_holding(self, namespace: str, address: str) -> Sequence[VirtualMachineMACAddress]:
        """VirtualMachineMACAddresses whose spec.address or status.address is `address`."""

    def disks_attached_to(self, namespace: str, vm_name: str) -> Sequence[VirtualDisk]:
        """VirtualDisks whose status.attachedToVirtualMachines names the VM."""

    def attachments_of(self, namespace: str, vm_name: str) -> Sequence[VirtualMachineBlockDeviceAttachment]:
        """VirtualMachineBlockDeviceAttachments whose spec.virtualMachineName is the VM."""

    def snapshot_classes_for_driver(self, driver: str) -> Sequence[VolumeSnapshotClass]:
        """VolumeSnapshotClasses of a CSI driver."""

    def unfinished_operations_of_vm(self, namespace: str, vm_name: str) -> Sequence[VirtualMachineOperation]:
        """VirtualMachineOperations for the VM whose phase is not Completed, Failed or
        Superseded (of every type: any of them blocks a new one, OP-A6)."""

    def unfinished_operations_of_snapshot(
        self, namespace: str, snapshot_name: str
    ) -> Sequence[VirtualMachineSnapshotOperation]:
        """Unfinished VirtualMachineSnapshotOperations on the snapshot (CL-7)."""

    def counts(self) -> dict[str, int]:
        """Objects held per kind (for metrics and reports)."""


class InMemoryView:
    """A `ClusterView` over objects held in dictionaries, with its indexes kept up to
    date on every `put` and `remove` (so `snapguard check` can apply objects in order
    and the watch cache can reuse it)."""

    def __init__(self, objects: Iterable[KubeObject] = (), given_kinds: Iterable[str] = ()) -> None:
        # kind -> namespace -> name -> object
        self._objects: dict[str, dict[str, dict[str, KubeObject]]] = defaultdict(dict)
        self._given: set[str] = set(given_kinds)
        self._ip_index: dict[tuple[str, str], dict[str, VirtualMachineIPAddress]] = defaultdict(dict)
        self._mac_index: dict[tuple[str, str], dict[str, VirtualMachineMACAddress]] = defaultdict(dict)
        self._disk_index: dict[tuple[str, str], dict[str, VirtualDisk]] = defaultdict(dict)
        self._vmbda_index: dict[tuple[str, str], dict[str, VirtualMachineBlockDeviceAttachment]] = defaultdict(dict)
        self._class_index: dict[str, dict[str, VolumeSnapshotClass]] = defaultdict(dict)
        self._vmop_index: dict[tuple[str, str], dict[str, VirtualMachineOperation]] = defaultdict(dict)
        self._vmsop_index: dict[tuple[str, str], dict[str, VirtualMachineSnapshotOperation]] = defaultdict(dict)
        for obj in objects:
            self.put(obj)

    # --- writes (used by loaders and caches, never by rules) -----------------------

    def mark_given(self, kind: str) -> None:
        self._given.add(kind)

    def put(self, obj: KubeObject) -> None:
        """Add or replace an object (by kind, namespace and name).

        Readers of the watch cache take no lock, so an update never leaves a moment in
        which an index lacks the object: the new entries go in first (replacing the old
        object under keys both versions share, one atomic dict assignment each) and only
        the keys the new version lost are dropped afterwards."""
        kind = obj.KIND or obj.kind
        namespace = self._namespace_of(kind, obj)
        by_name = self._objects[kind].setdefault(namespace, {})
        previous = by_name.get(obj.name)
        new_keys = list(self._index_keys(obj, namespace))
        for index, key in new_keys:
            index[key][obj.name] = obj
        by_name[obj.name] = obj
        self._given.add(kind)
        if previous is None:
            return
        kept = {(id(index), key) for index, key in new_keys}
        for index, key in self._index_keys(previous, namespace):
            if (id(index), key) in kept:
                continue
            entries = index.get(key)
            if entries is not None and entries.get(obj.name) is previous:
                del entries[obj.name]
                if not entries:
                    del index[key]

    def remove(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        namespace = namespace if kinds.is_namespaced(kind) else ""
        by_name = self._objects.get(kind, {}).get(namespace)
        if not by_name or name not in by_name:
            return None
        obj = by_name.pop(name)
        if not by_name:
            del self._objects[kind][namespace]
        self._unindex(obj, namespace)
        return obj

    @staticmethod
    def _namespace_of(kind: str, obj: KubeObject) -> str:
        if not kinds.is_namespaced(kind):
            return ""
        return obj.metadata.namespace or "default"

    def _index(self, obj: KubeObject, namespace: str) -> None:
        for index, key in self._index_keys(obj, namespace):
            index[key][obj.name] = obj

    def _unindex(self, obj: KubeObject, namespace: str) -> None:
        for index, key in self._index_keys(obj, namespace):
            entries = index.get(key)
            if entries is not None:
                entries.pop(obj.name, None)
                if not entries:
                    del index[key]

    def _index_keys(
        self, obj: KubeObject, namespace: str
    ) -> Iterator[tuple[dict[Any, dict[str, Any]], Any]]:
        if isinstance(obj, VirtualMachineIPAddress):
            for address in obj.addresses():
                yield self._ip_index, (namespace, address)
        elif isinstance(obj, VirtualMachineMACAddress):
            for address in obj.addresses():
                yield self._mac_index, (namespace, address)
        elif isinstance(obj, VirtualDisk):
            for vm in {entry.name for entry in obj.status.attached_to_virtual_machines if entry.name}:
                yield self._disk_index, (namespace, vm)
        elif isinstance(obj, VirtualMachineBlockDeviceAttachment):
            if obj.spec.virtual_machine_name:
                yield self._vmbda_index, (namespace, obj.spec.virtual_machine_name)
        elif isinstance(obj, VolumeSnapshotClass) and obj.driver:
            yield self._class_index, obj.driver
        elif isinstance(obj, VirtualMachineOperation):
            # Only unfinished ones: a put of the Completed version drops the entry.
            if not obj.finished and obj.spec.virtual_machine_name:
                yield self._vmop_index, (namespace, obj.spec.virtual_machine_name)
        elif isinstance(obj, VirtualMachineSnapshotOperation) and not obj.finished and obj.snapshot_name:
            yield self._vmsop_index, (namespace, obj.snapshot_name)

    # --- ClusterView -----------------------------------------------------------------

    def has_kind(self, kind: str) -> bool:
        return kind in self._given

    def get(self, model: type[T], namespace: str, name: str) -> T | None:
        # Hot path: three dictionary lookups. Objects are stored under their model's
        # KIND by `put`, so the cast is exact.
        space = self._objects.get(model.KIND)
        if space is None:
            return None
        by_name = space.get(namespace if model.NAMESPACED else "")
        return cast("T | None", by_name.get(name) if by_name is not None else None)

    def list(self, model: type[T], namespace: str | None = None) -> Iterable[T]:
        by_namespace = self._objects.get(model.KIND, {})
        if namespace is not None:
            spaces: Iterable[dict[str, KubeObject]] = [by_namespace.get(namespace, {})]
        else:
            spaces = list(by_namespace.values())
        for space in spaces:
            for obj in list(space.values()):
                if isinstance(obj, model):
                    yield obj

    def ip_addresses_holding(self, namespace: str, address: str) -> Sequence[VirtualMachineIPAddress]:
        return list(self._ip_index.get((namespace, address), {}).values())

    def mac_addresses_holding(self, namespace: str, address: str) -> Sequence[VirtualMachineMACAddress]:
        return list(self._mac_index.get((namespace, address.lower()), {}).values())

    def disks_attached_to(self, namespace: str, vm_name: str) -> Sequence[VirtualDisk]:
        return list(self._disk_index.get((namespace, vm_name), {}).values())

    def attachments_of(self, namespace: str, vm_name: str) -> Sequence[VirtualMachineBlockDeviceAttachment]:
        return list(self._vmbda_index.get((namespace, vm_name), {}).values())

    def snapshot_classes_for_driver(self, driver: str) -> Sequence[VolumeSnapshotClass]:
        return list(self._class_index.get(driver, {}).values())

    def unfinished_operations_of_vm(self, namespace: str, vm_name: str) -> Sequence[VirtualMachineOperation]:
        return list(self._vmop_index.get((namespace, vm_name), {}).values())

    def unfinished_operations_of_snapshot(
        self, namespace: str, snapshot_name: str
    ) -> Sequence[VirtualMachineSnapshotOperation]:
        return list(self._vmsop_index.get((namespace, snapshot_name), {}).values())

    def counts(self) -> dict[str, int]:
        return {
            kind: sum(len(space) for space in spaces.values())
            for kind, spaces in self._objects.items()
        } | {kind: 0 for kind in self._given if kind not in self._objects}
