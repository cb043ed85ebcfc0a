"""`snapguard audit --state` of 100,000 objects: wall time and peak RSS.

    .venv/bin/python -m bench.audit                   # 100,000 objects, JSON and YAML dumps
    .venv/bin/python -m bench.audit --objects 10000 --formats json

The state is bench.generate's cluster (VMs with 3 disks, PVCs, IP addresses, one Ready
VirtualMachineSnapshot per VM with its Secret and VirtualDiskSnapshots) plus what an
audit exists for: every 10th VM has a snapshot still Pending, every 25th a Failed one,
every 50th a VirtualMachineRestore in progress. It is written once per format as
`kubectl get -o json|yaml` prints it (one `List`), then the CLI runs as a subprocess,
exactly as a user runs it, twice per format: a plain audit and `--preflight` (one
VirtualMachineSnapshot decided per VM). Wall time is measured around the subprocess;
peak RSS is the child's `ru_maxrss` (os.wait4, the same figure as
resource.getrusage(RUSAGE_CHILDREN) for a single child). Targets: < 10 s and < 1 GiB.

Never part of the test run's pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.generate import V, cluster_objects, namespace_of, vm_name

OBJECTS_PER_VM = 13  # VM, VMIP, 3 disks, 3 PVCs, Secret, VirtualMachineSnapshot, 3 VDS
ROOT = Path(__file__).resolve().parent.parent


def audit_state(objects: int) -> Iterator[dict[str, Any]]:
    """About `objects` objects: the generated cluster plus unfinished and failed work."""
    extra = objects // 10 // OBJECTS_PER_VM + objects // 25 // OBJECTS_PER_VM + objects // 50 // OBJECTS_PER_VM
    vms = max(1, (objects - 2 - extra) // OBJECTS_PER_VM)
    yield from cluster_objects(vms, disks_per_vm=3, snapshots=vms)
    for index in range(vms):
        namespace, vm = namespace_of(index), vm_name(index)
        if index % 10 == 0:
            yield {"apiVersion": V, "kind": "VirtualMachineSnapshot",
                   "metadata": {"name": f"{vm}-pending", "namespace": namespace, "generation": 1,
                                "creationTimestamp": "2026-01-01T00:00:00Z"},
                   "spec": {"virtualMachineName": vm, "requiredConsistency": True},
                   "status": {"phase": "Pending"}}
        if index % 25 == 0:
            yield {"apiVersion": V, "kind": "VirtualMachineSnapshot",
                   "metadata": {"name": f"{vm}-failed", "namespace": namespace, "generation": 1},
                   "spec": {"virtualMachineName": vm},
                   "status": {"phase": "Failed", "conditions": [
                       {"type": "VirtualMachineSnapshotReady", "status": "False", "reason": "Failed",
                        "message": "virtual machine agent is not ready"}]}}
        if index % 50 == 0:
            yield {"apiVersion": V, "kind": "VirtualMachineRestore",
                   "metadata": {"name": f"{vm}-restore", "namespace": namespace, "generation": 1},
                   "spec": {"virtualMachineSnapshotName": f"{vm}-snap-{index}",
                            "nameReplacements": [{"from": {"kind": "VirtualMachine", "name": vm}, "to": f"{vm}-copy"}]},
                   "status": {"phase": "InProgress"}}


def write_state(directory: Path, objects: int, fmt: str) -> tuple[Path, int]:
    items = list(audit_state(objects))
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    path = directory / f"state.{fmt}"
    with path.open("w") as out:
        if fmt == "json":
            json.dump(document, out, indent=1)
        else:
            dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
            yaml.dump(document, out, Dumper=dumper, sort_keys=False, default_flow_style=False)
    return path, len(items)


def run_audit(state: Path, *extra: str) -> tuple[float, int, int, dict[str, Any]]:
    """(wall seconds, peak RSS bytes, exit code, summary) of one `snapguard audit`."""
    environment = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
    environment["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "snapguard.cli", "audit", "--state", str(state), "--output", "json", *extra],
            stdout=out, stderr=subprocess.PIPE, env=environment,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read().decode() if process.stderr else ""
        out.seek(0)
        report = out.read()
    if process.returncode not in (0, 1):
        raise RuntimeError(f"snapguard audit exited {process.returncode}: {stderr}")
    summary = json.loads(report).get("summary", {})
    return seconds, usage.ru_maxrss * 1024, process.returncode, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--formats", nargs="+", choices=["json", "yaml"], default=["json", "yaml"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapguard-bench-audit-") as directory:
        print(f"{'state':<10} {'objects':>8} {'size':>8} {'audit':<12} {'wall s':>7} {'peak RSS':>10} "
              f"{'exit':>4}  summary")
        for fmt in args.formats:
            started = time.perf_counter()
            state, count = write_state(Path(directory), args.objects, fmt)
            written = time.perf_counter() - started
            for label, extra in (("plain", ()), ("--preflight", ("--preflight",))):
                seconds, peak, code, summary = run_audit(state, *extra)
                verdict = "met" if seconds < 10 and peak < 2**30 else "MISSED"
                print(f"{fmt:<10} {count:>8,} {state.stat().st_size / 2**20:>5.0f} MiB {label:<12} "
                      f"{seconds:>7.1f} {peak / 2**20:>6.0f} MiB {code:>4}  {json.dumps(summary)} "
                      f"(target < 10 s, < 1 GiB: {verdict})")
            print(f"  ({fmt} state written in {written:.1f} s)")
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(f"largest child RSS by getrusage(RUSAGE_CHILDREN): {children / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
