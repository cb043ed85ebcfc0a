"""VirtualDiskSnapshot end to end: the reconciler against the Kubernetes API test
server, the test playing the CSI snapshotter (it marks VolumeSnapshots ready)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from cluster.api import KubeApi
from policies.catalogue import Action
from policies.config import PolicyConfig
from policies.engine import Engine
from reconciler.loop import Reconciler
from reconciler.objects import FILESYSTEM_REQUEST_ANNOTATION
from tests.kubeapi.server import KubeAPIServer

from . import objects as o

pytestmark = pytest.mark.kubeapi

VDS = "virtualdisksnapshots"
VS_PREFIX = "d8v-vds-"


def volume_snapshot_of(server: KubeAPIServer, name: str) -> dict:
    vs_name = o.status(server, VDS, name)["volumeSnapshotName"]
    vs = server.get_object("volumesnapshots", vs_name, o.NS)
    assert vs is not None
    return vs


def test_stopped_vm_pending_in_progress_ready_consistent(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """A disk of a stopped VM: Pending, then InProgress with a VolumeSnapshot that is
    not ready, then (the CSI driver marks it ready) Ready with consistent: true. The
    VolumeSnapshot carries the platform's name, annotations, owner and finalizer."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    kubeapi.put_object({**o.disk("d1", vm="vm1", labels={"tier": "db"}, annotations={"note": "x"})})
    created = api.create(o.disk_snapshot("snap1", "d1"))
    reconciler = make_reconciler()
    key = ("VirtualDiskSnapshot", o.NS, "snap1")

    reconciler.process(key)
    assert o.phase(kubeapi, VDS, "snap1") == "Pending"
    assert "virtualization.deckhouse.io/vdsnapshot-cleanup" in kubeapi.get_object(VDS, "snap1", o.NS)["metadata"]["finalizers"]

    reconciler.run_until_idle()
    assert o.phase(kubeapi, VDS, "snap1") == "InProgress"
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert (ready["status"], ready["reason"]) == ("False", "Snapshotting")
    assert ready["message"] == 'Waiting for the snapshot of virtual disk "d1" to be ready to use.'
    vs = volume_snapshot_of(kubeapi, "snap1")
    uid = created["metadata"]["uid"]
    assert vs["metadata"]["name"] == f"{VS_PREFIX}snap1-{uid}"
    assert vs["spec"] == {"source": {"persistentVolumeClaimName": "pvc-d1"}}
    assert vs["metadata"]["finalizers"] == ["virtualization.deckhouse.io/vdsnapshot-protection"]
    [owner] = vs["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("VirtualDiskSnapshot", "snap1", uid, True)
    annotations = vs["metadata"]["annotations"]
    assert annotations["virtualization.deckhouse.io/storage-class-name"] == "fast"
    assert annotations["virtualization.deckhouse.io/volume-mode"] == "Block"
    assert annotations["virtualization.deckhouse.io/access-mode"] == "ReadWriteMany"
    assert json.loads(annotations["virtualization.deckhouse.io/vd-original-labels"]) == {"tier": "db"}
    assert json.loads(annotations["virtualization.deckhouse.io/vd-original-annotations"]) == {"note": "x"}
    assert annotations["virtualization.deckhouse.io/vd-original-size"] == "10Gi"
    assert "consistent" not in o.status(kubeapi, VDS, "snap1")

    assert o.mark_volume_snapshots_ready(api) == [vs["metadata"]["name"]]
    reconciler.run_until_idle()
    final = o.status(kubeapi, VDS, "snap1")
    assert final["phase"] == "Ready"
    assert final["consistent"] is True
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert (ready["status"], ready["reason"]) == ("True", "VirtualDiskSnapshotReady")
    assert final["observedGeneration"] == 1
    # Stopped: never frozen.
    vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
    assert FILESYSTEM_REQUEST_ANNOTATION not in (vm["metadata"].get("annotations") or {})
    assert o.names(kubeapi, "volumesnapshots") == [vs["metadata"]["name"]]


def test_running_vm_is_frozen_while_snapshotting_and_thawed_after(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """A running VM with a ready agent is frozen (the request annotation on the VM)
    before the VolumeSnapshot is created, the snapshot is consistent, and the VM is
    unfrozen before the snapshot turns Ready."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    o.seed(kubeapi, o.vm("vm1", phase="Running", agent=True, disks=("d1",)))
    api.create(o.disk_snapshot("snap1", "d1"))
    reconciler = make_reconciler()
    reconciler.run_until_idle()
    vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
    assert vm["metadata"]["annotations"][FILESYSTEM_REQUEST_ANNOTATION] == "freeze"
    assert o.phase(kubeapi, VDS, "snap1") == "InProgress"

    o.mark_volume_snapshots_ready(api)
    reconciler.run_until_idle()
    assert o.status(kubeapi, VDS, "snap1")["consistent"] is True
    assert o.phase(kubeapi, VDS, "snap1") == "Ready"
    vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
    assert vm["metadata"]["annotations"][FILESYSTEM_REQUEST_ANNOTATION] == "unfreeze"


@pytest.mark.parametrize(
    ("required", "phase", "reason", "message"),
    [
        pytest.param(
            None, "Failed", "PotentiallyInconsistent",
            'Cannot take a consistent snapshot of virtual disk "d1" attached to virtual machine "vm1": '
            "virtual machine agent is not ready and the virtual machine cannot be frozen.",
            id="required-consistency-fails",
        ),
        pytest.param(False, "Ready", "VirtualDiskSnapshotReady", "", id="no-consistency-required-goes-on"),
    ],
)
def test_running_vm_without_agent(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler],
    required: bool | None, phase: str, reason: str, message: str,
) -> None:
    """A running VM that cannot be frozen: with requiredConsistency (the default) the
    snapshot fails as the platform's does; without, it is taken, not consistent."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    o.seed(kubeapi, o.vm("vm1", phase="Running", agent=False, disks=("d1",)))
    api.create(o.disk_snapshot("snap1", "d1", required=required))
    reconciler = make_reconciler()
    reconciler.run_until_idle()
    o.mark_volume_snapshots_ready(api)
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VDS, "snap1") == phase
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert (ready["reason"], ready["message"]) == (reason, message)
    assert "consistent" not in o.status(kubeapi, VDS, "snap1")
    if phase == "Failed":
        assert o.names(kubeapi, "volumesnapshots") == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param("no-disk", 'Cannot take a snapshot: the virtual disk "d1" does not exist.', id="disk-missing"),
        pytest.param("disk-resizing", 'Cannot take a snapshot: the virtual disk "d1" is not ready.', id="disk-not-ready"),
        pytest.param("no-pvc", 'Cannot take a snapshot: the persistent volume claim for virtual disk "d1" does not exist.',
                     id="pvc-missing"),
        pytest.param("pvc-pending",
                     'Cannot take a snapshot: the persistent volume claim "pvc-d1" for virtual disk "d1" is not in phase Bound.',
                     id="pvc-not-bound"),
    ],
)
def test_failed_preconditions_fail_with_the_platform_reason(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler], setup: str, message: str
) -> None:
    """The cluster changed after admission: the engine's vds-* rules, run again at
    Pending, fail the snapshot with WaitingForTheVirtualDisk and the platform's text."""
    o.seed(kubeapi, o.storage_class())
    if setup != "no-disk":
        o.seed(kubeapi, o.disk("d1", phase="Resizing" if setup == "disk-resizing" else "Ready"))
    if setup not in ("no-disk", "no-pvc"):
        o.seed(kubeapi, o.pvc("pvc-d1", phase="Pending" if setup == "pvc-pending" else "Bound"))
    api.create(o.disk_snapshot("snap1", "d1"))
    make_reconciler().run_until_idle()
    assert o.phase(kubeapi, VDS, "snap1") == "Failed"
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "WaitingForTheVirtualDisk", message)
    assert o.names(kubeapi, "volumesnapshots") == []


def test_a_missing_disk_fails_even_with_its_rule_turned_off(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """The policy configures what the rules deny; it cannot make a missing disk
    snapshottable: the platform's failure is reported all the same."""
    api.create(o.disk_snapshot("snap1", "d1"))
    relaxed = Engine(PolicyConfig(rules={"vds-disk-exists": Action.OFF, "vds-disk-pvc-bound": Action.OFF}))
    make_reconciler(engine=relaxed).run_until_idle()
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert (o.phase(kubeapi, VDS, "snap1"), ready["message"]) == (
        "Failed", 'Cannot take a snapshot: the virtual disk "d1" does not exist.')


def test_volume_snapshot_error_fails_and_thaws(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    o.stopped_vm_with_disks(kubeapi, "d1")
    o.seed(kubeapi, o.vm("vm1", phase="Running", agent=True, disks=("d1",)))
    api.create(o.disk_snapshot("snap1", "d1"))
    reconciler = make_reconciler()
    reconciler.run_until_idle()
    vs_name = o.status(kubeapi, VDS, "snap1")["volumeSnapshotName"]
    o.fail_volume_snapshot(api, vs_name, "the CSI driver refused")
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VDS, "snap1") == "Failed"
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert (ready["reason"], ready["message"]) == (
        "VirtualDiskSnapshotFailed", f'VolumeSnapshot "{vs_name}" has an error: the CSI driver refused.')
    vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
    assert vm["metadata"]["annotations"][FILESYSTEM_REQUEST_ANNOTATION] == "unfreeze"


def test_foreign_volume_snapshot_under_the_name_is_a_conflict(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """An object under the deterministic name that this VDS did not create is never
    adopted: the snapshot fails and the object is left alone."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    uid = api.create(o.disk_snapshot("snap1", "d1"))["metadata"]["uid"]
    vs_name = f"{VS_PREFIX}snap1-{uid}"
    o.seed(kubeapi, {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                     "metadata": {"name": vs_name, "namespace": o.NS},
                     "spec": {"source": {"persistentVolumeClaimName": "other"}}})
    make_reconciler().run_until_idle()
    assert o.phase(kubeapi, VDS, "snap1") == "Failed"
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert ready["reason"] == "VirtualDiskSnapshotFailed"
    assert ready["message"].startswith(f'The VolumeSnapshot "{vs_name}" already exists and does not belong')
    assert kubeapi.get_object("volumesnapshots", vs_name, o.NS)["spec"]["source"]["persistentVolumeClaimName"] == "other"


def test_ready_snapshot_whose_volume_snapshot_vanishes_is_lost(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    o.stopped_vm_with_disks(kubeapi, "d1")
    api.create(o.disk_snapshot("snap1", "d1"))
    reconciler = make_reconciler()
    reconciler.run_until_idle()
    o.mark_volume_snapshots_ready(api)
    reconciler.run_until_idle()
    vs_name = o.status(kubeapi, VDS, "snap1")["volumeSnapshotName"]
    api.patch("VolumeSnapshot", o.NS, vs_name, {"metadata": {"finalizers": []}})
    api.delete("VolumeSnapshot", o.NS, vs_name)
    reconciler.run_until_idle()
    ready = o.condition_of(kubeapi, VDS, "snap1", "VirtualDiskSnapshotReady")
    assert o.phase(kubeapi, VDS, "snap1") == "Failed"
    assert (ready["reason"], ready["message"]) == ("Lost", f'The underlying VolumeSnapshot "{vs_name}" is no longer available.')


def test_deletion_removes_the_volume_snapshot_then_the_finalizer(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """Terminating is written, the VolumeSnapshot loses its protection finalizer and
    is deleted, and only then the VDS's cleanup finalizer goes (and with it the VDS)."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    api.create(o.disk_snapshot("snap1", "d1"))
    reconciler = make_reconciler()
    reconciler.run_until_idle()
    o.mark_volume_snapshots_ready(api)
    reconciler.run_until_idle()
    [vs_name] = o.names(kubeapi, "volumesnapshots")
    api.delete("VirtualDiskSnapshot", o.NS, "snap1")
    assert o.phase(kubeapi, VDS, "snap1") == "Ready"  # held by the cleanup finalizer
    start = len(kubeapi.request_log)
    reconciler.process(("VirtualDiskSnapshot", o.NS, "snap1"))
    assert kubeapi.get_object(VDS, "snap1", o.NS) is None
    assert o.names(kubeapi, "volumesnapshots") == []
    writes = [(method, path.split("?")[0].rsplit("/namespaces/ns1/", 1)[1])
              for method, path in kubeapi.request_log[start:] if method != "GET"]
    assert writes == [
        ("PUT", "virtualdisksnapshots/snap1/status"),
        ("PATCH", f"volumesnapshots/{vs_name}"),
        ("DELETE", f"volumesnapshots/{vs_name}"),
        ("PATCH", "virtualdisksnapshots/snap1"),
    ]


def test_snapshot_class_and_long_names(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """A v0.14-v0.23 volumeSnapshotClassName goes to the VolumeSnapshot; a VDS name
    so long that `d8v-vds-<name>-<uid>` would pass 253 characters is shortened."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    o.seed(kubeapi, {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                     "metadata": {"name": "fast-snap"}, "driver": "fast.csi"})
    long_name = "s" * 240
    snapshot = o.disk_snapshot(long_name, "d1")
    snapshot["spec"]["volumeSnapshotClassName"] = "fast-snap"
    uid = api.create(snapshot)["metadata"]["uid"]
    # The class field exists up to v0.23; from v0.24 snapshot-class-default denies a
    # class without a default for its driver, which this cluster has not.
    old_platform = Engine(PolicyConfig.model_validate({"platformVersion": "0.23"}))
    make_reconciler(engine=old_platform).run_until_idle()
    [vs] = kubeapi.objects("volumesnapshots", o.NS)
    assert len(vs["metadata"]["name"]) == 253
    assert vs["metadata"]["name"].startswith(VS_PREFIX + "sss") and vs["metadata"]["name"].endswith("-" + uid)
    assert vs["spec"]["volumeSnapshotClassName"] == "fast-snap"
