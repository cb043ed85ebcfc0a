"""`snapguard serve`: run the admission webhook over HTTPS (SPEC "Webhook (HTTPS)").

Embedded default, with no cluster configured: the CA and serving certificate are
created in `--cert-dir` on first run (./.snapguard/certs), the server listens on
https://127.0.0.1:8443, and the view comes from `--state` files. It prints how to call
it. With neither state nor cluster it refuses to start: an empty view admits nearly
everything (rules needing a kind say `unknown`), which must be asked for
(`--allow-empty-view`), never the silent result of a forgotten flag.

Everything that can be wrong with the input (policy, state, certificates, the port) is
checked before the server starts: a one-line error and exit code 2, never a traceback
and never a half-started server.

The webhook package is imported only once the metrics directory is set up:
prometheus-client chooses its multi-process mode from the environment at import time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certs.authority import CA_KEY_FILE, CertPaths, ensure_certificates
from certs.errors import CertificateError
from certs.tlscontext import ServerContextCache
from cluster.statefiles import InputError, load_state
from policies.platform import PlatformVersion

from ..errors import UsageError
from ..policyfile import add_policy_arguments, policy_for_cluster
from .certs import default_cert_dir

if TYPE_CHECKING:
    from cluster.config import ClusterTarget
    from webhook.viewsource import ViewSource

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8443


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the admission webhook over HTTPS",
        description=(
            "Serve POST /validate and /mutate (AdmissionReview v1), GET /healthz, /readyz "
            "and /metrics over HTTPS. Without a cluster, certificates are created in "
            "--cert-dir on first run and the view comes from --state files."
        ),
    )
    parser.add_argument(
        "--state", action="append", default=[], metavar="PATH",
        help="cluster state files or directories for the view (repeatable)",
    )
    parser.add_argument(
        "--allow-empty-view", action="store_true",
        help="serve with neither --state nor a cluster: an empty view, in which rules that "
        "need a kind say unknown (for trying the endpoints; refused without this flag)",
    )
    parser.add_argument(
        "--kubeconfig", metavar="FILE",
        help="take the view from this cluster through a watch cache (in a pod: the service "
        "account's cluster, without this flag)",
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current one)")
    parser.add_argument(
        "--staleness-bound", type=float, default=None, metavar="SECONDS",
        help="with a cluster: /readyz fails once a kind's watch has been disconnected this long "
        "(default 60); the webhook keeps answering from the last state",
    )
    add_policy_arguments(parser, "policy file: rule actions, exempt namespaces")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--cert-dir", metavar="DIR",
        help="ca.crt, tls.crt, tls.key (a Kubernetes TLS Secret's layout); created with a new CA "
        "when missing (default $SNAPGUARD_CERT_DIR or ./.snapguard/certs)",
    )
    parser.add_argument(
        "--client-ca", metavar="FILE",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="threads per worker (default 4)")
    parser.set_defaults(func=run)


def cluster_target_for(args: argparse.Namespace) -> ClusterTarget | None:
    """The cluster the view comes from, or None for `--state` files (see
    `view_source_for`). Raises UsageError for conflicting flags."""
    from cluster.config import ClusterTarget, in_cluster

    explicit = bool(args.kubeconfig or args.context)
    if explicit and args.state:
        raise UsageError(
            "--state and --kubeconfig/--context are two sources of the view: serve either "
            "state files or a cluster"
        )
    if explicit or (in_cluster() and not args.state):
        return ClusterTarget(args.kubeconfig, args.context)
    return None


def platform_detector(target: ClusterTarget | None) -> Callable[[], tuple[PlatformVersion, str]] | None:
    """What the cluster says its platform version is (cluster.platform), read in the
    master before gunicorn forks, through a client of its own."""
    if target is None:
        return None

    def detect() -> tuple[PlatformVersion, str]:
        from cluster.config import ClusterConfigError
        from cluster.platform import detect_platform_of

        try:
            found = detect_platform_of(target)
        except ClusterConfigError as error:
            raise UsageError(str(error)) from None
        return found.version, found.describe()

    return detect


def view_source_for(args: argparse.Namespace) -> ViewSource:
    """Where the webhook's view comes from.

    With `--kubeconfig`/`--context`, or in a pod without `--state`: a watch cache of
    the cluster (SPEC: "reports ready once the cache is synced"). It is built here, in
    the master, without touching the network: an unreachable API server makes the
    webhook unready, not the process fail. Its threads start in each worker after
    gunicorn forks (`start()`), which waits up to `WORKER_SYNC_WAIT` for the first
    lists so a new worker decides from a synced view.

    Otherwise the `--state` files; with none, only under `--allow-empty-view` (a
    UsageError otherwise: fail closed). `--state` is the explicit
    choice and wins over the ambient in-pod service account; it cannot be combined
    with an explicit `--kubeconfig`/`--context`.

    Raises InputError for unusable state files, UsageError for an unusable cluster
    configuration or conflicting flags."""
    from cluster.config import ClusterConfigError, api_client

    if args.staleness_bound is not None and args.staleness_bound <= 0:
        raise UsageError(f"--staleness-bound must be positive, got {args.staleness_bound:g}")
    target = cluster_target_for(args)
    if target is not None:
        from cluster.api import KubeApi
        from cluster.watchcache import DEFAULT_STALENESS_BOUND, WatchCache

        try:
            client = api_client(target)
        except ClusterConfigError as error:
            raise UsageError(str(error)) from None
        bound = args.staleness_bound if args.staleness_bound is not None else DEFAULT_STALENESS_BOUND
        return WatchCache(
            KubeApi(client),
            staleness_bound=bound,
            start_wait=WORKER_SYNC_WAIT,
            on_staleness=_staleness_gauge(),
        )

    from webhook.viewsource import StaticViewSource

    if not args.state and not getattr(args, "allow_empty_view", False):
        raise UsageError(
            "no view of the cluster: give --state files, --kubeconfig (or run in a pod), "
            "or --allow-empty-view to serve an empty view that admits what no rule can check"
        )
    view = load_state(args.state)
    description = ", ".join(args.state) if args.state else "no state (empty view)"
    return StaticViewSource(view, description)


# How long a new worker waits for its watch cache's first lists before serving. gunicorn
# replaces a worker silent for 30 s (its heartbeat timeout); a cache that is not synced
# by then makes /readyz fail and rules needing the missing kinds say unknown.
WORKER_SYNC_WAIT = 10.0


def _staleness_gauge() -> Callable[[Mapping[str, float]], None]:
    """The cache's staleness listener: `snapguard_watch_staleness_seconds{kind}`.

    Called from the cache's report thread in each worker (never in the master), so
    prometheus-client is imported only then, once `PROMETHEUS_MULTIPROC_DIR` is set and
    the values go to the shared files `/metrics` merges. `livemax`: the most out of date
    live worker is the one that matters."""
    children: dict[str, Any] = {}
    gauge: list[Any] = []

    def report(staleness: Mapping[str, float]) -> None:
        if not gauge:
            from prometheus_client import Gauge

            gauge.append(Gauge(
                "snapguard_watch_staleness_seconds",
                "Seconds since the watch cache last heard from the API server about a kind "
                "(event, bookmark or list).",
                ["kind"],
                registry=None,
                multiprocess_mode="livemax",
            ))
        for kind, seconds in staleness.items():
            child = children.get(kind)
            if child is None:
                child = children.setdefault(kind, gauge[0].labels(kind))
            child.set(seconds)

    return report


def _certificates(args: argparse.Namespace) -> CertPaths:
    """The certificate directory, created or renewed when it is ours; a directory
    without `ca.key` (a mounted Secret managed elsewhere) is used as it is."""
    cert_dir = Path(args.cert_dir) if args.cert_dir else default_cert_dir()
    paths = CertPaths(cert_dir.resolve())
    managed_elsewhere = (
        paths.tls_cert.exists() and paths.tls_key.exists() and not (cert_dir / CA_KEY_FILE).exists()
    )
    if not managed_elsewhere:
        ensure_certificates(paths.cert_dir)
    if args.client_ca and not Path(args.client_ca).is_file():
        raise CertificateError(args.client_ca, "client CA file not found")
    ok, reason = ServerContextCache(
        paths.tls_cert, paths.tls_key, os.path.abspath(args.client_ca) if args.client_ca else None
    ).status()
    if not ok:
        raise CertificateError(None, reason)
    return paths


def _check_port(host: str, port: int) -> None:
    """Fail now, with one line, rather than after gunicorn's five retries."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"--{name} must be at least 1, got {value}")


def _print_instructions(host: str, port: int, paths: CertPaths, platform_line: str) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"https://{'[' + shown + ']' if ':' in shown else shown}:{port}"
    print(f"snapguard: serving the admission webhook on {base} (/validate, /mutate, /healthz, /readyz, /metrics)")
    print(f"snapguard: {platform_line}")
    if paths.ca_cert.exists():
        print(f"snapguard: CA certificate: {paths.ca_cert}")
    else:
        print(f"snapguard: no ca.crt in {paths.cert_dir}: pass the CA that signed tls.crt to --cacert")
    print(
        f"snapguard: try: curl --cacert {paths.ca_cert} -H 'Content-Type: application/json' "
        f"--data @review.json {base}/validate"
    )
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    try:
        if not 0 < args.port < 65536:
            raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
        _positive("workers", args.workers)
        _positive("threads", args.threads)
        # The policy first: a bad policy file is the error to report, whatever the view.
        policy, platform_line = policy_for_cluster(args, platform_detector(cluster_target_for(args)))
        view_source = view_source_for(args)
        paths = _certificates(args)
        _check_port(args.host, args.port)
    except (UsageError, InputError, CertificateError) as error:
        print(f"snapguard: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        message = getattr(error, "strerror", None) or str(error)
        where = f"{error.filename}: " if isinstance(error, OSError) and error.filename else ""
        print(f"snapguard: error: {where}{message}", file=sys.stderr)
        return 2

    # Multi-process metrics: a directory of our own unless one is given, emptied now.
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    from webhook.metrics import prepare_multiprocess_dir

    metrics_dir, created = prepare_multiprocess_dir(configured)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    from webhook.app import create_app
    from webhook.server import DEFAULT_THREADS, DEFAULT_WORKERS, ServerOptions, WebhookServer
    from webhook.settings import WebhookSettings

    client_ca = os.path.abspath(args.client_ca) if args.client_ca else None
    settings = WebhookSettings(
        policy=policy,
        cert_file=str(paths.tls_cert),
        key_file=str(paths.tls_key),
        client_ca=client_ca,
        metrics_dir=metrics_dir,
    )
    options = ServerOptions(
        cert_file=str(paths.tls_cert),
        key_file=str(paths.tls_key),
        client_ca=client_ca,
        host=args.host,
        port=args.port,
        workers=args.workers or DEFAULT_WORKERS,
        threads=args.threads or DEFAULT_THREADS,
        metrics_dir=metrics_dir,
    )
    start = getattr(view_source, "start", None)
    server = WebhookServer(
        lambda: create_app(settings, view_source),
        options,
        on_worker_start=start if callable(start) else None,
    )
    _print_instructions(args.host, args.port, paths, platform_line)
    master = os.getpid()
    code: int = 0
    try:
        server.run()
    except SystemExit as exit_:
        if os.getpid() != master:  # a gunicorn worker leaving: not ours to handle
            raise
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        if os.getpid() == master and created:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
