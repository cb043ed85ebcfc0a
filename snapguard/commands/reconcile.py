"""`snapguard reconcile`: run the minimal reconciler against a cluster until SIGTERM or
SIGINT (docs/reconciler.md).

It executes VirtualDiskSnapshots, VirtualMachineSnapshots and VirtualMachineRestores
(Safe mode) with the platform's phases, conditions and reasons, re-checking each with
the same engine the webhook uses right before it acts. With `--leader-elect`, only the
replica holding the Lease acts; the Lease is released on a clean shutdown so a
successor takes over at once.

Bad input (kubeconfig, policy, arguments) is a one-line error and exit code 2, before
anything runs. A signal stops the workers, releases the Lease and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from types import FrameType
from typing import Any

from cluster.api import KubeApi
from cluster.config import ClusterConfigError, ClusterTarget, api_client
from cluster.leases import LeaseApi
from cluster.platform import detect_platform
from policies.engine import Engine
from policies.platform import PlatformVersion
from reconciler.leader import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    LeaderElector,
)
from reconciler.loop import DEFAULT_POLL_INTERVAL, DEFAULT_RESYNC_PERIOD, Reconciler

from ..errors import UsageError
from ..policyfile import add_policy_arguments, platform_for, platform_version_arg, read_policy

DEFAULT_LEASE_NAME = "dvp-snapguard-reconciler"

log = logging.getLogger("snapguard.reconcile")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="run the reconciler that executes snapshots and restores",
        description=(
            "Execute VirtualDiskSnapshots, VirtualMachineSnapshots and VirtualMachineRestores "
            "(Safe mode) against a cluster: the platform's phases, conditions and reasons, "
            "the VolumeSnapshots, the snapshot Secrets and the restored objects. Every step is "
            "idempotent: a killed and restarted reconciler converges. Runs until SIGTERM/SIGINT."
        ),
    )
    parser.add_argument("--kubeconfig", metavar="FILE", help="cluster to act on (in a pod: the service account's)")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current one)")
    parser.add_argument("-n", "--namespace", metavar="NS", help="act in one namespace only (default: all)")
    add_policy_arguments(parser, "policy file setting rule actions (as for the webhook)")
    parser.add_argument(
        "--resync", type=_positive, default=DEFAULT_RESYNC_PERIOD, metavar="SECONDS",
        help=f"list and reconcile every object this often, watch events or not (default {DEFAULT_RESYNC_PERIOD:g})",
    )
    parser.add_argument(
        "--poll", type=_positive, default=DEFAULT_POLL_INTERVAL, metavar="SECONDS",
        help="look again this soon at an object waiting on something outside the reconciler "
        f"(default {DEFAULT_POLL_INTERVAL:g})",
    )
    parser.add_argument("--workers", type=_workers, default=1, metavar="N", help="worker threads (default 1)")
    parser.add_argument("--leader-elect", action="store_true", help="act only while holding the leader election Lease")
    parser.add_argument("--lease-name", default=DEFAULT_LEASE_NAME, metavar="NAME", help=f"default {DEFAULT_LEASE_NAME}")
    parser.add_argument(
        "--lease-namespace", metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE, else the -n namespace, else default)",
    )
    parser.add_argument(
        "--lease-duration", type=_positive, default=DEFAULT_LEASE_DURATION, metavar="SECONDS",
        help=f"how long a silent leader keeps the Lease (default {DEFAULT_LEASE_DURATION:g})",
    )
    parser.add_argument(
        "--renew-deadline", type=_positive, default=DEFAULT_RENEW_DEADLINE, metavar="SECONDS",
        help=f"a leader that could not renew for this long stops acting (default {DEFAULT_RENEW_DEADLINE:g})",
    )
    parser.add_argument(
        "--retry-period", type=_positive, default=DEFAULT_RETRY_PERIOD, metavar="SECONDS",
        help=f"how often to renew or try to acquire (default {DEFAULT_RETRY_PERIOD:g})",
    )
    parser.add_argument("--identity", metavar="ID", help="leader election identity (default: <hostname>_<random>)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.set_defaults(func=run)


def _build(args: argparse.Namespace) -> Reconciler:
    policy = read_policy(args.policy)
    platform_version_arg(args)  # a bad --platform-version fails before the cluster is asked
    try:
        api = KubeApi(api_client(ClusterTarget(args.kubeconfig, args.context)))
    except ClusterConfigError as error:
        raise UsageError(str(error)) from None

    def detect() -> tuple[PlatformVersion, str]:
        found = detect_platform(api)
        return found.version, found.describe()

    # The engine re-checks restores right before executing them: for the version the
    # cluster runs, unless the flag or the policy file says otherwise.
    policy, platform_line = platform_for(args, policy, detect)
    log.info("%s", platform_line)
    engine = Engine(policy)
    elector = None
    if args.leader_elect:
        namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE") or args.namespace or "default"
        identity = args.identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        try:
            elector = LeaderElector(
                LeaseApi(api),
                namespace,
                args.lease_name,
                identity,
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
            )
        except ValueError as error:
            raise UsageError(f"leader election: {error}") from None
    return Reconciler(
        api,
        namespace=args.namespace,
        engine=engine,
        elector=elector,
        workers=args.workers,
        resync_period=args.resync,
        poll_interval=args.poll,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        reconciler = _build(args)
    except UsageError as error:
        print(f"snapguard: error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    scope = f"namespace {args.namespace}" if args.namespace else "all namespaces"
    log.info("reconciling %s%s", scope, " (leader election on)" if args.leader_elect else "")
    reconciler.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        reconciler.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped after %d reconciles, %d writes", reconciler.reconciles, reconciler.client.writes)
    return 0
