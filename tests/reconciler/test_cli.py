"""`snapguard reconcile` as a process: it snapshots a disk, leads through its Lease,
and on SIGTERM stops, releases the Lease and exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.api import KubeApi
from snapguard.cli import main
from tests.kubeapi.server import KubeAPIServer

from . import objects as o

pytestmark = pytest.mark.kubeapi

ROOT = Path(__file__).resolve().parents[2]


def test_reconcile_processes_a_snapshot_and_exits_on_sigterm(
    kubeapi: KubeAPIServer, api: KubeApi, tmp_path: Path
) -> None:
    o.stopped_vm_with_disks(kubeapi, "d1")
    api.create(o.disk_snapshot("snap1", "d1"))
    kubeconfig = kubeapi.kubeconfig_path(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "snapguard.cli", "reconcile", "--kubeconfig", str(kubeconfig), "-n", o.NS,
         "--resync", "1", "--poll", "1", "--leader-elect", "--lease-namespace", o.NS, "--lease-name", "rec",
         "--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.2", "--identity", "proc-1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        o.wait_for(lambda: o.phase(kubeapi, "virtualdisksnapshots", "snap1") == "InProgress"
                   and o.names(kubeapi, "volumesnapshots"), timeout=25, what="the process to take the snapshot")
        assert kubeapi.get_object("leases", "rec", o.NS)["spec"]["holderIdentity"] == "proc-1"
        o.mark_volume_snapshots_ready(api)
        o.wait_for(lambda: o.phase(kubeapi, "virtualdisksnapshots", "snap1") == "Ready", timeout=10, what="Ready")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "phase InProgress -> Ready" in stderr
    assert "received SIGTERM" in stderr
    # No Module, both VirtualMachineRestore and VirtualMachineSnapshotOperation served.
    assert "platform: v1.8 (inferred: the API serves VirtualMachineRestore and " in stderr
    assert "Traceback" not in stderr
    assert kubeapi.get_object("leases", "rec", o.NS)["spec"]["holderIdentity"] == ""  # released


def test_unusable_kubeconfig_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["reconcile", "--kubeconfig", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snapguard: error: ") and str(missing) in err and len(err.strip().splitlines()) == 1


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["reconcile", "--resync", "0"])
    assert exit_info.value.code == 2
    assert "must be greater than 0" in capsys.readouterr().err
