"""The watch cache against the in-process API server, driven by the real `kubernetes`
client: it lists, then follows creates, updates and deletes; it relists on 410 and
drops what was deleted meanwhile; it resumes after dropped watches and a restarted
server, answering from the last state meanwhile, and its readiness says so; bookmarks
advance its resourceVersion; Secrets are listed by type only and others read by name;
a kind the server does not serve is unknown.

The server sends a BOOKMARK every 0.2 s on a quiet watch (the `kubeapi` fixture), and
the caches retry within 20-200 ms; every wait is a bounded poll (`wait_for`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes
import pytest

from cluster.api import KubeApi
from cluster.watchcache import SecretLookupError, WatchCache, _KindStore, backoff_delay
from policies import kinds
from policies.catalogue import Operation, Outcome
from policies.engine import Engine, EngineRequest
from policies.models import (
    MODELS,
    Secret,
    StorageClass,
    VirtualDisk,
    VirtualMachine,
    VirtualMachineRestore,
    VolumeSnapshot,
)
from tests.audit import objects as o
from tests.kubeapi.server import KubeAPIServer, RequestInfo

from .conftest import wait_for

pytestmark = pytest.mark.kubeapi

MakeCache = Callable[..., WatchCache]
VMS_PATH = "/apis/virtualization.deckhouse.io/v1alpha2/virtualmachines"
FOREVER = 10**9  # an injected failure that stays until its predicate says otherwise


def seed(server: KubeAPIServer, *items: dict[str, Any]) -> None:
    for item in items:
        server.put_object(item)


def requests_to(server: KubeAPIServer, path: str, *, watch: bool) -> list[dict[str, str]]:
    """The query of every list (watch=False) or watch (True) request on a collection path."""
    found = []
    for method, target in list(server.request_log):
        url = urlsplit(target)
        if method != "GET" or url.path != path:
            continue
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if (query.get("watch") == "true") == watch:
            found.append(query)
    return found


def blocked_while(flag: threading.Event, verb: str, resource: str) -> Callable[[RequestInfo], bool]:
    return lambda info: flag.is_set() and info.verb == verb and info.resource == resource


def vm_in(cache: WatchCache, name: str, namespace: str = "ns1") -> VirtualMachine | None:
    return cache.get(VirtualMachine, namespace, name)


# ---------------------------------------------------------------- list and watch


def test_lists_then_follows_creates_updates_and_deletes(
    kubeapi: KubeAPIServer, kube_client: kubernetes.client.ApiClient, make_cache: MakeCache
) -> None:
    """What was there is listed; what changes afterwards arrives by the watch, indexes
    included."""
    seed(kubeapi, *o.healthy_namespace(), o.storage_class())
    cache = make_cache()
    vm = vm_in(cache, "vm1")
    assert vm is not None and vm.phase == "Stopped"
    assert [disk.name for disk in cache.disks_attached_to("ns1", "vm1")] == ["d1"]
    assert cache.get(StorageClass, "", "fast") is not None  # cluster-scoped

    seed(kubeapi, o.disk("d2", vm="vm1"))
    wait_for(lambda: len(cache.disks_attached_to("ns1", "vm1")) == 2, "the created disk in the index")

    seed(kubeapi, o.vm("vm1", phase="Running", disks=("d1", "d2")))
    wait_for(lambda: (vm := vm_in(cache, "vm1")) is not None and vm.phase == "Running", "the update")

    assert KubeApi(kube_client).delete(kinds.VIRTUAL_DISK, "ns1", "d2")
    wait_for(lambda: cache.get(VirtualDisk, "ns1", "d2") is None, "the delete")
    assert [disk.name for disk in cache.disks_attached_to("ns1", "vm1")] == ["d1"]
    assert cache.counts()[kinds.VIRTUAL_DISK] == 1


def test_readiness_waits_for_every_first_list(kubeapi: KubeAPIServer, make_cache: MakeCache) -> None:
    """Until a kind's first list completes the cache is not ready, says which kind, and
    does not claim to know it (rules say unknown); then it is ready."""
    seed(kubeapi, o.vm("vm1"))
    blocked = threading.Event()
    blocked.set()
    kubeapi.fail_next(blocked_while(blocked, "list", "virtualmachines"), code=503, count=FOREVER)
    cache = make_cache(sync=False)

    wait_for(lambda: sum(map(cache.has_kind, MODELS)) == len(MODELS) - 1, "the other kinds to be listed")
    ready, reason = cache.ready()
    assert not ready
    assert "VirtualMachine not listed yet" in reason, reason
    assert f"{len(MODELS) - 1} of {len(MODELS)} kinds listed" in reason, reason
    assert not cache.has_kind(kinds.VIRTUAL_MACHINE)
    assert vm_in(cache, "vm1") is None

    blocked.clear()
    wait_for(lambda: cache.ready()[0], "readiness once the list succeeds")
    assert cache.has_kind(kinds.VIRTUAL_MACHINE) and vm_in(cache, "vm1") is not None
    assert cache.ready()[1].startswith(f"watch cache synced: 1 objects in {len(MODELS)} kinds")


def test_bookmarks_advance_the_resource_version(kubeapi: KubeAPIServer, make_cache: MakeCache) -> None:
    """A quiet kind's resourceVersion follows the server's through bookmarks, so a
    reconnect resumes from a recent version instead of one that will be compacted."""
    cache = make_cache()
    before = int(cache.resource_versions[kinds.STORAGE_CLASS])
    seed(kubeapi, *(o.vm(f"vm{index}") for index in range(3)))  # changes of other kinds
    wait_for(
        lambda: int(cache.resource_versions[kinds.STORAGE_CLASS] or 0) >= before + 3,
        "a bookmark carrying the newer resourceVersion",
    )
    assert cache.staleness()[kinds.STORAGE_CLASS] < 1.0


# ------------------------------------------------------------ 410 and reconnects


def test_expired_history_relists_and_drops_objects_deleted_meanwhile(
    kubeapi: KubeAPIServer, kube_client: kubernetes.client.ApiClient, make_cache: MakeCache
) -> None:
    """While the VM watch is away, one VM is deleted and one created and the history is
    compacted: the resumed watch gets 410, the kind is listed again and its contents
    replaced, so the deleted VM disappears and the new one appears."""
    seed(kubeapi, o.vm("vm-kept"), o.vm("vm-gone"))
    cache = make_cache()
    lists_before = len(requests_to(kubeapi, VMS_PATH, watch=False))

    blocked = threading.Event()
    blocked.set()
    kubeapi.fail_next(blocked_while(blocked, "watch", "virtualmachines"), code=503, count=FOREVER)
    kubeapi.drop_watches()
    wait_for(lambda: kinds.VIRTUAL_MACHINE not in cache.watching, "the VM watch to be away")
    assert KubeApi(kube_client).delete(kinds.VIRTUAL_MACHINE, "ns1", "vm-gone")
    seed(kubeapi, o.vm("vm-new"))
    kubeapi.expire_history()
    assert vm_in(cache, "vm-gone") is not None  # the last state, while disconnected

    blocked.clear()
    wait_for(lambda: vm_in(cache, "vm-gone") is None, "the relist to drop the deleted VM")
    assert vm_in(cache, "vm-new") is not None and vm_in(cache, "vm-kept") is not None
    assert len(requests_to(kubeapi, VMS_PATH, watch=False)) == lists_before + 1
    wait_for(lambda: cache.ready()[0], "readiness after the relist")


def test_expired_open_watch_relists_without_losing_objects(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """A 410 ERROR event on an open watch leads to a relist; nothing is lost and
    changes after it are followed."""
    seed(kubeapi, *o.healthy_namespace())
    cache = make_cache()
    lists_before = len(requests_to(kubeapi, VMS_PATH, watch=False))
    kubeapi.expire_history()
    wait_for(lambda: len(requests_to(kubeapi, VMS_PATH, watch=False)) > lists_before, "a relist")
    assert vm_in(cache, "vm1") is not None
    seed(kubeapi, o.vm("vm2"))
    wait_for(lambda: vm_in(cache, "vm2") is not None, "an event after the relist")


def test_dropped_watches_resume_from_the_last_version_without_a_relist(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """When the server ends every watch stream, the cache reconnects from where it was
    (no new list) and keeps following."""
    seed(kubeapi, o.vm("vm1"))
    cache = make_cache()
    lists_before = len(requests_to(kubeapi, VMS_PATH, watch=False))
    watches_before = len(requests_to(kubeapi, VMS_PATH, watch=True))
    version = cache.resource_versions[kinds.VIRTUAL_MACHINE]

    kubeapi.drop_watches()
    wait_for(lambda: len(requests_to(kubeapi, VMS_PATH, watch=True)) > watches_before, "a new watch")
    resumed = requests_to(kubeapi, VMS_PATH, watch=True)[watches_before]
    assert int(resumed["resourceVersion"]) >= int(version) > 0
    seed(kubeapi, o.vm("vm2"))
    wait_for(lambda: vm_in(cache, "vm2") is not None, "an object created after the reconnect")
    assert len(requests_to(kubeapi, VMS_PATH, watch=False)) == lists_before


def test_server_down_keeps_answering_and_readiness_follows_the_staleness_bound(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """With the API server down, lookups answer from the last state; readiness turns
    false once the disconnection outlasts the bound, and true again after the server
    is back, without restarting the cache."""
    seed(kubeapi, *o.healthy_namespace())
    cache = make_cache(staleness_bound=0.5)
    assert cache.ready()[0]

    kubeapi.stop()
    assert vm_in(cache, "vm1") is not None
    assert [disk.name for disk in cache.disks_attached_to("ns1", "vm1")] == ["d1"]
    wait_for(
        lambda: not cache.ready()[0] and min(cache.staleness().values()) > 0.5,
        "readiness to turn false past the bound, for every kind",
    )
    reason = cache.ready()[1]
    assert "disconnected longer than 0.5 s" in reason and "VirtualMachine" in reason, reason
    assert "answering from the last state" in reason
    assert vm_in(cache, "vm1") is not None  # still answering
    assert all(seconds > 0.5 for seconds in cache.staleness().values())

    kubeapi.start()  # same port
    wait_for(lambda: cache.ready()[0], "readiness after the server is back", timeout=8)
    seed(kubeapi, o.vm("vm2"))
    wait_for(lambda: vm_in(cache, "vm2") is not None, "events after the restart")
    assert all(thread.is_alive() for thread in cache.threads)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    """Retry delays double from the base, are jittered between half and all of the
    step, and never exceed the cap."""
    import random

    rng = random.Random(7)
    for attempt in range(12):
        step = min(30.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(50)]
        assert all(step / 2 <= delay <= step for delay in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_delay(1000, 0.5, 30.0) <= 30.0


# ---------------------------------------------------------------------- Secrets


def test_only_snapshot_secrets_are_listed_and_watched(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """Secrets are listed and watched with the snapshot type's field selector, never
    unfiltered; a snapshot Secret is answered from the cache without a GET."""
    seed(
        kubeapi,
        o.secret("cloud-init", "ns1"),
        o.secret("vm1-snapshot", "ns1", type_=o.SNAPSHOT_SECRET_TYPE),
    )
    cache = make_cache()
    seed(kubeapi, o.secret("vm2-snapshot", "ns1", type_=o.SNAPSHOT_SECRET_TYPE), o.secret("other", "ns1"))
    wait_for(lambda: len(list(cache.list(Secret))) == 2, "the second snapshot Secret")
    assert sorted(secret.name for secret in cache.list(Secret)) == ["vm1-snapshot", "vm2-snapshot"]

    collection_requests = [
        target
        for method, target in kubeapi.request_log
        if method == "GET" and urlsplit(target).path.rstrip("/").endswith("/secrets")
    ]
    assert len(collection_requests) >= 2  # a list and a watch at least
    for target in collection_requests:
        selector = parse_qs(urlsplit(target).query).get("fieldSelector")
        assert selector == [f"type={kinds.SNAPSHOT_SECRET_TYPE}"], target

    gets_before = len(kubeapi.request_log)
    secret = cache.get(Secret, "ns1", "vm1-snapshot")
    assert secret is not None and secret.type == kinds.SNAPSHOT_SECRET_TYPE
    assert not [t for m, t in kubeapi.request_log[gets_before:] if "/secrets/" in t]


def test_other_secrets_are_read_by_name_with_a_short_ttl(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """A provisioning Secret is read with one GET and its answer kept for the TTL,
    found or not found; after the TTL it is read again."""
    seed(kubeapi, o.secret("cloud-init", "ns1"))
    cache = make_cache(secret_ttl=0.15)

    def gets(name: str) -> int:
        return sum(1 for m, t in kubeapi.request_log if m == "GET" and t.startswith(f"/api/v1/namespaces/ns1/secrets/{name}"))

    found = cache.get(Secret, "ns1", "cloud-init")
    assert found is not None and found.type == "Opaque"
    assert cache.get(Secret, "ns1", "cloud-init") is not None
    assert gets("cloud-init") == 1
    assert cache.get(Secret, "ns1", "missing") is None
    assert cache.get(Secret, "ns1", "missing") is None
    assert gets("missing") == 1  # the negative answer is cached too

    time.sleep(0.2)  # past the TTL
    assert cache.get(Secret, "ns1", "cloud-init") is not None
    assert gets("cloud-init") == 2


def test_a_failed_secret_read_is_an_error_not_an_absence(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """A Secret GET that fails (not a 404) raises, so the rule reports an error instead
    of claiming the Secret does not exist; the failure is not cached."""
    seed(kubeapi, o.secret("cloud-init", "ns1"))
    cache = make_cache()
    kubeapi.fail_next("get", "secrets", code=500)
    with pytest.raises(SecretLookupError, match='Secret "ns1/cloud-init" could not be read'):
        cache.get(Secret, "ns1", "cloud-init")
    assert cache.get(Secret, "ns1", "cloud-init") is not None


# --------------------------------------------------------- kinds not served


RESTORES_PATH = "/apis/virtualization.deckhouse.io/v1alpha2/virtualmachinerestores"


def test_a_kind_the_server_does_not_serve_is_unknown_and_not_hammered(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """VirtualMachineRestore answering 404 (platform v1.9+) does not hold readiness
    back; the kind is not given, so rules needing it say unknown; it is not retried at
    the reconnect backoff's pace (20-200 ms here) but after `unserved_retry`."""
    seed(kubeapi, o.restore("r1"))
    kubeapi.fail_next(lambda info: info.verb == "list" and info.resource == "virtualmachinerestores",
                      code=404, count=FOREVER)
    cache = make_cache(unserved_retry=60.0)

    ready, reason = cache.ready()
    assert ready and "not served (rules needing them say unknown): VirtualMachineRestore" in reason
    assert not cache.has_kind(kinds.VIRTUAL_MACHINE_RESTORE)
    assert cache.get(VirtualMachineRestore, "ns1", "r1") is None
    assert kinds.VIRTUAL_MACHINE_RESTORE not in cache.staleness()
    assert kinds.VIRTUAL_MACHINE_RESTORE not in cache.counts()
    time.sleep(0.2)  # several backoff steps
    assert len(requests_to(kubeapi, RESTORES_PATH, watch=False)) == 1


def test_a_kind_served_later_is_picked_up_at_the_next_retry(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """Once the CRD is installed, the next retry lists the kind and it is given."""
    seed(kubeapi, o.restore("r1"))
    absent = threading.Event()
    absent.set()
    kubeapi.fail_next(blocked_while(absent, "list", "virtualmachinerestores"), code=404, count=FOREVER)
    cache = make_cache(unserved_retry=0.3)
    assert not cache.has_kind(kinds.VIRTUAL_MACHINE_RESTORE)

    absent.clear()
    wait_for(lambda: cache.has_kind(kinds.VIRTUAL_MACHINE_RESTORE), "the kind to be listed again")
    assert cache.get(VirtualMachineRestore, "ns1", "r1") is not None
    assert kinds.VIRTUAL_MACHINE_RESTORE in cache.staleness()


def test_rules_needing_an_unserved_kind_say_unknown(kubeapi: KubeAPIServer, make_cache: MakeCache) -> None:
    """Without VirtualDiskSnapshots served, a disk restored from one cannot pass
    silently: the rules that read the snapshot are unknown, naming the kind."""
    kubeapi.fail_next(lambda info: info.verb == "list" and info.resource == "virtualdisksnapshots",
                      code=404, count=FOREVER)
    seed(kubeapi, o.disk_snapshot("snap1"), o.storage_class())
    cache = make_cache()
    disk = o.disk_from_snapshot("restored", "snap1")
    decision = Engine().decide(
        EngineRequest(Operation.CREATE, kinds.VIRTUAL_DISK, "ns1", "restored", disk), cache
    )
    outcomes = {result.rule: result for result in decision.results}
    assert outcomes["vd-snapshot-ready"].outcome is Outcome.UNKNOWN
    assert "VirtualDiskSnapshot" in outcomes["vd-snapshot-ready"].message


def test_a_kind_that_goes_away_is_emptied_and_no_longer_given(
    kubeapi: KubeAPIServer, make_cache: MakeCache
) -> None:
    """A kind whose CRD is deleted (404 on watch and list) loses its objects and stops
    being given, rather than answering from a state that cannot be updated."""
    seed(kubeapi, o.volume_snapshot("vs1"))
    cache = make_cache()
    assert cache.get(VolumeSnapshot, "ns1", "vs1") is not None
    gone = threading.Event()
    gone.set()
    kubeapi.fail_next(lambda info: gone.is_set() and info.resource == "volumesnapshots", code=404, count=FOREVER)
    kubeapi.drop_watches()
    wait_for(lambda: not cache.has_kind(kinds.VOLUME_SNAPSHOT), "the kind to be dropped", timeout=30)
    assert cache.get(VolumeSnapshot, "ns1", "vs1") is None
    assert cache.ready()[0]


# -------------------------------------------------------- robustness and lifecycle


def test_an_object_that_does_not_parse_is_skipped_with_one_log_line(
    kubeapi: KubeAPIServer, make_cache: MakeCache, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed object (listed or watched) costs one log line naming it; the thread
    keeps following, and a version that no longer parses is not served stale."""
    broken = o.vm("vm-broken")
    broken["spec"]["blockDeviceRefs"] = "not a list"
    seed(kubeapi, o.vm("vm1"), broken)
    with caplog.at_level(logging.WARNING, logger="snapguard.watchcache"):
        cache = make_cache()
        assert vm_in(cache, "vm-broken") is None and vm_in(cache, "vm1") is not None
        seed(kubeapi, {**o.vm("vm1"), "spec": {"blockDeviceRefs": 7}}, o.vm("vm2"))
        wait_for(lambda: vm_in(cache, "vm2") is not None, "the watch to go on after a bad object")
    assert vm_in(cache, "vm1") is None  # its current version does not parse
    lines = [record.getMessage() for record in caplog.records if "skipping" in record.getMessage()]
    assert len(lines) == 2, lines
    assert 'VirtualMachine "ns1/vm-broken"' in lines[0] and "blockDeviceRefs" in lines[0]
    assert 'VirtualMachine "ns1/vm1"' in lines[1]
    assert all(thread.is_alive() for thread in cache.threads)


def test_staleness_is_reported_per_kind(kubeapi: KubeAPIServer, make_cache: MakeCache) -> None:
    """The staleness listener (the metric's feed) gets every served kind, fresh."""
    reports: list[dict[str, float]] = []
    cache = make_cache(on_staleness=lambda staleness: reports.append(dict(staleness)), report_interval=0.05)
    wait_for(lambda: len(reports) >= 3, "a few reports")
    last = reports[-1]
    assert set(last) == set(MODELS)
    # Fresh: the server bookmarks every 0.2 s (a second more when a connect waited on
    # the test server's small listen backlog).
    assert all(0 <= seconds < 3.0 for seconds in last.values()), last
    assert set(cache.staleness()) == set(last)


def test_stop_ends_every_thread_promptly(kubeapi: KubeAPIServer, make_cache: MakeCache) -> None:
    """stop() cuts the open watch streams instead of waiting for their next event."""
    kubeapi.bookmark_interval = 30.0  # quiet streams: only stop() can end them quickly
    cache = make_cache()
    wait_for(lambda: len(cache.watching) == len(MODELS), "every watch to be open")
    threads = list(cache.threads)
    started = time.monotonic()
    cache.stop()
    assert time.monotonic() - started < 2.0
    assert not any(thread.is_alive() for thread in threads)
    assert cache.watching == frozenset()


def test_index_updates_never_hide_an_object_from_a_concurrent_reader() -> None:
    """Lookups take no lock: while a writer replaces a disk over and over, a reader
    asking for the VM's disks always finds it (new index entries are written before
    old ones are dropped). The switch interval is shortened to force interleavings."""
    store = _KindStore()
    versions = [
        VirtualDisk.model_validate({**o.disk("d1", vm="vm1"), "metadata": {
            "name": "d1", "namespace": "ns1", "resourceVersion": str(version)}})
        for version in range(100)
    ]
    store.put(versions[0])
    done = threading.Event()
    misses = 0

    def read() -> None:
        nonlocal misses
        while not done.is_set():
            if not store.disks_attached_to("ns1", "vm1") or store.get(VirtualDisk, "ns1", "d1") is None:
                misses += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read)
    try:
        reader.start()
        for _ in range(20):
            for version in versions:
                store.put(version)
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert misses == 0
    detached = VirtualDisk.model_validate({**o.disk("d1"), "metadata": {"name": "d1", "namespace": "ns1"}})
    store.put(detached)
    assert store.disks_attached_to("ns1", "vm1") == []
