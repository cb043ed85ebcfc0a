"""`snapguard audit`: evaluate what already exists, in a state dump (`--state`) or a live
cluster (kubeconfig), and report it (SPEC 3, "Audit"): unfinished snapshots and restores
decided as if created now, findings about finished ones (lost, failed, stuck), and with
`--preflight` which VMs could get a consistent snapshot now. `--policy-report` prints
or applies the same as `wgpolicyk8s.io/v1alpha2` PolicyReports.

Exit codes: 0 clean; 1 a result denied, a finding, or a VM not ready; 2 usage or input
error (one line on stderr, also when the cluster cannot be reached).

The `kubernetes` client is imported only when a live cluster is read, so `check` and
friends do not pay for it at start-up.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

import yaml

from cluster.statefiles import Document, InputError, build_view, list_kind, read_documents
from policies.audit import AUDIT_OPERATION, AuditReport, ObjectKey, audit
from policies.engine import Engine
from policies.platform import PlatformVersion
from policies.reports import policy_reports
from policies.view import ClusterView

from ..errors import UsageError, report
from ..output import AUDIT_FORMATS, AuditOutput, Location, Result, render_audit
from ..policyfile import add_policy_arguments, platform_for, platform_version_arg, read_policy

if TYPE_CHECKING:  # imported at run time only for a live cluster
    from cluster.paged import Cluster

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2
DEFAULT_STUCK_AFTER = "30m"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """`30m`, `2h`, `45s`, `1h30m` (hours, minutes, seconds, in that order)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (use e.g. 30m, 2h, 45s or 1h30m)"
        )
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid page size {text!r} (a positive integer)")
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="audit existing snapshots and restores (state dump or live cluster)",
        description="Evaluate existing objects: snapshots and restores that have not finished "
        "are decided as if created now; lost, failed and stuck snapshots and failed restores "
        "are findings; --preflight says which VMs can get a consistent snapshot now. Reads "
        "--state files, or a live cluster through a kubeconfig. Exit 0 when clean, 1 when "
        "something is denied, found or not ready, 2 on bad input.",
    )
    parser.add_argument("--state", action="append", default=[], metavar="PATH", help="cluster state files (repeatable)")
    parser.add_argument("--kubeconfig", metavar="FILE", help="read a live cluster (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current one)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", metavar="NS", help="audit one namespace")
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="audit every namespace (default with --state; a live cluster defaults to the context's namespace)",
    )
    add_policy_arguments(parser, "policy file setting rule actions")
    parser.add_argument("--preflight", action="store_true", help="also check which VMs can get a consistent snapshot now")
    parser.add_argument(
        "--stuck-after",
        type=parse_duration,
        default=parse_duration(DEFAULT_STUCK_AFTER),
        metavar="DURATION",
        help=f"a snapshot Pending or InProgress longer than this is stuck (default {DEFAULT_STUCK_AFTER})",
    )
    parser.add_argument("--output", "-o", choices=AUDIT_FORMATS, default="text")
    parser.add_argument(
        "--policy-report",
        choices=("print", "apply"),
        help="print PolicyReports as YAML instead of the report, or apply them to the cluster",
    )
    # Objects per list request against a live cluster (tests page with tiny pages).
    parser.add_argument("--page-size", type=_page_size, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


class ProgressLine:
    """`listing VirtualDisk: 1500` on one stderr line, redrawn in place; only on a TTY."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0

    def __call__(self, kind: str, count: int) -> None:
        text = f"listing {kind}: {count}"
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


class _Source:
    """The view and where each object of it came from."""

    def __init__(self, view: ClusterView, locate: Callable[[ObjectKey], Location]) -> None:
        self.view = view
        self.locate = locate


def _from_files(paths: list[str]) -> _Source:
    documents = read_documents(paths)
    view = build_view(documents)
    placed: dict[tuple[str, str, str], Document] = {}
    for document in documents:
        if list_kind(document) is None:
            placed.setdefault((document.kind, document.namespace, document.name), document)

    def locate(key: ObjectKey) -> Location:
        document = placed.get((key.kind, key.namespace, key.name))
        if document is None:
            return Location(f"{key.kind}/{key.namespace}/{key.name}", "", 0)
        return Location(document.source, document.path, document.line)

    return _Source(view, locate)


def _cluster_locator(context: str) -> Callable[[ObjectKey], Location]:
    host = quote(context or "cluster", safe="")

    def locate(key: ObjectKey) -> Location:
        uri = f"cluster://{host}/{quote(key.namespace, safe='')}/{key.kind}/{quote(key.name, safe='')}"
        return Location(uri, uri, 0, f"{key.kind}/{key.namespace}/{key.name}")

    return locate


def _placed(
    report: AuditReport, locate: Callable[[ObjectKey], Location], platform: PlatformVersion
) -> AuditOutput:
    results = []
    for audited in report.results:
        where = locate(audited.object)
        results.append(
            Result(
                where.source,
                where.path,
                where.line,
                audited.kind,
                audited.namespace,
                audited.name,
                AUDIT_OPERATION,
                audited.decision,
                logical=where.logical,
            )
        )
    return AuditOutput(
        results=results,
        findings=[(f, locate(f.object)) for f in report.findings],
        preflight=(
            [(e, locate(e.object)) for e in report.preflight]
            if report.preflight is not None
            else None
        ),
        summary=report.summary,
        notes=report.notes,
        platform=platform,
    )


class _NoAliasDumper(yaml.SafeDumper):
    """YAML without anchors: reports repeat equal values (timestamps), kubectl users
    should see them written out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _error(message: str) -> int:
    report(message)
    return EXIT_INPUT


def _check_usage(args: argparse.Namespace) -> None:
    live = args.kubeconfig is not None or args.context is not None
    if args.state and live:
        raise UsageError(
            "--state and --kubeconfig/--context are two sources: audit either state files or "
            "a live cluster"
        )
    if args.policy_report == "apply" and args.state:
        raise UsageError(
            "--policy-report apply writes to a cluster: use it with a live cluster "
            "(--kubeconfig/--context), or print the reports with --policy-report print"
        )


def _read_live(args: argparse.Namespace) -> tuple[Cluster, Any, str | None]:
    """Connect and list the cluster; returns the cluster, the read and the namespace
    scope (None: all namespaces)."""
    from cluster.paged import PAGE_SIZE, connect, read_cluster

    cluster = connect(args.kubeconfig, args.context)
    namespace: str | None
    if args.namespace:
        namespace = args.namespace
    elif args.all_namespaces:
        namespace = None
    else:
        namespace = cluster.namespace
    progress = ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    try:
        read = read_cluster(
            cluster,
            namespace=namespace,
            page_size=args.page_size or PAGE_SIZE,
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.clear()
    for note in read.notes:
        print(f"snapguard: note: {note}", file=sys.stderr)
    return cluster, read, namespace


def _detector(cluster: Cluster) -> Callable[[], tuple[PlatformVersion, str]]:
    def detect() -> tuple[PlatformVersion, str]:
        from cluster.api import KubeApi
        from cluster.platform import detect_platform

        found = detect_platform(KubeApi(cluster.api_client))
        return found.version, found.describe()

    return detect


def run(args: argparse.Namespace) -> int:
    from_cluster = not args.state
    cluster: Cluster | None = None
    live_read: Any = None
    try:
        _check_usage(args)
        policy = read_policy(args.policy)
        platform_version_arg(args)  # a bad --platform-version fails before the cluster is read
        if from_cluster:
            from cluster.paged import ClusterError

            try:
                cluster, live_read, scope = _read_live(args)
            except ClusterError as error:
                hint = ""
                if args.kubeconfig is None and args.context is None and "kubeconfig" in str(error):
                    hint = " (or audit state files with --state PATH)"
                return _error(f"{error}{hint}")
            source = _Source(live_read.view, _cluster_locator(cluster.context))
            namespaces = {scope} if scope is not None else None
        else:
            source = _from_files(args.state)
            scope = args.namespace or None
            namespaces = {args.namespace} if args.namespace else None
        # The cluster's version is read (and said on stderr) only when neither the flag
        # nor the policy file states one; state files have no cluster to ask.
        policy, platform_line = platform_for(
            args, policy, _detector(cluster) if cluster is not None else None
        )
        engine = Engine(policy)
    except (InputError, UsageError) as error:
        return _error(str(error))

    now = datetime.now(UTC)
    report = audit(
        engine,
        source.view,
        now=now,
        stuck_after=args.stuck_after,
        preflight=args.preflight,
        namespaces=namespaces,
    )
    if live_read is not None and live_read.view.errors:
        return _error(live_read.view.errors[0])

    if args.policy_report is not None:
        reports = policy_reports(report, now=now)
        if args.policy_report == "print":
            print(yaml.dump_all(reports, Dumper=_NoAliasDumper, sort_keys=False), end="")
            return EXIT_FAILED if report.summary.failed else EXIT_OK
        from cluster.paged import ClusterError
        from cluster.reports import apply_policy_reports

        assert cluster is not None  # _check_usage: apply needs a live cluster
        try:
            for line in apply_policy_reports(cluster, reports, namespace=scope):
                print(f"snapguard: {line}", file=sys.stderr)
        except ClusterError as error:
            return _error(str(error))

    if cluster is not None:
        print(f"snapguard: {platform_line}", file=sys.stderr)
    print(render_audit(args.output, _placed(report, source.locate, engine.platform)))
    return EXIT_FAILED if report.summary.failed else EXIT_OK
