"""Load and server harness for the webhook: measurements (docs/webhook.md) and the
bounded load of the real-server tests.

    # serve one configuration in the foreground (snapguard's app or an allow-all app)
    python -m tests.webhook.loadgen serve --app snapguard --worker-class buffered \
        --workers 2 --threads 4 --port 18443 --cert-dir /tmp/lg-certs
    # drive it: C closed-loop clients (one process each, keep-alive) for S seconds
    python -m tests.webhook.loadgen load --url https://127.0.0.1:18443/validate \
        --cacert /tmp/lg-certs/ca.crt --concurrency 8 --duration 10
    # the whole comparison table: each configuration started, loaded and stopped
    python -m tests.webhook.loadgen compare --duration 5 --rounds 3
    # small reviews next to ~2.8 MB ones, per number of threads
    python -m tests.webhook.loadgen mixed
    # N stalled connections of one kind, then is a fresh client answered?
    python -m tests.webhook.loadgen stall --worker-class gthread --kind partial --count 8

Only 127.0.0.1, bounded in clients and time. Never part of pass/fail on timing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.admission import process_tree_cpu

HERE = Path(__file__).resolve().parent
STATE = HERE / "data" / "state.yaml"
HOST = "127.0.0.1"


def review_body(uid: str = "load-1", disk: str = "d1") -> bytes:
    """A VirtualDiskSnapshot CREATE that every rule decides from the test state."""
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "virtualization.deckhouse.io", "version": "v1alpha2", "kind": "VirtualDiskSnapshot"},
                "resource": {"group": "virtualization.deckhouse.io", "version": "v1alpha2", "resource": "virtualdisksnapshots"},
                "namespace": "ns1",
                "operation": "CREATE",
                "userInfo": {"username": "load"},
                "object": {
                    "apiVersion": "virtualization.deckhouse.io/v1alpha2",
                    "kind": "VirtualDiskSnapshot",
                    "metadata": {"name": "s1", "namespace": "ns1"},
                    "spec": {"virtualDiskName": disk, "requiredConsistency": True},
                },
                "dryRun": False,
            },
        }
    ).encode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def client_context(cafile: str, certfile: str | None = None, keyfile: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    return context


# ------------------------------------------------------------------------ client
#
# A lean client: on 2 cores the client competes with the server for CPU, so it must
# cost little per request. Each process drives several keep-alive connections from one
# event loop, with the request bytes built once and responses framed by Content-Length.


class _Conn:
    __slots__ = ("buffer", "sock", "start")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.start = 0.0


def _response_complete(buffer: bytearray) -> tuple[bool, int, bool]:
    """(complete, status, will_close) of the HTTP response at the start of `buffer`."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False, 0, False
    head = bytes(buffer[:end]).lower()
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if len(buffer) < end + 4 + length:
        return False, 0, False
    status = int(head[9:12])
    if status == 100:
        del buffer[: end + 4]
        return _response_complete(buffer)
    close = b"connection: close" in head
    del buffer[: end + 4 + length]
    return True, status, close


def _open(host: str, port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(raw, server_hostname=host)


def _client(args: tuple[str, int, str, str, bytes, float, int, bool, int]) -> dict[str, Any]:
    import selectors

    host, port, path, cafile, body, duration, max_requests, new_connections, connections = args
    context = client_context(cafile)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + duration
    selector = selectors.DefaultSelector()

    def send(conn: _Conn) -> None:
        conn.start = time.perf_counter()
        conn.sock.setblocking(True)
        conn.sock.sendall(request)
        conn.sock.setblocking(False)

    def start_new() -> None:
        try:
            conn = _Conn(_open(host, port, context))
            send(conn)
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        except OSError as error:
            errors.append(f"{type(error).__name__}: {error}")
            time.sleep(0.01)

    for _ in range(connections):
        start_new()
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            conn = key.data
            eof = False
            try:
                while True:
                    data = conn.sock.recv(65536)
                    if not data:
                        eof = True
                        break
                    conn.buffer += data
            except ssl.SSLWantReadError:
                pass
            except OSError as error:
                errors.append(f"{type(error).__name__}: {error}")
                eof = True
            complete, status, close = _response_complete(conn.buffer)
            if not complete:
                if eof:
                    errors.append("ConnectionError: closed before a complete response")
                    selector.unregister(conn.sock)
                    conn.sock.close()
                    if time.monotonic() < deadline:
                        start_new()
                continue
            close = close or eof
            if status == 200:
                latencies.append(time.perf_counter() - conn.start)
            else:
                errors.append(f"HTTP {status}")
            done = time.monotonic() >= deadline or len(latencies) + len(errors) >= max_requests
            if close or new_connections or done:
                selector.unregister(conn.sock)
                conn.sock.close()
                if not done:
                    start_new()
            else:
                try:
                    send(conn)
                except OSError as error:
                    errors.append(f"{type(error).__name__}: {error}")
                    selector.unregister(conn.sock)
                    conn.sock.close()
                    start_new()
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return {"latencies": latencies, "errors": errors}


def run_load(
    url: str,
    cafile: str,
    *,
    concurrency: int = 8,
    duration: float = 10.0,
    max_requests: int = 10**9,
    new_connections: bool = False,
    body: bytes | None = None,
    processes: int = 2,
) -> dict[str, Any]:
    """Closed-loop load: `concurrency` connections, each one request at a time, spread
    over `processes` client processes."""
    rest = url.removeprefix("https://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    if new_connections:
        # One connection per client process: a client blocked in a handshake must not
        # hold up the answers of its other connections (with one-connection-at-a-time
        # servers such as sync, that deadlocks until a timeout).
        processes = concurrency
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    tasks = [
        (host, int(port), "/" + path, cafile, body or review_body(), duration,
         max(1, max_requests // processes), new_connections, share)
        for share in shares
    ]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_client, tasks)
    elapsed = time.perf_counter() - started
    latencies = sorted(x for r in results for x in r["latencies"])
    errors = [e for r in results for e in r["errors"]]

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "rps": round(len(latencies) / min(elapsed, duration), 1) if latencies else 0.0,
        "p50_ms": round(pct(0.50), 2),
        "p90_ms": round(pct(0.90), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
    }


# ------------------------------------------------------------------------ server


def allow_all_app() -> Any:
    """The baseline: a Flask app answering allowed, with no engine, metrics or log."""
    from flask import Flask, Response, request

    app = Flask("allow_all")

    @app.post("/validate")
    def validate() -> Response:
        body = json.loads(request.get_data())
        answer = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "response": {"uid": body["request"]["uid"], "allowed": True},
        }
        return Response(json.dumps(answer), 200, mimetype="application/json")

    return app


def serve(args: argparse.Namespace) -> int:
    from certs.authority import ensure_certificates
    from webhook.metrics import prepare_multiprocess_dir
    from webhook.server import ServerOptions, WebhookServer

    paths = ensure_certificates(Path(args.cert_dir)).paths
    metrics_dir, created = prepare_multiprocess_dir(args.metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    options = ServerOptions(
        cert_file=str(paths.tls_cert),
        key_file=str(paths.tls_key),
        host=HOST,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        worker_class=args.worker_class,
        metrics_dir=metrics_dir,
        loglevel="warning",
    )
    if args.app == "allow-all":
        factory = allow_all_app
    else:
        from cluster.statefiles import load_state
        from webhook.app import create_app
        from webhook.settings import WebhookSettings
        from webhook.viewsource import StaticViewSource

        settings = WebhookSettings(
            cert_file=options.cert_file, key_file=options.key_file, metrics_dir=metrics_dir
        )
        source = StaticViewSource(load_state([str(STATE)]))
        log = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server
        def factory() -> Any:
            return create_app(settings, source, log_stream=log if args.quiet else None)
    master = os.getpid()
    try:
        WebhookServer(factory, options).run()
    finally:
        if created and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


@contextmanager
def running_server(
    app: str, worker_class: str, workers: int, threads: int, cert_dir: str
) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [
        sys.executable, "-m", "tests.webhook.loadgen", "serve", "--app", app,
        "--worker-class", worker_class, "--workers", str(workers), "--threads", str(threads),
        "--port", str(port), "--cert-dir", cert_dir, "--quiet",
    ]
    process = subprocess.Popen(command, cwd=HERE.parent.parent, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"server {command} did not start") from None
                time.sleep(0.1)
        time.sleep(0.5)
        yield f"https://{HOST}:{port}/validate", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def compare(args: argparse.Namespace) -> int:
    """Each configuration started, warmed up, loaded and stopped, in `rounds` interleaved
    rounds (a machine shared with other work drifts; interleaving spreads the drift);
    prints every run as JSON, then the median of each configuration."""
    with tempfile.TemporaryDirectory(prefix="snapguard-lg-") as cert_dir:
        return _compare(args, cert_dir)


def _compare(args: argparse.Namespace, cert_dir: str) -> int:
    from certs.authority import ensure_certificates

    cafile = str(ensure_certificates(Path(cert_dir)).paths.ca_cert)
    configurations = [tuple(c.split(":")) for c in args.configs]
    runs: dict[tuple[str, ...], list[dict[str, Any]]] = {c: [] for c in configurations}
    for round_ in range(args.rounds):
        for configuration in configurations:
            app, worker_class, workers, threads = configuration
            with running_server(app, worker_class, int(workers), int(threads), cert_dir) as (url, pid):
                run_load(url, cafile, concurrency=2, duration=1.0)  # warm-up
                cpu_before = process_tree_cpu(pid)
                figures = run_load(
                    url, cafile, concurrency=args.concurrency, duration=args.duration,
                    new_connections=args.new_connections,
                )
                cpu = process_tree_cpu(pid) - cpu_before
                # Server CPU per answered request: robust to other load on the machine.
                figures["server_cpu_us"] = round(cpu / max(figures["requests"], 1) * 1e6, 1)
            runs[configuration].append(figures)
            print(json.dumps({"round": round_, "config": ":".join(configuration), **figures}), flush=True)

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2]

    print(f"\nmedian of {args.rounds} rounds, concurrency {args.concurrency}, {args.duration} s each"
          f"{', a new TLS connection per request' if args.new_connections else ', keep-alive'}:")
    print(f"{'app:worker:workers:threads':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>10} {'errors':>7}")
    for configuration, figures in runs.items():
        print(
            f"{':'.join(configuration):32} {median([f['rps'] for f in figures]):8.0f} "
            f"{median([f['p50_ms'] for f in figures]):8.2f} {median([f['p99_ms'] for f in figures]):8.2f} "
            f"{median([f['server_cpu_us'] for f in figures]):10.0f} {sum(f['errors'] for f in figures):7d}"
        )
    return 0


def big_review_body(size: int = 2_800_000) -> bytes:
    """A review near the API server's 3 MiB limit (annotations make up the bulk)."""
    review = json.loads(review_body("big"))
    review["request"]["object"]["metadata"]["annotations"] = {
        f"example.com/k{i}": "v" * 100 for i in range(size // 120)
    }
    return json.dumps(review).encode()


def mixed(args: argparse.Namespace) -> int:
    """Small reviews from 4 connections while 2 connections send ~2.8 MB reviews: do
    small requests wait behind big ones (head-of-line blocking) with N threads?"""
    with tempfile.TemporaryDirectory(prefix="snapguard-lg-") as cert_dir:
        return _mixed(args, cert_dir)


def _mixed(args: argparse.Namespace, cert_dir: str) -> int:
    import threading

    from certs.authority import ensure_certificates

    cafile = str(ensure_certificates(Path(cert_dir)).paths.ca_cert)
    big = big_review_body()
    for round_ in range(args.rounds):
        for threads in args.threads:
            with running_server("snapguard", "buffered", args.workers, threads, cert_dir) as (url, _):
                run_load(url, cafile, concurrency=2, duration=1.0)
                result: dict[str, Any] = {}

                def send_big(target: str = url, into: dict[str, Any] = result) -> None:
                    into["big"] = run_load(target, cafile, concurrency=2, duration=args.duration, body=big, processes=1)

                sender = threading.Thread(target=send_big)
                sender.start()
                small = run_load(url, cafile, concurrency=4, duration=args.duration, processes=1)
                sender.join()
            print(json.dumps({
                "round": round_, "workers": args.workers, "threads": threads,
                "small_rps": small["rps"], "small_p50_ms": small["p50_ms"], "small_p99_ms": small["p99_ms"],
                "big_rps": result["big"]["rps"], "big_p50_ms": result["big"]["p50_ms"],
                "errors": small["errors"] + result["big"]["errors"],
            }), flush=True)
    return 0


def stall(args: argparse.Namespace) -> int:
    """Open `count` stalled connections of one kind, then time a fresh client."""
    with tempfile.TemporaryDirectory(prefix="snapguard-lg-") as cert_dir:
        return _stall(args, cert_dir)


def _stall(args: argparse.Namespace, cert_dir: str) -> int:
    from certs.authority import ensure_certificates

    from .rawhttp import open_tls, post_review, request_bytes

    cafile = str(ensure_certificates(Path(cert_dir)).paths.ca_cert)
    context = client_context(cafile)
    with running_server("snapguard", args.worker_class, args.workers, args.threads, cert_dir) as (url, _):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        held: list[socket.socket] = []
        outcome: dict[str, Any] = {"worker": args.worker_class, "kind": args.kind, "count": args.count}
        try:
            for _ in range(args.count):
                if args.kind == "tcp":
                    held.append(socket.create_connection((HOST, port), timeout=5))
                elif args.kind == "tls":
                    held.append(open_tls(port, context, timeout=5))
                else:
                    sock = open_tls(port, context, timeout=5)
                    sock.sendall(request_bytes("/validate", review_body())[:-50])
                    held.append(sock)
            time.sleep(0.3)
            started = time.monotonic()
            try:
                response = post_review(port, context, review_body("fresh"), timeout=args.timeout)
                outcome["fresh_client"] = f"HTTP {response.status}"
            except OSError as error:
                outcome["fresh_client"] = f"failed: {type(error).__name__}: {error}"
            outcome["after_s"] = round(time.monotonic() - started, 3)
        except OSError as error:
            outcome["opening_stalled_connections"] = f"failed after {len(held)}: {error}"
        finally:
            for sock in held:
                sock.close()
    print(json.dumps(outcome), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.webhook.loadgen")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--app", choices=["snapguard", "allow-all"], default="snapguard")
    s.add_argument("--worker-class", choices=["buffered", "gthread", "sync"], default="buffered")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cert-dir", required=True)
    s.add_argument("--metrics-dir")
    s.add_argument("--quiet", action="store_true", help="decision log to /dev/null")
    s.set_defaults(func=serve)
    load = sub.add_parser("load")
    load.add_argument("--url", required=True)
    load.add_argument("--cacert", required=True)
    load.add_argument("--concurrency", type=int, default=8)
    load.add_argument("--duration", type=float, default=10.0)
    load.add_argument("--new-connections", action="store_true")
    load.set_defaults(func=lambda a: print(json.dumps(run_load(
        a.url, a.cacert, concurrency=a.concurrency, duration=a.duration,
        new_connections=a.new_connections))) or 0)
    c = sub.add_parser("compare")
    c.add_argument("--duration", type=float, default=8.0)
    c.add_argument("--concurrency", type=int, default=8)
    c.add_argument("--new-connections", action="store_true")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument(
        "configs", nargs="*", metavar="APP:WORKER:WORKERS:THREADS",
        default=[
            "allow-all:gthread:2:4", "allow-all:buffered:2:4",
            "snapguard:gthread:2:4", "snapguard:buffered:1:4",
            "snapguard:buffered:2:1", "snapguard:buffered:2:4", "snapguard:buffered:2:8",
            "snapguard:buffered:4:4",
        ],
    )
    c.set_defaults(func=compare)
    m = sub.add_parser("mixed")
    m.add_argument("--duration", type=float, default=5.0)
    m.add_argument("--rounds", type=int, default=2)
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8])
    m.set_defaults(func=mixed)
    st = sub.add_parser("stall")
    st.add_argument("--worker-class", choices=["buffered", "gthread", "sync"], default="buffered")
    st.add_argument("--workers", type=int, default=2)
    st.add_argument("--threads", type=int, default=4)
    st.add_argument("--kind", choices=["tcp", "tls", "partial"], default="partial")
    st.add_argument("--count", type=int, default=8)
    st.add_argument("--timeout", type=float, default=15.0)
    st.set_defaults(func=stall)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
