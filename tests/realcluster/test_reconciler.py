"""`snapguard reconcile` on the real API server, as the chart's reconciler
ServiceAccount (a real token, the chart's RBAC): a VirtualMachineSnapshot and then a
VirtualMachineRestore of it, end to end, each with the reconciler killed (SIGKILL) in
the middle and a new process taking over through the Lease.

The scenario and its helpers are `tests/reconciler`'s (`scenario`, `objects`), run over
`ApiStore`; the test plays the CSI snapshotter (VolumeSnapshots become readyToUse).
Every write the reconciler makes passes the real validation of the DVP CRDs and the
real authorizer; none ends up twice.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.api import KubeApi
from tests.e2e.test_kubectl import _environment
from tests.kubeapi.webhook import FakeWebhook, allow, deny
from tests.realcluster.conftest import NAMESPACE
from tests.realcluster.controlplane import ControlPlane, wait_for
from tests.realcluster.objects import ApiStore
from tests.reconciler import objects as o
from tests.reconciler import scenario

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0  # a Lease to expire (3 s), a new process to start and converge, on busy cores


@pytest.fixture
def store(control_plane: ControlPlane, api: KubeApi) -> ApiStore:
    """In `tests/reconciler`'s namespace, whose name its helpers assume."""
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": o.NS}}])
    return ApiStore(api)


class Reconcilers:
    """`snapguard reconcile` processes with the reconciler's token, leader-elected on the
    chart's Lease; each one ends with the test."""

    def __init__(self, control_plane: ControlPlane, lease: str, directory: Path) -> None:
        token = control_plane.service_account_token(NAMESPACE, lease)
        self.kubeconfig = control_plane.kubeconfig(directory / "kubeconfig", token=token)
        self.lease = lease
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, identity: str) -> subprocess.Popen[bytes]:
        with open(self.directory / f"{identity}.err", "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "snapguard.cli", "reconcile", "--kubeconfig", str(self.kubeconfig),
                 "-n", o.NS, "--resync", "1", "--poll", "1", "--leader-elect", "--lease-namespace", NAMESPACE,
                 "--lease-name", self.lease, "--lease-duration", "3", "--renew-deadline", "2",
                 "--retry-period", "0.2", "--identity", identity],
                cwd=self.directory, stdout=subprocess.DEVNULL, stderr=err, env=_environment(),
            )
        self.processes.append(process)
        return process

    def log(self, identity: str) -> str:
        return (self.directory / f"{identity}.err").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture
def reconcilers(control_plane: ControlPlane, chart_rbac: str, tmp_path: Path) -> Iterator[Reconcilers]:
    started = Reconcilers(control_plane, f"{chart_rbac}-reconciler", tmp_path)
    yield started
    started.stop_all()


@contextlib.contextmanager
def holding_back(control_plane: ControlPlane, resource: str, name: str) -> Iterator[FakeWebhook]:
    """While open, a validating webhook (the test's own, on 127.0.0.1) refuses the
    creation of `resource` `name`: the reconciler gets that far and no further."""
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "e2e-hold-back"},
        "webhooks": [{"name": "hold-back.e2e.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                      "failurePolicy": "Fail", "timeoutSeconds": 5,
                      "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE"],
                                 "resources": [resource]}],
                      "clientConfig": {}}],
    }

    def decide(request: dict[str, Any]) -> dict[str, Any]:
        return deny("held back by the test") if request["name"] == name else allow()

    with FakeWebhook(decide) as hook:
        configuration["webhooks"][0]["clientConfig"] = {"url": f"{hook.url}/", "caBundle": hook.ca_bundle}
        control_plane.apply([configuration])
        try:
            yield hook
        finally:
            control_plane.kubectl("delete", "validatingwebhookconfiguration", "e2e-hold-back")


def kill_9(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_snapshot_and_restore_end_to_end_with_kill_9_in_the_middle(
    control_plane: ControlPlane, store: ApiStore, api: KubeApi, reconcilers: Reconcilers
) -> None:
    """Snapshot: killed once its VolumeSnapshots exist, before the CSI driver made them
    ready; the next process finishes it (Ready, one VolumeSnapshot per disk). Restore
    under new names after the VM was deleted: killed while a webhook of the test holds
    back one restored object; the next process finishes it with every restored object
    exactly once."""
    scenario.seed_vm(store)
    first = reconcilers.start("first")
    api.create(o.machine_snapshot("vms1"))
    wait_for(lambda: len(o.names(store, "volumesnapshots")) == 2, "the first process's VolumeSnapshots", TIMEOUT)
    kill_9(first)
    assert o.phase(store, "virtualmachinesnapshots", "vms1") == "InProgress"

    second = reconcilers.start("second")

    def snapshot_ready() -> bool:
        o.mark_volume_snapshots_ready(api)  # the CSI driver, for whatever exists by now
        return o.phase(store, "virtualmachinesnapshots", "vms1") == "Ready"

    wait_for(snapshot_ready, "the snapshot to be Ready", TIMEOUT)
    assert len(o.names(store, "volumesnapshots")) == 2
    assert len(o.names(store, "virtualdisksnapshots")) == 2

    scenario.delete_original_vm(store, api)
    with holding_back(control_plane, "virtualmachineblockdeviceattachments", "vmbda-d2-restored") as held:
        api.create(o.restore("r1", "vms1", replacements=scenario.RENAMES))
        wait_for(lambda: held.reviews, "the restore to reach the held-back attachment", TIMEOUT)
        kill_9(second)
        # Half done: the VM and its disks are there, the attachment is not.
        partial = scenario.restored_state(store)
        assert partial["virtualmachines"] == ["vm1-restored"] and partial["virtualdisks"]
        assert partial["virtualmachineblockdeviceattachments"] == []
        assert o.phase(store, "virtualmachinerestores", "r1") != "Ready"
    reconcilers.start("third")
    wait_for(lambda: o.phase(store, "virtualmachinerestores", "r1") == "Ready", "the restore to be Ready", TIMEOUT)
    assert scenario.restored_state(store) == scenario.RESTORED
    vm = store.get_object("virtualmachines", "vm1-restored", o.NS)
    assert vm is not None and vm["spec"]["blockDeviceRefs"] == [{"kind": "VirtualDisk", "name": "d1-restored"}]
    for identity in ("first", "second", "third"):
        assert "Traceback" not in reconcilers.log(identity), reconcilers.log(identity)
