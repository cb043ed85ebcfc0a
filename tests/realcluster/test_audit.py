"""`snapguard audit` against the live API server: paged lists of the real kinds, the
findings and the preflight, and PolicyReports applied (created, then replaced on the
second run) and accepted by the PolicyReport CRD.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.api import KubeApi
from tests.e2e.test_kubectl import _environment
from tests.realcluster.controlplane import ControlPlane
from tests.realcluster.objects import seed
from tests.reconciler import objects as o

pytestmark = pytest.mark.controlplane

Obj = dict[str, Any]


def audit(kubeconfig: Path, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapguard.cli", "audit", "--kubeconfig", str(kubeconfig), "-n", namespace,
         "--preflight", "--output", "json", *args],
        capture_output=True, text=True, env=_environment(), timeout=120,
    )


def test_audit_reports_findings_and_preflight_and_applies_policy_reports(
    control_plane: ControlPlane, api: KubeApi, namespace: str, tmp_path: Path
) -> None:
    """A failed VirtualMachineSnapshot is a `snapshot-failed` finding; a running VM
    without a guest agent is not ready in the preflight (`vms-consistency`); the exit
    code is 1; the namespace's PolicyReport holds both as failures, and a second run
    replaces it rather than adding another."""
    seed(api, namespace, o.pvc("pvc-d1"), o.disk("d1", vm="vm1"),
         o.vm("vm1", phase="Running", agent=False, disks=("d1",)))
    seed(api, None, o.storage_class())
    failed = o.machine_snapshot("nightly", "vm1")
    failed["status"] = {"phase": "Failed", "conditions": [
        o.condition("VirtualMachineSnapshotReady", "False", "Failed", "the volume snapshot failed")]}
    seed(api, namespace, failed)
    kubeconfig = control_plane.kubeconfig(tmp_path / "kubeconfig")

    first = audit(kubeconfig, namespace, "--policy-report", "apply")
    assert first.returncode == 1, first.stderr
    report = json.loads(first.stdout)
    assert [(f["name"], f["rule"]) for f in report["findings"]] == [("nightly", "snapshot-failed")]
    [vm] = report["preflight"]
    assert (vm["name"], vm["ready"]) == ("vm1", False)
    assert "vms-consistency" in {v["rule"] for v in vm["violations"]}

    reports = control_plane.get_json("policyreports", "-n", namespace)["items"]
    assert [r["metadata"]["name"] for r in reports] == ["dvp-snapguard"]
    failures = {(r["policy"], r["rule"]) for r in reports[0]["results"] if r["result"] == "fail"}
    assert ("dvp-snapguard", "snapshot-failed") in failures
    assert ("dvp-snapguard-preflight", "vms-consistency") in failures
    assert reports[0]["summary"]["fail"] >= 2

    second = audit(kubeconfig, namespace, "--policy-report", "apply")
    assert second.returncode == 1, second.stderr
    again = control_plane.get_json("policyreports", "-n", namespace)["items"]
    assert [r["metadata"]["name"] for r in again] == ["dvp-snapguard"]
    assert again[0]["metadata"]["resourceVersion"] != reports[0]["metadata"]["resourceVersion"]
