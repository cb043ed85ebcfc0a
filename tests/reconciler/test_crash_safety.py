"""Crash safety: every write can fail, and the reconciler can die after any write; a
fresh reconciler then converges to exactly the objects of an undisturbed run (none
missing, none twice, same content), whatever the point of the failure.

Each case runs on its own fresh API server. The flow: snapshot a running VM (freeze,
Secret, two children, their VolumeSnapshots, the CSI driver's part played by the
test), delete the original VM, restore under new names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.api import KubeApi
from policies.config import PolicyConfig
from policies.engine import Engine
from reconciler.loop import Reconciler
from reconciler.objects import FILESYSTEM_REQUEST_ANNOTATION
from tests.kubeapi.server import KubeAPIServer, RequestInfo

from . import objects as o
from . import scenario
from .cluster import fresh_cluster, inventory
from .conftest import fast_backoff

pytestmark = pytest.mark.kubeapi

WRITE_VERBS = ("create", "update", "patch", "delete")

# The flows driven here are those of v1.8, the last release with VirtualMachineRestore.
V1_8 = Engine(PolicyConfig.model_validate({"platformVersion": "1.8"}))


class Killed(BaseException):
    """The reconciler's process dies (not an Exception: nothing in it catches this)."""


class Gate:
    """Open while the reconciler runs, so an injected failure hits the reconciler's
    writes and never the test's own (creating the snapshot, playing the CSI driver)."""

    open = False

    @classmethod
    def run(cls, reconciler: Reconciler) -> None:
        cls.open = True
        try:
            reconciler.run_until_idle()
        finally:
            cls.open = False


class KthReconcilerWrite:
    """A fail_next predicate: true for the k-th write the reconciler sends."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.writes = 0
        self.failed: list[RequestInfo] = []

    def __call__(self, info: RequestInfo) -> bool:
        if not Gate.open or info.verb not in WRITE_VERBS:
            return False
        self.writes += 1
        if self.writes == self.k:
            self.failed.append(info)
            return True
        return False


def create_if_absent(api: KubeApi, obj: dict[str, Any]) -> None:
    if api.get(obj["kind"], o.NS, obj["metadata"]["name"]) is None:
        api.create(obj)


def stage_snapshot(server: KubeAPIServer, api: KubeApi, reconciler: Reconciler) -> None:
    create_if_absent(api, o.machine_snapshot("vms1"))
    Gate.run(reconciler)


def stage_csi(server: KubeAPIServer, api: KubeApi, reconciler: Reconciler) -> None:
    o.mark_volume_snapshots_ready(api)
    Gate.run(reconciler)
    assert o.phase(server, "virtualmachinesnapshots", "vms1") == "Ready"
    vm = server.get_object("virtualmachines", "vm1", o.NS)
    assert vm["metadata"]["annotations"][FILESYSTEM_REQUEST_ANNOTATION] == "unfreeze"


def stage_restore(server: KubeAPIServer, api: KubeApi, reconciler: Reconciler) -> None:
    if server.get_object("virtualmachines", "vm1", o.NS) is not None:
        scenario.delete_original_vm(server, api)
    create_if_absent(api, o.restore("r1", "vms1", replacements=scenario.RENAMES))
    Gate.run(reconciler)


STAGES = (stage_snapshot, stage_csi, stage_restore)


def run_flow(server: KubeAPIServer, api: KubeApi, reconciler: Reconciler,
             stages: tuple[Callable[..., None], ...] = STAGES,
             restart: Callable[[], Reconciler] | None = None) -> int:
    """Run the stages; when the reconciler is killed, start a fresh one (`restart`)
    and redo the stage (every stage is idempotent). The number of kills."""
    kills = 0
    for stage in stages:
        while True:
            try:
                stage(server, api, reconciler)
                break
            except Killed:
                if restart is None:
                    raise
                kills += 1
                reconciler = restart()
    return kills


def prepare(server: KubeAPIServer) -> None:
    scenario.seed_vm(server, phase="Running", agent=True)


def expected_end(tmp_path: Path) -> tuple[dict[str, list[Any]], int, int]:
    """The inventory of an undisturbed run, its total writes and the restore's."""
    with fresh_cluster(tmp_path / "reference") as (server, api):
        prepare(server)
        reconciler = Reconciler(api, engine=V1_8, backoff=fast_backoff())
        run_flow(server, api, reconciler, STAGES[:2])
        snapshot_writes = reconciler.client.writes
        run_flow(server, api, reconciler, STAGES[2:])
        assert o.phase(server, "virtualmachinerestores", "r1") == "Ready"
        assert scenario.restored_state(server) == scenario.RESTORED
        vm = server.get_object("virtualmachines", "vm1-restored", o.NS)
        assert FILESYSTEM_REQUEST_ANNOTATION not in (vm["metadata"].get("annotations") or {})
        return inventory(server), reconciler.client.writes, reconciler.client.writes - snapshot_writes


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[Any]], int, int]:
    return expected_end(tmp_path_factory.mktemp("reference"))


def test_the_reference_run_ends_where_expected(reference: tuple[dict[str, list[Any]], int, int]) -> None:
    """Sanity of the baseline every other case is compared with."""
    end, writes, restore_writes = reference
    assert restore_writes == 10  # Pending, 7 objects, InProgress, Ready
    assert writes > 20
    assert [entry[0] for entry in end["virtualmachines"]] == ["vm1-restored"]
    restored_vm = end["virtualmachines"][0]
    assert ("virtualization.deckhouse.io/vmrestore", "<uid>") in restored_vm[2]
    assert len(end["virtualdisksnapshots"]) == 2 and len(end["volumesnapshots"]) == 2


def test_each_write_of_a_restore_failing_in_turn(
    tmp_path: Path, reference: tuple[dict[str, list[Any]], int, int]
) -> None:
    """The API answers 500 to the k-th write of the restore, for every k: the restore
    still ends Ready with exactly the reference objects."""
    end, _, restore_writes = reference
    for k in range(1, restore_writes + 1):
        with fresh_cluster(tmp_path / f"fail-{k}") as (server, api):
            prepare(server)
            reconciler = Reconciler(api, engine=V1_8, backoff=fast_backoff())
            run_flow(server, api, reconciler, STAGES[:2])
            kth_write = KthReconcilerWrite(k)
            server.fail_next(kth_write, code=500)
            run_flow(server, api, reconciler, STAGES[2:])
            assert len(kth_write.failed) == 1, f"write {k} was not reached"
            assert o.phase(server, "virtualmachinerestores", "r1") == "Ready", (k, kth_write.failed)
            assert inventory(server) == end, f"after failing write {k} ({kth_write.failed[0]})"


@pytest.mark.parametrize(
    ("code", "first", "step"),
    [(500, 1, 2), (500, 2, 2), (409, 1, 3), (503, 2, 3)],
    ids=["500-odd-writes", "500-even-writes", "409-spread", "503-spread"],
)
def test_every_write_of_the_whole_flow_failing_once(
    tmp_path: Path, reference: tuple[dict[str, list[Any]], int, int], code: int, first: int, step: int
) -> None:
    """The same for every write of the snapshot and the restore, one failure per
    run: every write with an internal error, a spread of them with a conflict and an
    unavailable server."""
    end, total, _ = reference
    for k in range(first, total + 1, step):
        with fresh_cluster(tmp_path / f"flow-{code}-{k}") as (server, api):
            prepare(server)
            reconciler = Reconciler(api, engine=V1_8, backoff=fast_backoff())
            kth_write = KthReconcilerWrite(k)
            server.fail_next(kth_write, code=code)
            run_flow(server, api, reconciler)
            assert len(kth_write.failed) == 1, f"write {k} was not reached"
            assert inventory(server) == end, f"after failing write {k} with {code} ({kth_write.failed})"


@pytest.mark.parametrize("first", [1, 2], ids=["odd-writes", "even-writes"])
def test_killed_after_each_write_then_restarted(
    tmp_path: Path, reference: tuple[dict[str, list[Any]], int, int], first: int
) -> None:
    """The reconciler dies right after its k-th write landed (for every k of the
    whole flow); a fresh reconciler takes over and the cluster ends exactly as in the
    reference run: no duplicate, nothing lost, the VM not left frozen."""
    end, total, _ = reference
    for k in range(first, total + 1, 2):
        with fresh_cluster(tmp_path / f"kill-{k}") as (server, api):
            prepare(server)
            seen: list[tuple[int, str, str, str, str]] = []

            def kill_after(index: int, verb: str, kind: str, namespace: str, name: str, k: int = k) -> None:
                if index == k:
                    seen.append((index, verb, kind, namespace, name))  # noqa: B023
                    raise Killed

            first = Reconciler(api, engine=V1_8, backoff=fast_backoff(), write_hook=kill_after)
            kills = run_flow(server, api, first, restart=lambda: Reconciler(api, engine=V1_8, backoff=fast_backoff()))
            assert kills == 1, f"write {k} was not reached"
            assert inventory(server) == end, f"killed after write {seen[0]}"


def test_killed_twice_in_the_restore(tmp_path: Path, reference: tuple[dict[str, list[Any]], int, int]) -> None:
    """Killed after the 3rd write of the restore, then the restarted reconciler is
    killed after its own 2nd write: a third one still converges."""
    end, _, _ = reference
    with fresh_cluster(tmp_path / "twice") as (server, api):
        prepare(server)
        reconciler = Reconciler(api, engine=V1_8, backoff=fast_backoff())
        run_flow(server, api, reconciler, STAGES[:2])
        base = reconciler.client.writes

        def killer(limit: int, offset: int = 0) -> Callable[[int, str, str, str, str], None]:
            def hook(index: int, *_: str) -> None:
                if index - offset == limit:
                    raise Killed
            return hook

        first = Reconciler(api, engine=V1_8, backoff=fast_backoff(), write_hook=killer(3))
        restarts = iter([Reconciler(api, engine=V1_8, backoff=fast_backoff(), write_hook=killer(2)),
                         Reconciler(api, engine=V1_8, backoff=fast_backoff())])
        kills = run_flow(server, api, first, STAGES[2:], restart=lambda: next(restarts))
        assert kills == 2
        assert base > 0
        assert inventory(server) == end


def test_standalone_disk_snapshot_of_a_running_vm_killed_after_each_write(tmp_path: Path) -> None:
    """A VDS that freezes and thaws the VM itself: killed after each write, it still
    ends Ready, consistent (recorded before the thaw), with one VolumeSnapshot and the
    VM thawed."""

    def stage_create(server: KubeAPIServer, api: KubeApi, reconciler: Reconciler) -> None:
        create_if_absent(api, o.disk_snapshot("snap1", "d1"))
        Gate.run(reconciler)

    def stage_ready(server: KubeAPIServer, api: KubeApi, reconciler: Reconciler) -> None:
        o.mark_volume_snapshots_ready(api)
        Gate.run(reconciler)

    def setup(server: KubeAPIServer) -> None:
        o.stopped_vm_with_disks(server, "d1")
        o.seed(server, o.vm("vm1", phase="Running", agent=True, disks=("d1",)))

    with fresh_cluster(tmp_path / "reference") as (server, api):
        setup(server)
        reconciler = Reconciler(api, engine=V1_8, backoff=fast_backoff())
        run_flow(server, api, reconciler, (stage_create, stage_ready))
        end, total = inventory(server), reconciler.client.writes
    [vds] = end["virtualdisksnapshots"]
    assert vds[5:] == ("Ready", True)
    [vm] = end["virtualmachines"]
    assert (FILESYSTEM_REQUEST_ANNOTATION, "unfreeze") in vm[2]

    for k in range(1, total + 1):
        with fresh_cluster(tmp_path / f"vds-kill-{k}") as (server, api):
            setup(server)

            def kill_after(index: int, *_: str, k: int = k) -> None:
                if index == k:
                    raise Killed

            first = Reconciler(api, engine=V1_8, backoff=fast_backoff(), write_hook=kill_after)
            kills = run_flow(server, api, first, (stage_create, stage_ready),
                             restart=lambda: Reconciler(api, engine=V1_8, backoff=fast_backoff()))
            assert kills == 1
            assert inventory(server) == end, f"killed after write {k}"
