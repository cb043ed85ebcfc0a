"""The threaded loop: watches alone drive the work (the periodic resync is set far
beyond the test), across a 410 Gone and dropped watch streams."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cluster.api import KubeApi
from reconciler.loop import Reconciler
from tests.kubeapi.server import KubeAPIServer

from . import objects as o
from . import scenario

pytestmark = pytest.mark.kubeapi


def test_watch_events_drive_snapshot_and_restore(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """A VolumeSnapshot event wakes its VDS, a VDS event its VMS, a VMS event the
    restore waiting for it; no resync and no poll happen within the test."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler(resync_period=3600, poll_interval=3600, workers=2)
    reconciler.start()
    try:
        api.create(o.restore("r1", "vms1", replacements=scenario.RENAMES))
        o.wait_for(lambda: o.phase(kubeapi, "virtualmachinerestores", "r1") == "Pending", what="r1 Pending")
        api.create(o.machine_snapshot("vms1"))
        o.wait_for(lambda: len(o.names(kubeapi, "volumesnapshots")) == 2, what="two VolumeSnapshots")
        kubeapi.expire_history()  # every watch gets 410 Gone and lists again
        o.wait_for(lambda: kubeapi.active_watches >= 4, what="the watches to come back")
        o.mark_volume_snapshots_ready(api)
        o.wait_for(lambda: o.phase(kubeapi, "virtualmachinesnapshots", "vms1") == "Ready", what="vms1 Ready")
        # r1 woke up on the snapshot's event: it conflicts with the VM that still exists.
        o.wait_for(lambda: o.phase(kubeapi, "virtualmachinerestores", "r1") == "Failed", what="r1 Failed")
        kubeapi.drop_watches()
        scenario.delete_original_vm(kubeapi, api)
        api.create(o.restore("r2", "vms1", replacements=scenario.RENAMES))
        o.wait_for(lambda: o.phase(kubeapi, "virtualmachinerestores", "r2") == "Ready", what="r2 Ready")
        assert scenario.restored_state(kubeapi) == scenario.RESTORED
    finally:
        reconciler.stop()


def test_periodic_resync_without_watch_events(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """Nothing reports VolumeSnapshot changes (every list and watch of them fails):
    the VDS still becomes Ready, found waiting by the periodic resync."""
    kubeapi.fail_next(lambda info: info.verb in ("list", "watch") and info.resource == "volumesnapshots",
                      code=500, count=10_000)
    o.stopped_vm_with_disks(kubeapi, "d1")
    reconciler = make_reconciler(resync_period=0.2, poll_interval=3600)
    reconciler.start()
    try:
        api.create(o.disk_snapshot("snap1", "d1"))
        [vs_name] = o.wait_for(lambda: o.phase(kubeapi, "virtualdisksnapshots", "snap1") == "InProgress"
                               and o.names(kubeapi, "volumesnapshots"), what="snap1 InProgress")
        resyncs = reconciler.reconciles
        api.patch("VolumeSnapshot", o.NS, vs_name, {"status": {"readyToUse": True}}, subresource="status")
        o.wait_for(lambda: o.phase(kubeapi, "virtualdisksnapshots", "snap1") == "Ready", what="snap1 Ready")
        assert reconciler.reconciles > resyncs
    finally:
        reconciler.stop()
