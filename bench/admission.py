"""Admission benchmark: `snapguard serve` against an allow-all floor, in one run.

    .venv/bin/python -m bench.admission            # 20 s per server and phase (about 4 minutes)
    .venv/bin/python -m bench.admission --quick    # 5 s per server and phase (about 2 minutes)
    .venv/bin/python -m bench.admission --client python   # no wrk: Python clients only

Two servers on 127.0.0.1 with one fresh CA, both up for the whole run:

* the floor: a Flask app that answers every AdmissionReview `allowed: true` (echoing
  the uid), served by `webhook.server.WebhookServer` with exactly the `ServerOptions`
  `snapguard serve` builds (same worker class, workers, threads, keepalive, TLS
  `ssl_context` hook, multi-process metrics directory): what HTTP, TLS, gunicorn and
  Flask cost before anything is decided;
* the product: `snapguard serve --state` of a generated cluster (10,000 VMs, 30,000
  disks, 10,000 VirtualMachineSnapshots with their Secrets and VirtualDiskSnapshots,
  about 130,000 objects, written once as a JSON `List`), answering a mix of reviews:
  VirtualMachineSnapshot creates that pass and that are denied, VirtualDiskSnapshot
  creates, VirtualMachineRestore creates that conflict with existing objects, and
  VirtualDisks restored from a snapshot. The decision log goes to a file, as a
  container runtime would take it.

The machine is shared and drifts, so each phase is cut into `--rounds` slices that
alternate between the two servers (the idle one costs nothing): a ratio compares
neighbours in time, and the per-slice ratios show the spread. Before measuring, each
server is saturated until it stops taking page faults: a gunicorn worker forked from a
master that loaded the state copies every page of it that it writes to (reference
counts, GC headers), which costs the product's first ~10 s of traffic about 3 faults
and 40 % more CPU per review. The warm-up line says what that cold start cost; the
table is the steady state.

Each is driven the same way, from separate processes, over kept-alive TLS connections:

* a fixed rate (500 reviews/s): a multi-process open-loop Python client; latency is
  measured from each request's scheduled time, so a stall is not hidden by the client
  waiting for it (no coordinated omission);
* saturation: `wrk` with a Lua script that rotates the request bodies, when `wrk` is
  installed (`apt-get install wrk`), else the Python client in closed loop (every
  connection sends its next request as soon as the last is answered). The table says
  which client measured what.

Prints p50/p95/p99 latency, throughput and server CPU per request for each, then the
product/floor ratios against the targets: at saturation p99 ratio <= 1.3, throughput
ratio >= 0.8, and >= 2,000 reviews/s per 2-core replica. Only 127.0.0.1 traffic,
bounded in time; never part of the test run's pass/fail.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import select
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.generate import cluster_objects, disk_name, namespace_of, vm_name

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
V = "virtualization.deckhouse.io/v1alpha2"
GROUP = "virtualization.deckhouse.io"

# The generated cluster: 10,000 VMs with 3 disks each and one snapshot per VM.
VMS = 10_000
DISKS_PER_VM = 3
SNAPSHOTS = 10_000

# Share of each kind of review in the mix (labels shown in the table's legend).
MIX = (
    ("VirtualMachineSnapshot CREATE, admitted", 30),
    ("VirtualMachineSnapshot CREATE, denied (no guest agent)", 10),
    ("VirtualDiskSnapshot CREATE", 25),
    ("VirtualMachineRestore CREATE, name conflicts", 15),
    ("VirtualDisk CREATE from a VirtualDiskSnapshot", 20),
)


# --------------------------------------------------------------------- inputs


def write_state(directory: Path) -> tuple[Path, int]:
    """The generated cluster as one `kubectl get -o json`-style List; (path, objects)."""
    items = list(cluster_objects(VMS, disks_per_vm=DISKS_PER_VM, snapshots=SNAPSHOTS))
    path = directory / "state.json"
    with path.open("w") as out:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, out, separators=(",", ":"))
    return path, len(items)


def _review(uid: str, kind: str, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": GROUP, "version": "v1alpha2", "kind": kind},
            "resource": {"group": GROUP, "version": "v1alpha2", "resource": kind.lower() + "s"},
            "requestKind": {"group": GROUP, "version": "v1alpha2", "kind": kind},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:backup:nightly",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": {"apiVersion": V, "kind": kind,
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec},
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def review_mix(count: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """`count` distinct AdmissionReviews in MIX proportions, shuffled: (label, body).
    VMs with an odd index run a guest agent (bench.generate's `agent_every=2`)."""
    rng = random.Random(seed)
    labels = [label for label, share in MIX for _ in range(share)]
    reviews: list[tuple[str, bytes]] = []
    for serial in range(count):
        label = labels[serial % len(labels)]
        uid = f"bench-{serial:06d}"
        index = rng.randrange(VMS)
        namespace, vm = namespace_of(index), vm_name(index)
        if label.startswith("VirtualMachineSnapshot CREATE, admitted"):
            index |= 1  # an agent
            namespace, vm = namespace_of(index), vm_name(index)
            body = _review(uid, "VirtualMachineSnapshot", namespace, f"{vm}-nightly",
                           {"virtualMachineName": vm, "requiredConsistency": True, "keepIPAddress": "Always"})
        elif label.startswith("VirtualMachineSnapshot CREATE, denied"):
            index &= ~1  # no agent
            namespace, vm = namespace_of(index), vm_name(index)
            body = _review(uid, "VirtualMachineSnapshot", namespace, f"{vm}-nightly",
                           {"virtualMachineName": vm, "requiredConsistency": True, "keepIPAddress": "Always"})
        elif label.startswith("VirtualDiskSnapshot"):
            disk = disk_name(index, rng.randrange(DISKS_PER_VM))
            body = _review(uid, "VirtualDiskSnapshot", namespace, f"{disk}-nightly",
                           {"virtualDiskName": disk, "requiredConsistency": True})
        elif label.startswith("VirtualMachineRestore"):
            body = _review(uid, "VirtualMachineRestore", namespace, f"{vm}-restore",
                           {"virtualMachineSnapshotName": f"{vm}-snap-{index}"})
        else:
            source = f"{disk_name(index, 0)}-uid-{vm}-snap-{index}"
            body = _review(uid, "VirtualDisk", namespace, f"{vm}-restored-disk", {
                "dataSource": {"type": "ObjectRef",
                               "objectRef": {"kind": "VirtualDiskSnapshot", "name": source}},
                "persistentVolumeClaim": {"size": "20Gi", "storageClassName": "replicated"},
            })
        reviews.append((label, json.dumps(body, separators=(",", ":")).encode()))
    rng.shuffle(reviews)
    return reviews


def decide_mix(state: Path, reviews: Sequence[tuple[str, bytes]]) -> tuple[float, dict[str, Counter[str]]]:
    """Load the state in this process (its load time) and decide every review with the
    engine, as the product will: (load seconds, outcomes per label)."""
    from cluster.statefiles import load_state
    from policies.admission import answer_review
    from policies.engine import Engine

    started = time.perf_counter()
    view = load_state([str(state)])
    load_seconds = time.perf_counter() - started
    engine = Engine()
    outcomes: dict[str, Counter[str]] = {}
    for label, body in reviews:
        response, decision, _ = answer_review(engine, view, json.loads(body))
        if not response["response"]["allowed"]:
            outcome = "denied: " + ", ".join(v.rule for v in decision.violations)
        elif decision.warnings:
            outcome = "allowed with warnings: " + ", ".join(v.rule for v in decision.warnings)
        else:
            outcome = "allowed"
        outcomes.setdefault(label, Counter())[outcome] += 1
    del view
    return load_seconds, outcomes


# --------------------------------------------------------------------- servers


def floor_app() -> Any:
    """The floor: allowed, uid echoed, nothing decided, logged or counted."""
    from flask import Flask, Response, request

    app = Flask("allow_all_floor")

    @app.post("/validate")
    def validate() -> Response:
        body = json.loads(request.get_data())
        answer = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "response": {"uid": body["request"]["uid"], "allowed": True},
        }
        return Response(json.dumps(answer, separators=(",", ":")), 200, mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response('{"ready":true}', 200, mimetype="application/json")

    return app


def floor_options(cert_dir: Path, port: int, metrics_dir: str) -> Any:
    """`ServerOptions` exactly as `snapguard serve` builds them (snapguard/commands/
    serve.py `run`): every field not set there keeps its default there too."""
    from webhook.server import DEFAULT_THREADS, DEFAULT_WORKERS, ServerOptions

    return ServerOptions(
        cert_file=str(cert_dir / "tls.crt"),
        key_file=str(cert_dir / "tls.key"),
        client_ca=None,
        host=HOST,
        port=port,
        workers=DEFAULT_WORKERS,
        threads=DEFAULT_THREADS,
        metrics_dir=metrics_dir,
    )


def run_floor_server(port: int, cert_dir: Path) -> int:
    """The floor server in the foreground (started as a subprocess by the benchmark)."""
    from webhook.metrics import prepare_multiprocess_dir

    metrics_dir, created = prepare_multiprocess_dir(None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from webhook.server import WebhookServer

    try:
        WebhookServer(floor_app, floor_options(cert_dir, port, metrics_dir)).run()
    finally:
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def describe_settings(cert_dir: Path) -> str:
    from webhook.server import gunicorn_settings

    settings = gunicorn_settings(floor_options(cert_dir, 0, "/tmp"))
    worker = settings["worker_class"]
    worker_name = worker if isinstance(worker, str) else f"{worker.__module__}.{worker.__name__}"
    return (
        f"worker_class={worker_name} workers={settings['workers']} threads={settings['threads']} "
        f"keepalive={settings['keepalive']}s preload_app={settings['preload_app']} "
        f"TLS=ssl_context hook (certs.tlscontext.ServerContextCache)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _environment() -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "SNAPGUARD_CERT_DIR", "KUBECONFIG")
    }
    environment["PYTHONPATH"] = str(ROOT)
    return environment


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    startup_seconds: float
    stderr_path: Path


def _get(port: int, context: ssl.SSLContext, path: str) -> int:
    with socket.create_connection((HOST, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=HOST) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data[9:12]) if data.startswith(b"HTTP/1.") else 0


@contextmanager
def running(name: str, command: list[str], port: int, cafile: Path, workdir: Path) -> Iterator[Server]:
    stderr_path = workdir / f"{name}.err"
    started = time.perf_counter()
    with open(workdir / f"{name}.out", "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=err, env=_environment())
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}: {stderr_path.read_text()[-2000:]}")
            try:
                if _get(port, context, "/readyz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within 180 s")
            time.sleep(0.1)
        yield Server(name, process, port, time.perf_counter() - started, stderr_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def process_tree_faults(pid: int) -> int:
    """Minor page faults so far of `pid` and its descendants (Linux): after gunicorn's
    fork each worker copies the pages of the preloaded state it writes to (reference
    counts, the garbage collector's headers), one fault per page."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[7])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its descendants (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


# --------------------------------------------------------------------- Python client
#
# On 2 cores the client takes CPU from the server, so it must cost little per request:
# each process drives its connections from one selector loop, with the request bytes
# built once and responses framed by Content-Length.


@dataclass
class ClientTask:
    port: int
    cafile: str
    requests: list[tuple[bytes, bytes]]  # (request bytes, uid)
    connections: int
    duration: float
    start_at: float  # time.monotonic() shared by every client process
    rate: float | None  # requests/s of this process (open loop); None: closed loop
    offset: float = 0.0  # this process's phase within the rate's period


@dataclass
class ClientConnection:
    sock: ssl.SSLSocket
    buffer: bytearray = field(default_factory=bytearray)
    scheduled: float = 0.0
    uid: bytes = b""
    busy: bool = False


def request_bytes(body: bytes, path: str = "/validate") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _take_response(buffer: bytearray) -> tuple[int, bytes, bool] | None:
    """(status, body, will close) of a complete response at the start of `buffer`."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if len(buffer) < end + 4 + length:
        return None
    body = bytes(buffer[end + 4 : end + 4 + length])
    del buffer[: end + 4 + length]
    return int(head[9:12]), body, b"connection: close" in head


def _send(conn: ClientConnection, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = conn.sock.send(view)
            view = view[sent:]
        except (ssl.SSLWantWriteError, BlockingIOError):
            select.select([], [conn.sock], [], 1.0)


def client_process(task: ClientTask) -> dict[str, Any]:
    """One client process: `connections` kept-alive TLS connections; open loop at
    `rate` (latency from the scheduled time) or closed loop (from the send)."""
    context = ssl.create_default_context(cafile=task.cafile)
    selector = selectors.DefaultSelector()
    connections: list[ClientConnection] = []
    for _ in range(task.connections):
        raw = socket.create_connection((HOST, task.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = context.wrap_socket(raw, server_hostname=HOST)
        sock.setblocking(False)
        conn = ClientConnection(sock)
        connections.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    idle = deque(connections)  # round robin: every connection stays in use, as the API server's do
    backlog: list[float] = []  # scheduled times waiting for a free connection
    serial = random.Random(task.offset).randrange(len(task.requests))
    while time.monotonic() < task.start_at:
        time.sleep(min(0.01, max(0.0, task.start_at - time.monotonic())))
    end = task.start_at + task.duration
    next_at = task.start_at + task.offset

    def fire(conn: ClientConnection, scheduled: float) -> None:
        nonlocal serial
        data, uid = task.requests[serial % len(task.requests)]
        serial += 1
        conn.scheduled, conn.uid, conn.busy = scheduled, uid, True
        try:
            _send(conn, data)
        except OSError as error:
            errors[f"send: {type(error).__name__}"] += 1
            conn.busy = False

    if task.rate is None:
        for conn in idle:
            fire(conn, time.monotonic())
        idle.clear()
    while True:
        now = time.monotonic()
        if task.rate is not None:
            while next_at <= now and next_at < end:
                backlog.append(next_at)
                next_at += 1.0 / task.rate
            while backlog and idle:
                fire(idle.popleft(), backlog.pop(0))
        if now >= end and not any(c.busy for c in connections):
            break
        if now >= end + 10.0:  # answers still missing 10 s after the end: give up
            errors["no answer within 10 s of the end"] += sum(c.busy for c in connections)
            break
        timeout = 0.05 if task.rate is None else max(0.0, min(0.05, next_at - time.monotonic()))
        for key, _ in selector.select(timeout=timeout):
            conn = key.data
            try:
                while True:
                    data = conn.sock.recv(65536)
                    if not data:
                        raise ConnectionError("closed by the server")
                    conn.buffer += data
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            except OSError as error:
                errors[f"recv: {type(error).__name__}"] += 1
                selector.unregister(conn.sock)
                conn.busy = False
                connections.remove(conn)
                continue
            answer = _take_response(conn.buffer)
            if answer is None:
                continue
            status, body, _ = answer
            finished = time.monotonic()
            if status == 200 and b'"uid":"' + conn.uid + b'"' in body:
                latencies.append(finished - conn.scheduled)
            else:
                errors[f"HTTP {status}" if status != 200 else "uid not echoed"] += 1
            conn.busy = False
            if task.rate is None:
                if time.monotonic() < end:
                    fire(conn, time.monotonic())
            else:
                idle.append(conn)
        if not connections:
            break
    for conn in connections:
        conn.sock.close()
    return {"latencies": latencies, "errors": dict(errors), "backlog_left": len(backlog)}


def python_load(
    port: int, cafile: Path, requests: list[tuple[bytes, bytes]], *, duration: float,
    rate: float | None, connections: int, processes: int,
) -> dict[str, Any]:
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    start_at = time.monotonic() + 3.0  # every process connected and waiting by then
    tasks = [
        ClientTask(
            port, str(cafile), requests, share, duration, start_at,
            None if rate is None else rate / processes,
            offset=(i / rate) if rate else float(i),
        )
        for i, share in enumerate(shares)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(client_process, tasks)
    latencies = sorted(x for result in results for x in result["latencies"])
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
    return {**summarize(latencies, duration, errors), "latencies": latencies, "seconds": duration}


def summarize(latencies: list[float], duration: float, errors: Counter[str]) -> dict[str, Any]:
    def percentile(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, max(0, int(q * len(latencies) + 0.5) - 1))] * 1000

    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "rps": len(latencies) / duration,
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


# --------------------------------------------------------------------- wrk

WRK_SCRIPT = r"""
-- Rotates the request bodies of bench.admission (one JSON body per line of args[1]).
local bodies = {}
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = wrk.format("POST", "/validate", {["Content-Type"] = "application/json"}, line)
  end
  counter = math.random(#bodies)
end

function request()
  counter = counter % #bodies + 1
  return bodies[counter]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def wrk_load(port: int, bodies_file: Path, script: Path, *, duration: float, connections: int,
             threads: int) -> dict[str, Any]:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
        "-s", str(script), f"https://{HOST}:{port}/validate", "--", str(bodies_file),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result ({proc.returncode}): {proc.stdout}{proc.stderr}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    errors = Counter({key: raw[key] for key in ("connect", "read", "write", "status", "timeout") if raw[key]})
    seconds = raw["duration_us"] / 1e6
    # wrk's `requests` counts every completed response, non-2xx included ("status").
    answered = raw["requests"] - raw["status"]
    return {
        "requests": answered,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "seconds": seconds,
        "rps": answered / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


# --------------------------------------------------------------------- the run


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def one_slice(server: Server, phase: str, cafile: Path, requests: list[tuple[bytes, bytes]],
              bodies_file: Path, script: Path, args: argparse.Namespace, use_wrk: bool,
              seconds: float) -> dict[str, Any]:
    """One slice of a phase against one server, with the server's CPU per review."""
    cpu = process_tree_cpu(server.process.pid)
    if phase == "fixed":
        figures = python_load(server.port, cafile, requests, duration=seconds, rate=args.rate,
                              connections=args.rate_connections, processes=args.client_processes)
    elif use_wrk:
        figures = wrk_load(server.port, bodies_file, script, duration=seconds,
                           connections=args.connections, threads=args.wrk_threads)
    else:
        figures = python_load(server.port, cafile, requests, duration=seconds, rate=None,
                              connections=args.connections, processes=args.client_processes)
    figures["cpu_seconds"] = process_tree_cpu(server.process.pid) - cpu
    return figures


WARM_UP_SLICE = 2.0
WARM_UP_MAX_SLICES = 20


def warm_up(server: Server, cafile: Path, requests: list[tuple[bytes, bytes]], bodies_file: Path,
            script: Path, args: argparse.Namespace, use_wrk: bool) -> str:
    """Saturate the server in 2 s slices until it stops taking page faults (every
    worker has copied the pages of the shared state it writes to, and every thread has
    run the app), at least twice, at most 40 s. Measured after that: the steady state.
    The description says what the cold start cost."""
    faulted = answered = 0
    started = time.monotonic()
    for slices in range(1, WARM_UP_MAX_SLICES + 1):
        faults = process_tree_faults(server.process.pid)
        figures = one_slice(server, "saturation", cafile, requests, bodies_file, script, args, use_wrk,
                            WARM_UP_SLICE)
        new_faults = process_tree_faults(server.process.pid) - faults
        faulted += new_faults
        answered += figures["requests"]
        if slices >= 2 and new_faults < 0.05 * max(figures["requests"], 1):
            break
    return (f"{time.monotonic() - started:.0f} s, {answered:,} reviews, {faulted:,} minor page faults "
            f"({faulted / max(answered, 1):.2f} per review) until they stopped")


def combine(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's figures from its slices: exact percentiles over every latency when
    the Python client measured (it keeps them all); with wrk, which reports only
    percentiles, the median of the slices' percentiles."""
    requests = sum(s["requests"] for s in slices)
    seconds = sum(s["seconds"] for s in slices)
    errors: Counter[str] = Counter()
    for s in slices:
        errors.update(s["error_kinds"])
    if all("latencies" in s for s in slices):
        figures = summarize(sorted(x for s in slices for x in s["latencies"]), seconds, errors)
    else:
        figures = {"requests": requests, "errors": sum(errors.values()), "error_kinds": dict(errors),
                   "rps": requests / seconds}
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            figures[key] = statistics.median(s[key] for s in slices)
        figures["max_ms"] = max(s["max_ms"] for s in slices)
    figures["cpu_us"] = sum(s["cpu_seconds"] for s in slices) / max(requests, 1) * 1e6
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s per phase instead of 20 s")
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase (default 20; 5 with --quick)")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed rate, reviews/s (default 500)")
    parser.add_argument("--connections", type=int, default=16, help="connections at saturation (default 16)")
    parser.add_argument("--rate-connections", type=int, default=8, help="connections at the fixed rate (default 8)")
    parser.add_argument("--client-processes", type=int, default=2, help="Python client processes (default 2)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: it shares 2 cores with the server)")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                        help="saturation client: wrk when installed (auto), or the Python client")
    parser.add_argument("--rounds", type=int, default=None,
                        help="slices each phase is cut into, floor and product alternating (default 4; 2 with --quick)")
    parser.add_argument("--bodies", type=int, default=2000, help="distinct AdmissionReviews in the rotation")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (state, logs)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    sub = parser.add_subparsers(dest="internal")
    floor = sub.add_parser("floor-server", help=argparse.SUPPRESS)
    floor.add_argument("--port", type=int, required=True)
    floor.add_argument("--cert-dir", required=True)
    args = parser.parse_args(argv)
    if args.internal == "floor-server":
        return run_floor_server(args.port, Path(args.cert_dir))
    if args.duration is None:
        args.duration = 5.0 if args.quick else 20.0
    if args.rounds is None:
        args.rounds = 2 if args.quick else 4
    have_wrk = shutil.which("wrk") is not None
    if args.client == "wrk" and not have_wrk:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    use_wrk = have_wrk and args.client != "python"

    from certs.authority import ensure_certificates

    workdir = Path(tempfile.mkdtemp(prefix="snapguard-bench-admission-"))
    try:
        print(f"machine: {machine()}")
        print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.admission', *(argv if argv is not None else sys.argv[1:])])}")
        started = time.perf_counter()
        state, objects = write_state(workdir)
        print(f"state: {objects:,} objects ({VMS:,} VMs, {VMS * DISKS_PER_VM:,} disks, {SNAPSHOTS:,} snapshots "
              f"with Secrets and {SNAPSHOTS * DISKS_PER_VM:,} VirtualDiskSnapshots), "
              f"{state.stat().st_size / 2**20:.0f} MiB JSON, generated in {time.perf_counter() - started:.1f} s")
        reviews = review_mix(args.bodies)
        load_seconds, outcomes = decide_mix(state, reviews)
        print(f"state load (cluster.statefiles.load_state, in-process): {load_seconds:.1f} s")
        print(f"mix of {len(reviews):,} distinct reviews, rotated (decided in-process to show the outcomes):")
        for label, share in MIX:
            detail = "; ".join(f"{n} {outcome}" for outcome, n in outcomes.get(label, Counter()).most_common())
            print(f"  {share:3d}%  {label}: {detail}")
        bodies_file = workdir / "bodies.txt"
        bodies_file.write_bytes(b"\n".join(body for _, body in reviews) + b"\n")
        script = workdir / "rotate.lua"
        script.write_text(WRK_SCRIPT)
        requests = [(request_bytes(body), json.loads(body)["request"]["uid"].encode()) for _, body in reviews]

        cert_dir = workdir / "certs"
        cafile = ensure_certificates(cert_dir).paths.ca_cert
        print(f"server settings (both): {describe_settings(cert_dir)}")
        floor_port, product_port = free_port(), free_port()
        floor_command = [sys.executable, "-m", "bench.admission", "floor-server", "--port", str(floor_port),
                         "--cert-dir", str(cert_dir)]
        product_command = [sys.executable, "-m", "snapguard.cli", "serve", "--state", str(state),
                           "--port", str(product_port), "--cert-dir", str(cert_dir)]
        saturation_client = (f"wrk -t{args.wrk_threads} -c{args.connections}" if use_wrk
                             else f"python closed loop x{args.connections}")
        clients = {"fixed": "python open loop", "saturation": saturation_client}
        names = {"fixed": f"fixed {args.rate:g}/s", "saturation": "saturation"}
        slices: dict[tuple[str, str], list[dict[str, Any]]] = {}
        seconds = args.duration / args.rounds
        # Both servers up at once (the idle one costs nothing), each phase cut into
        # slices that alternate between them: the machine's drift (other tenants,
        # frequency) lands on both alike, and ratios compare neighbours in time.
        with running("floor", floor_command, floor_port, cafile, workdir) as floor_server, \
                running("product", product_command, product_port, cafile, workdir) as product_server:
            print(f"product startup (state load, fork, ready): {product_server.startup_seconds:.1f} s")
            servers = {"floor": floor_server, "product": product_server}
            for name, server in servers.items():
                print(f"{name} warm-up: {warm_up(server, cafile, requests, bodies_file, script, args, use_wrk)}")
            for round_ in range(args.rounds):
                order = ["floor", "product"] if round_ % 2 == 0 else ["product", "floor"]
                for phase in ("fixed", "saturation"):
                    for name in order:
                        figures = one_slice(servers[name], phase, cafile, requests, bodies_file, script,
                                            args, use_wrk, seconds)
                        slices.setdefault((name, phase), []).append(figures)
            product_stderr = product_server.stderr_path
        tracebacks = product_stderr.read_text(errors="replace").count("Traceback")
        results = {key: combine(value) for key, value in slices.items()}

        print()
        print(f"{args.rounds} alternating slices of {seconds:g} s per server and phase "
              f"({args.duration:g} s each in all):")
        print(f"{'phase':<14} {'server':<8} {'client':<24} {'answered':>9} {'errors':>6} "
              f"{'reviews/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'CPU us/review':>13}")
        for phase in ("fixed", "saturation"):
            for name in ("floor", "product"):
                f = results[(name, phase)]
                print(f"{names[phase]:<14} {name:<8} {clients[phase]:<24} {f['requests']:>9,} {f['errors']:>6} "
                      f"{f['rps']:>9,.0f} {f['p50_ms']:>7.2f} {f['p95_ms']:>7.2f} {f['p99_ms']:>7.2f} "
                      f"{f['max_ms']:>7.1f} {f['cpu_us']:>13,.0f}")
        print()
        summary: dict[str, Any] = {}
        for phase in ("fixed", "saturation"):
            fl, pr = results[("floor", phase)], results[("product", phase)]
            ratios = {key: pr[key] / fl[key] for key in ("p50_ms", "p95_ms", "p99_ms", "rps", "cpu_us")}
            pairs = list(zip(slices[("floor", phase)], slices[("product", phase)], strict=True))
            per_slice = [p["rps"] / f["rps"] for f, p in pairs]
            p99_per_slice = [p["p99_ms"] / f["p99_ms"] for f, p in pairs]
            summary[phase] = {**ratios, "rps_per_slice": per_slice, "p99_per_slice": p99_per_slice,
                              "rps_median_of_slices": statistics.median(per_slice),
                              "p99_median_of_slices": statistics.median(p99_per_slice)}
            print(f"product/floor, {names[phase]}: p50 {ratios['p50_ms']:.2f}x, p95 {ratios['p95_ms']:.2f}x, "
                  f"p99 {ratios['p99_ms']:.2f}x, throughput {ratios['rps']:.2f}x, CPU/review {ratios['cpu_us']:.2f}x")
            print(f"  per slice: throughput {', '.join(f'{x:.2f}' for x in per_slice)} "
                  f"(median {statistics.median(per_slice):.2f}); p99 {', '.join(f'{x:.2f}' for x in p99_per_slice)} "
                  f"(median {statistics.median(p99_per_slice):.2f})")
        saturation = summary["saturation"]
        product_rps = results[("product", "saturation")]["rps"]
        checks = [
            (f"p99 ratio at saturation {saturation['p99_ms']:.2f} (median of slices "
             f"{saturation['p99_median_of_slices']:.2f}) <= 1.3", saturation["p99_ms"] <= 1.3),
            (f"throughput ratio at saturation {saturation['rps']:.2f} (median of slices "
             f"{saturation['rps_median_of_slices']:.2f}) >= 0.8", saturation["rps"] >= 0.8),
            (f"product throughput {product_rps:,.0f}/s >= 2,000/s per 2-core replica", product_rps >= 2000),
        ]
        for text, ok in checks:
            print(f"target: {text}: {'met' if ok else 'MISSED'}")
        errors = sum(f["errors"] for f in results.values())
        print(f"errors: {errors}; tracebacks in the product's log: {tracebacks}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "machine": machine(), "load_seconds": load_seconds,
                "results": {f"{name} {phase}": {k: v for k, v in f.items() if k != "latencies"}
                            for (name, phase), f in results.items()},
                "ratios": summary,
            }, indent=2))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
