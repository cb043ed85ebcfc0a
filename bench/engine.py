"""Engine benchmark: decisions per second per kind on views of growing size.

    .venv/bin/python -m bench.engine            # views of 100, 10,000 and 100,000 objects
    .venv/bin/python -m bench.engine --sizes 100 10000

Single-threaded (one core). The VirtualMachineSnapshot decided has 10 disks. Prints a
table; never part of the test run's pass/fail. Targets (issue 2): >= 20,000
VirtualMachineSnapshot decisions/s, and no view size more than 1.5x slower than the
smallest.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from bench.generate import cluster_objects, disk_name, namespace_of, snapshot_objects, vm_name
from policies.catalogue import Operation
from policies.engine import Engine, EngineRequest
from policies.models import parse_object
from policies.view import InMemoryView

V = "virtualization.deckhouse.io/v1alpha2"
DISKS = 10


def build_view(objects: int) -> InMemoryView:
    """A view of about `objects` objects; VM 0 has 10 disks and a snapshot."""
    per_vm = 2 + 2 * 3  # VM, VMIP, 3 disks, 3 PVCs
    vms = max(1, (objects - 60) // per_vm)
    view = InMemoryView()
    for raw in cluster_objects(vms, disks_per_vm=3):
        view.put(parse_object(raw))
    # The subject VM: 10 disks, a guest agent, and a Ready snapshot to restore from.
    subject = vms
    for raw in cluster_objects(subject + 1, disks_per_vm=DISKS, agent_every=10**9):
        if raw["kind"] in ("StorageClass", "VolumeSnapshotClass"):
            continue
        if raw["metadata"].get("name", "").startswith(vm_name(subject)):
            view.put(parse_object(raw))
    for raw in snapshot_objects(subject, 0, DISKS):
        view.put(parse_object(raw))
    return view


def requests(view_subject: int) -> dict[str, EngineRequest]:
    namespace, vm = namespace_of(view_subject), vm_name(view_subject)
    return {
        "VirtualMachineSnapshot": EngineRequest(
            Operation.CREATE, "VirtualMachineSnapshot", namespace, "s",
            {"apiVersion": V, "kind": "VirtualMachineSnapshot", "metadata": {"name": "s", "namespace": namespace},
             "spec": {"virtualMachineName": vm, "requiredConsistency": True, "keepIPAddress": "Always"}},
        ),
        "VirtualDiskSnapshot": EngineRequest(
            Operation.CREATE, "VirtualDiskSnapshot", namespace, "d",
            {"apiVersion": V, "kind": "VirtualDiskSnapshot", "metadata": {"name": "d", "namespace": namespace},
             "spec": {"virtualDiskName": disk_name(view_subject, 0)}},
        ),
        "VirtualMachineRestore": EngineRequest(
            Operation.CREATE, "VirtualMachineRestore", namespace, "r",
            {"apiVersion": V, "kind": "VirtualMachineRestore", "metadata": {"name": "r", "namespace": namespace},
             "spec": {"virtualMachineSnapshotName": f"{vm}-snap-0",
                      "nameReplacements": [{"from": {"kind": "VirtualMachine", "name": vm}, "to": f"{vm}-copy"}]}},
        ),
        "VirtualDisk": EngineRequest(
            Operation.CREATE, "VirtualDisk", namespace, "restored",
            {"apiVersion": V, "kind": "VirtualDisk", "metadata": {"name": "restored", "namespace": namespace},
             "spec": {"dataSource": {"type": "ObjectRef", "objectRef": {"kind": "VirtualDiskSnapshot",
                                                                      "name": f"{disk_name(view_subject, 0)}-uid-{vm}-snap-0"}},
                      "persistentVolumeClaim": {"size": "20Gi"}}},
        ),
    }


def rate(function: Callable[[], object], seconds: float = 1.0) -> float:
    """Calls per second over about `seconds` (best of 3 runs)."""
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(100):
                function()
            count += 100
        best = max(best, count / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    args = parser.parse_args()
    engine = Engine()
    table: dict[int, dict[str, float]] = {}
    for size in args.sizes:
        view = build_view(size)
        subject = max(1, (size - 60) // 8)
        gc.collect()
        table[size] = {}
        for kind, request in requests(subject).items():
            decision = engine.decide(request, view)
            assert decision.governed, kind
            table[size][kind] = rate(lambda request=request, view=view: engine.decide(request, view))
        table[size]["objects"] = sum(view.counts().values())
    kinds = list(next(iter(table.values())).keys() - {"objects"})
    kinds.sort()
    print(f"{'view objects':>12} " + " ".join(f"{k:>24}" for k in kinds))
    for row in table.values():
        print(f"{int(row['objects']):>12} " + " ".join(f"{row[k]:>20,.0f} /s " for k in kinds))
    smallest = table[args.sizes[0]]
    worst = max(smallest[k] / row[k] for row in table.values() for k in kinds)
    print(f"slowest view vs smallest: {worst:.2f}x (target <= 1.5x); "
          f"VirtualMachineSnapshot with {DISKS} disks: "
          f"{min(row['VirtualMachineSnapshot'] for row in table.values()):,.0f}/s (target >= 20,000/s)")


if __name__ == "__main__":
    main()
