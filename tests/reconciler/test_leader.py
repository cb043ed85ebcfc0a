"""Leader election over a coordination.k8s.io/v1 Lease: one replica acts, the other
takes over when the first releases the Lease or stops renewing it; a replica that
loses the Lease stops writing at once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cluster.api import KubeApi
from cluster.leases import LeaseApi
from reconciler.client import NotLeader
from reconciler.leader import LeaderElector
from reconciler.loop import Reconciler
from tests.kubeapi.server import KubeAPIServer

from . import objects as o

pytestmark = pytest.mark.kubeapi

LEASE_NS = "leases"
LEASE = "snapguard"
VDS = "virtualdisksnapshots"


def elector(api: KubeApi, identity: str, **timing: float) -> LeaderElector:
    timing = {"lease_duration": 1.0, "renew_deadline": 0.6, "retry_period": 0.05, **timing}
    return LeaderElector(LeaseApi(api), LEASE_NS, LEASE, identity, **timing)


def lease(server: KubeAPIServer) -> dict:
    obj = server.get_object("leases", LEASE, LEASE_NS)
    assert obj is not None
    return obj["spec"]


def test_acquire_renew_release_hand_over(kubeapi: KubeAPIServer, api: KubeApi) -> None:
    a, b = elector(api, "a"), elector(api, "b")
    assert a.try_acquire_or_renew() and a.is_leader()
    spec = lease(kubeapi)
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("a", 1, 0)
    assert spec["acquireTime"] == spec["renewTime"] and spec["renewTime"].endswith("Z")

    assert not b.try_acquire_or_renew() and not b.is_leader()
    assert a.try_acquire_or_renew()
    renewed = lease(kubeapi)
    assert renewed["acquireTime"] == spec["acquireTime"] and renewed["renewTime"] >= spec["renewTime"]

    assert a.release() and not a.is_leader()
    assert lease(kubeapi)["holderIdentity"] == ""
    assert b.try_acquire_or_renew()  # released: no need to wait for expiry
    spec = lease(kubeapi)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    assert not a.try_acquire_or_renew()


def test_a_silent_leader_is_replaced_after_the_lease_duration(kubeapi: KubeAPIServer, api: KubeApi) -> None:
    a, b = elector(api, "a"), elector(api, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b now watches the record
    # a stops renewing (killed); b takes over once the record has not changed for 1 s.
    o.wait_for(b.try_acquire_or_renew, timeout=5, what="b to take the expired lease")
    assert (lease(kubeapi)["holderIdentity"], lease(kubeapi)["leaseTransitions"]) == ("b", 1)
    assert not a.is_leader()  # its own renew deadline has passed too


def test_losing_the_lease_stops_writes_at_once(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    a = elector(api, "a", lease_duration=30.0, renew_deadline=20.0, retry_period=1.0)
    reconciler = make_reconciler(elector=a)
    assert a.try_acquire_or_renew()
    current = LeaseApi(api).get(LEASE_NS, LEASE)
    current["spec"] = {**current["spec"], "holderIdentity": "intruder"}
    LeaseApi(api).replace(current)
    assert a.is_leader()  # it does not know yet
    assert not a.try_acquire_or_renew()  # the next renewal sees another holder
    assert not a.is_leader()
    with pytest.raises(NotLeader):
        reconciler.client.patch("VirtualMachine", o.NS, "vm1", {})
    o.stopped_vm_with_disks(kubeapi, "d1")
    api.create(o.disk_snapshot("snap1", "d1"))
    reconciler.run_until_idle()
    assert reconciler.client.writes == 0
    assert o.phase(kubeapi, VDS, "snap1") == ""


def test_an_unreachable_api_ends_leadership_after_the_renew_deadline(kubeapi: KubeAPIServer, api: KubeApi) -> None:
    a = elector(api, "a")
    assert a.try_acquire_or_renew()
    kubeapi.fail_next("*", "leases", code=503, count=1000)
    assert a.try_acquire_or_renew()  # a failed renewal: still leader within the deadline
    o.wait_for(lambda: not a.try_acquire_or_renew(), timeout=5, what="the renew deadline to pass")
    assert not a.is_leader()


def test_two_reconcilers_only_the_leader_acts_then_the_other_takes_over(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """Stepped by hand: the leader snapshots; the other makes no write; after the
    leader stops (releasing the Lease) the other acts on a new snapshot."""
    first = make_reconciler(elector=elector(api, "first"))
    second = make_reconciler(elector=elector(api, "second"))
    o.stopped_vm_with_disks(kubeapi, "d1")
    api.create(o.disk_snapshot("snap1", "d1"))
    first.run_until_idle()
    second.run_until_idle()
    assert o.phase(kubeapi, VDS, "snap1") == "InProgress"
    assert first.client.writes > 0 and second.client.writes == 0

    first.stop()
    api.create(o.disk_snapshot("snap2", "d1"))
    o.mark_volume_snapshots_ready(api)
    second.run_until_idle()
    first.run_until_idle()
    assert o.phase(kubeapi, VDS, "snap1") == "Ready"
    assert o.phase(kubeapi, VDS, "snap2") == "InProgress"
    assert lease(kubeapi)["holderIdentity"] == "second"


def test_threaded_replicas_fail_over_when_the_leader_dies(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """Both run their threads (watches, workers, elector). One leads and snapshots;
    it dies without releasing the Lease; the other takes over once the Lease expires
    and finishes the work, and the dead one writes nothing more."""
    replicas = {name: make_reconciler(elector=elector(api, name), resync_period=0.2) for name in ("r1", "r2")}
    o.stopped_vm_with_disks(kubeapi, "d1")
    for replica in replicas.values():
        replica.start()
    try:
        holder = o.wait_for(lambda: (lease_obj := kubeapi.get_object("leases", LEASE, LEASE_NS))
                            and lease_obj["spec"]["holderIdentity"], what="a leader")
        api.create(o.disk_snapshot("snap1", "d1"))
        o.wait_for(lambda: o.phase(kubeapi, VDS, "snap1") == "InProgress"
                   and o.status(kubeapi, VDS, "snap1").get("volumeSnapshotName"), what="snap1 in progress")
        leader, other = replicas[holder], replicas["r2" if holder == "r1" else "r1"]
        assert leader.client.writes > 0 and other.client.writes == 0

        leader.stop(release=False)  # killed: the Lease stays until it expires
        writes_at_death = leader.client.writes
        o.mark_volume_snapshots_ready(api)
        api.create(o.disk_snapshot("snap2", "d1"))
        o.wait_for(lambda: o.phase(kubeapi, VDS, "snap1") == "Ready" and o.phase(kubeapi, VDS, "snap2") == "InProgress",
                   timeout=10, what="the other replica to finish the work")
        assert lease(kubeapi)["holderIdentity"] == other.elector.identity
        assert leader.client.writes == writes_at_death
        assert other.client.writes > 0
    finally:
        for replica in replicas.values():
            replica.stop()
