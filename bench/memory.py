"""Memory of an `InMemoryView` per object, at 10,000 and 100,000 objects.

    .venv/bin/python -m bench.memory                 # 10,000 and 100,000 objects
    .venv/bin/python -m bench.memory --sizes 10000

Each measurement runs in a fresh subprocess: objects are generated one at a time by
bench.generate (VMs with 3 disks, their PVCs and IP addresses, one Ready
VirtualMachineSnapshot per VM with its Secret and VirtualDiskSnapshots: 13 objects per
VM, the mix the webhook and the audit hold), parsed into the engine's models and put
into the view. Two figures per size:

* tracemalloc: bytes allocated by Python and still held once the view is built (the
  view's own size, exactly, without the interpreter and the libraries);
* RSS: growth of the resident set while building it (what the kernel charges the
  process, allocator slack included), in a separate run without tracemalloc.

Never part of the test run's pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

from bench.generate import cluster_objects
from policies.models import parse_object
from policies.view import InMemoryView

OBJECTS_PER_VM = 13  # VM, VMIP, 3 disks, 3 PVCs, Secret, VirtualMachineSnapshot, 3 VDS


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def build(objects: int) -> InMemoryView:
    vms = max(1, (objects - 2) // OBJECTS_PER_VM)
    view = InMemoryView()
    for raw in cluster_objects(vms, disks_per_vm=3, snapshots=vms):
        view.put(parse_object(raw))
    return view


def measure(objects: int, method: str) -> dict[str, float]:
    """In this process: build a view of about `objects` objects, measure by `method`."""
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss_bytes()
    view = build(objects)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else rss_bytes()
    held = sum(view.counts().values())
    return {"objects": held, "bytes": after - before, "per_object": (after - before) / held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--child", nargs=2, metavar=("OBJECTS", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1])))
        return
    print(f"{'objects':>9} {'tracemalloc':>13} {'per object':>11} {'RSS growth':>12} {'per object':>11}")
    for size in args.sizes:
        figures = {}
        for method in ("tracemalloc", "rss"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.memory", "--child", str(size), method],
                capture_output=True, text=True, check=True,
            ).stdout
            figures[method] = json.loads(out)
        t, r = figures["tracemalloc"], figures["rss"]
        print(f"{int(t['objects']):>9,} {t['bytes'] / 2**20:>10.1f} MiB {t['per_object'] / 1024:>8.2f} KiB "
              f"{r['bytes'] / 2**20:>9.1f} MiB {r['per_object'] / 1024:>8.2f} KiB")


if __name__ == "__main__":
    main()
