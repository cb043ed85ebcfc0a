"""``snapguard certs``: create and show the webhook's TLS material.

``certs create`` makes (or renews, or with ``--force`` replaces) the CA and
serving certificate in a directory; ``certs show`` describes ``ca.crt`` and
``tls.crt`` as text or JSON; ``certs maintain`` keeps the same material in a
Kubernetes TLS Secret and publishes the CA in the webhook configurations'
``caBundle`` (the chart's self-managed certificate mode).  All certificate logic
lives in :mod:`certs`; this module only parses arguments, orders the steps,
formats output and maps errors to exit codes.

Contract with ``snapguard/cli.py``: :func:`add_parser` registers the command and
sets ``func`` on every leaf sub-parser; ``func(args)`` returns the exit code
(0 ok, 2 error).  Errors are one line on stderr,
``snapguard: error: <file>: <what>``, never a traceback.  This module must not
call ``sys.exit``; only ``maintain`` talks to the Kubernetes API, and only
through :mod:`cluster.certsecret` (imported when it runs, so ``create`` and
``show`` do not load the Kubernetes client).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certs.authority import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    KEY_FILE_MODE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    CertPaths,
    EnsureResult,
    ensure_certificates,
    write_file_atomic,
)
from certs.bundle import merge_ca_bundle, split_pem_bundle
from certs.errors import CertificateError
from certs.inspect import CertificateInfo, describe, is_issued_by

if TYPE_CHECKING:
    from cluster.certsecret import CertSecretStore

__all__ = [
    "CERT_DIR_ENV",
    "DEFAULT_CERT_DIR",
    "MaintainTarget",
    "add_parser",
    "create_handler",
    "maintain_handler",
    "maintain_once",
    "parse_duration",
    "show_handler",
]

CERT_DIR_ENV = "SNAPGUARD_CERT_DIR"
DEFAULT_CERT_DIR = Path(".snapguard/certs")

EXIT_OK = 0
EXIT_ERROR = 2

Handler = Callable[[argparse.Namespace], int]


def default_cert_dir() -> Path:
    """``$SNAPGUARD_CERT_DIR`` if set and non-empty, else ``./.snapguard/certs``.

    Resolved when a command runs, not when the parser is built, so the
    environment of the actual invocation wins.
    """
    env = os.environ.get(CERT_DIR_ENV)
    return Path(env) if env else DEFAULT_CERT_DIR


def _error(message: str) -> int:
    # One line, whatever the underlying library put in the message.
    print(f"snapguard: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


def _os_error_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


def _one_line_errors(handler: Handler) -> Handler:
    """Turn every exception into the one-line error contract and exit code 2."""

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CertificateError as exc:
            return _error(str(exc))
        except BrokenPipeError:
            raise  # `snapguard certs show | head`: the entry point treats this as success
        except OSError as exc:
            return _error(_os_error_message(exc))
        except ValueError as exc:
            return _error(str(exc))
        except Exception as exc:  # the CLI promises no tracebacks, even for our bugs
            return _error(f"unexpected {type(exc).__name__}: {exc}")

    return wrapper


def _cert_dir(args: argparse.Namespace) -> Path:
    cert_dir: Path | None = args.cert_dir
    return cert_dir if cert_dir is not None else default_cert_dir()


# --------------------------------------------------------------------- create


@_one_line_errors
def create_handler(args: argparse.Namespace) -> int:
    """``snapguard certs create``: ensure (or with ``--force`` replace) the TLS files."""
    if args.service and not args.namespace:
        return _error("--service requires --namespace")
    if args.namespace and not args.service:
        return _error("--namespace requires --service")
    result = ensure_certificates(
        _cert_dir(args),
        service=args.service,
        namespace=args.namespace,
        extra_sans=args.extra_sans,
        force=args.force,
    )
    _print_ensure_result(result)
    return EXIT_OK


def _print_ensure_result(result: EnsureResult) -> None:
    paths = result.paths
    rows = (
        (paths.ca_cert, result.ca.value, result.ca_reason, result.ca_not_after),
        (paths.tls_cert, result.serving.value, result.serving_reason, result.serving_not_after),
    )
    for path, action, reason, not_after in rows:
        because = f" ({reason})" if reason else ""
        print(f"{path}: {action}{because}; valid until {not_after.isoformat()}")
    if result.ca_rotated:
        print(f"note: the CA changed; publish {paths.ca_cert} as the webhook caBundle")


# ----------------------------------------------------------------------- show


@_one_line_errors
def show_handler(args: argparse.Namespace) -> int:
    """``snapguard certs show``: describe ca.crt and tls.crt, and check their keys."""
    cert_dir = _cert_dir(args)
    if not cert_dir.is_dir():
        return _error(f"{cert_dir}: certificate directory not found")
    paths = CertPaths(cert_dir)
    # ca.key is optional: a Secret managed elsewhere carries only ca.crt.
    ca = describe(paths.ca_cert, paths.ca_key if paths.ca_key.exists() else None)
    tls = describe(paths.tls_cert, paths.tls_key)
    signed = is_issued_by(paths.tls_cert, paths.ca_cert)
    now = datetime.now(UTC)

    if args.output == "json":
        doc: dict[str, Any] = {
            "cert_dir": str(cert_dir),
            "ca": ca.to_dict(now),
            "tls": {**tls.to_dict(now), "signed_by_ca": signed},
        }
        print(json.dumps(doc, indent=2))
    else:
        print(_format_text(paths.ca_cert.name, ca, now))
        print(_format_text(paths.tls_cert.name, tls, now))
        print(f"  signed by {paths.ca_cert.name}: {_yes_no(signed)}")
    return EXIT_OK


def _yes_no(value: bool) -> str:
    return "yes" if value else "NO"


def _format_text(label: str, info: CertificateInfo, now: datetime) -> str:
    days = info.days_left(now)
    left = f"{days} days left" if days >= 0 else f"EXPIRED {-days} days ago"
    if info.key_matches is None:
        key = "not checked (no key file)"
    else:
        key = f"{_yes_no(info.key_matches)} ({info.key_path})"
    lines = [
        f"{label}: {info.path}",
        f"  subject:     {info.subject}",
        f"  issuer:      {info.issuer}",
        f"  SANs:        {', '.join(info.sans) if info.sans else '(none)'}",
        f"  not after:   {info.not_after.isoformat()} ({left})",
        f"  CA:          {'yes' if info.is_ca else 'no'}",
        f"  key matches: {key}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------- maintain

SECRET_FILES = (CA_CERT_FILE, CA_KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE)
DEFAULT_INTERVAL = "1h"
DEFAULT_RENEW_BEFORE = "720h"
# A loop that failed (API server restarting, RBAC not bound yet) tries again this soon,
# or after --interval when that is shorter.
RETRY_AFTER = timedelta(seconds=30)
# Conflicting writers (the per-release Job and a CronJob run) resolve within a few
# rounds: each round starts from a fresh read, and the loser then finds nothing to do.
CONFLICT_ATTEMPTS = 5
# ensure_certificates' default lifetime of a serving certificate (the CA lives 10 years).
SERVING_LIFETIME = timedelta(days=365)
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_sleep = time.sleep  # the maintain loop's pause (tests replace it)


def parse_duration(text: str) -> timedelta:
    """``1h``, ``720h``, ``30m``, ``90s``, ``1h30m`` (Go's notation, as Helm values and
    cert-manager write durations); must be positive."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (use e.g. 1h, 720h, 30m or 1h30m)"
        )
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    duration = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if duration <= timedelta(0):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return duration


@dataclass(frozen=True)
class MaintainTarget:
    """What ``certs maintain`` keeps: one TLS Secret for one Service, and the
    configurations (kind, name) whose every webhook must trust the Secret's CA."""

    secret: str
    namespace: str
    service: str
    configurations: tuple[tuple[str, str], ...]
    renew_before: timedelta = timedelta(hours=720)


def _desired_files(
    current: Mapping[str, bytes], target: MaintainTarget, now: datetime | None
) -> tuple[EnsureResult, dict[str, bytes]]:
    """The four files :func:`ensure_certificates` makes of the Secret's current data.

    The files live for the duration of the call in a private temporary directory (the
    chart mounts a memory-backed ``/tmp``), so the CA key is kept nowhere but in the
    Secret."""
    with tempfile.TemporaryDirectory(prefix="snapguard-certs-") as scratch:
        directory = Path(scratch)
        for name in SECRET_FILES:
            if name in current:
                write_file_atomic(directory / name, current[name], mode=KEY_FILE_MODE)
        result = ensure_certificates(
            directory,
            service=target.service,
            namespace=target.namespace,
            now=now,
            renew_before=target.renew_before,
        )
        return result, {name: (directory / name).read_bytes() for name in SECRET_FILES}


def _until(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _maintain_pass(
    store: CertSecretStore,
    target: MaintainTarget,
    now: datetime | None,
    report: Callable[[str], None],
) -> list[str]:
    """One read-decide-write round; raises ``ApiError`` 409 when another writer got there
    first.

    The order is what keeps TLS working across a CA rotation: (1) a new CA is stored in
    the Secret next to the serving certificate still in use (nothing served changes, and
    a crash now cannot orphan the new CA); (2) every caBundle gets the new CA in front of
    the still-valid old ones (``merge_ca_bundle``), so the API server trusts both; (3)
    only then does the Secret get the serving certificate signed by the new CA. The old
    CA leaves the bundles when it expires, long after the pods switched (the kubelet
    refreshes a mounted Secret within about a minute)."""
    secret_id = f"secret {target.namespace}/{target.secret}"
    lines: list[str] = []

    def done(line: str) -> None:
        # Reported as it happens: when a later step fails, the log still shows what
        # was already written.
        lines.append(line)
        report(line)

    secret = store.read_secret(target.namespace, target.secret)
    current = dict(secret.data) if secret is not None else {}
    result, files = _desired_files(current, target, now)
    ca_files = {name: files[name] for name in (CA_CERT_FILE, CA_KEY_FILE)}
    tls_files = {name: files[name] for name in (TLS_CERT_FILE, TLS_KEY_FILE)}
    validity = (
        f"CA valid until {_until(result.ca_not_after)}, "
        f"serving certificate valid until {_until(result.serving_not_after)}"
    )

    if secret is None:
        # Nothing is served from a Secret that does not exist: create it complete.
        secret = store.create_secret(target.namespace, target.secret, files)
        done(f"{secret_id}: created ({validity})")
    elif any(current.get(name) != data for name, data in ca_files.items()):
        secret = store.replace_secret_data(secret, {**current, **ca_files})
        done(f"{secret_id}: new CA stored ({result.ca_reason or 'changed'})")

    ca_pem = files[CA_CERT_FILE]
    for kind, name in target.configurations:
        written = store.update_ca_bundles(
            kind, name, lambda bundle: merge_ca_bundle(bundle, ca_pem, now)
        )
        for webhook, bundle in written.items():
            count = len(split_pem_bundle(bundle))
            done(f"{kind} {name}: webhook {webhook} trusts {count} CA{'s' if count > 1 else ''}")

    if any(secret.data.get(name) != data for name, data in tls_files.items()):
        secret = store.replace_secret_data(secret, {**secret.data, **tls_files})
        done(
            f"{secret_id}: serving certificate {result.serving.value} "
            f"({result.serving_reason or 'changed'}); {validity}"
        )
    if not lines:
        done(f"{secret_id}: up to date ({validity}); caBundles up to date")
    return lines


def maintain_once(
    store: CertSecretStore,
    target: MaintainTarget,
    *,
    now: datetime | None = None,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Bring the Secret and the bundles to the wanted state; returns what was done, one
    line per change (or one line saying nothing was needed), each also passed to
    `report` as it happens. Idempotent: a second call writes nothing."""
    from cluster.api import ApiError

    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return _maintain_pass(store, target, now, report or (lambda line: None))
        except ApiError as error:
            if not error.conflict or attempt == CONFLICT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _print_flushed(line: str) -> None:
    print(line, flush=True)


@_one_line_errors
def maintain_handler(args: argparse.Namespace) -> int:
    """``snapguard certs maintain``: keep the TLS Secret and the caBundles current."""
    from cluster.api import ApiError, KubeApi
    from cluster.certsecret import (
        MUTATING_WEBHOOK_CONFIGURATION,
        VALIDATING_WEBHOOK_CONFIGURATION,
        CertSecretStore,
    )
    from cluster.config import ClusterConfigError, ClusterTarget, api_client

    configurations = tuple(
        [(VALIDATING_WEBHOOK_CONFIGURATION, name) for name in args.validating_webhook]
        + [(MUTATING_WEBHOOK_CONFIGURATION, name) for name in args.mutating_webhook]
    )
    target = MaintainTarget(
        secret=args.secret,
        namespace=args.namespace,
        service=args.service,
        configurations=configurations,
        renew_before=args.renew_before,
    )
    # Bad names or a renewal window longer than a certificate lives: fail before any call.
    if args.renew_before >= SERVING_LIFETIME:
        return _error(
            f"--renew-before must be shorter than the serving certificate's lifetime "
            f"({SERVING_LIFETIME.days} days)"
        )
    _desired_files({}, target, None)
    try:
        store = CertSecretStore(KubeApi(api_client(ClusterTarget(args.kubeconfig, args.context))))
    except ClusterConfigError as error:
        return _error(str(error))

    interval: timedelta = args.interval
    while True:
        try:
            maintain_once(store, target, report=_print_flushed)
        except (ApiError, CertificateError) as error:
            if args.once:
                return _error(str(error))
            # A long-running maintainer outlives an API server restart or an RBAC
            # binding that lags behind: report and try again.
            print(f"snapguard: error: {' '.join(str(error).split())} (retrying)", file=sys.stderr)
            _sleep(min(interval, RETRY_AFTER).total_seconds())
            continue
        if args.once:
            return EXIT_OK
        _sleep(interval.total_seconds())


# --------------------------------------------------------------------- parser


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``certs create``, ``certs show`` and ``certs maintain`` on the top-level sub-parsers."""
    certs = subparsers.add_parser(
        "certs",
        help="create or inspect the webhook's TLS certificates",
        description="Create or inspect the CA and serving certificate of the webhook.",
    )
    commands = certs.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)
    dir_help = f"certificate directory (default: ${CERT_DIR_ENV} or {DEFAULT_CERT_DIR})"

    create = commands.add_parser(
        "create",
        help="create missing certificates, renew stale ones",
        description=(
            "Create ca.crt/ca.key and tls.crt/tls.key in the directory, renewing what is "
            "close to expiry, broken or missing a SAN. Existing valid files are kept."
        ),
    )
    create.add_argument("--cert-dir", type=Path, default=None, metavar="DIR", help=dir_help)
    create.add_argument("--service", metavar="S", help="Service name to add SANs for")
    create.add_argument("--namespace", metavar="N", help="namespace of --service")
    create.add_argument(
        "--san",
        dest="extra_sans",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP address for the serving certificate (repeatable)",
    )
    create.add_argument(
        "--force", action="store_true", help="replace the CA and serving certificate even if valid"
    )
    create.set_defaults(func=create_handler)

    show = commands.add_parser(
        "show",
        help="describe ca.crt and tls.crt",
        description="Show subject, SANs, expiry and key match of ca.crt and tls.crt.",
    )
    show.add_argument("--cert-dir", type=Path, default=None, metavar="DIR", help=dir_help)
    show.add_argument(
        "--output", "-o", choices=("text", "json"), default="text", help="output format"
    )
    show.set_defaults(func=show_handler)

    maintain = commands.add_parser(
        "maintain",
        help="keep the webhook's TLS Secret and the webhook configurations' caBundle current",
        description=(
            "Create or renew the CA and serving certificate in a Kubernetes TLS Secret "
            "(ca.crt, ca.key, tls.crt, tls.key; the CA key is kept nowhere else) and set "
            "every webhook's clientConfig.caBundle of the named configurations to the new "
            "CA plus the still-valid old ones, so a CA rotation never breaks TLS. "
            "Idempotent; runs every --interval, or once with --once."
        ),
    )
    maintain.add_argument("--secret", required=True, metavar="NAME", help="the TLS Secret")
    maintain.add_argument(
        "--namespace", required=True, metavar="NS", help="namespace of the Secret and the Service"
    )
    maintain.add_argument(
        "--service", required=True, metavar="SVC", help="the webhook's Service (certificate SANs)"
    )
    maintain.add_argument(
        "--validating-webhook",
        action="append",
        default=[],
        metavar="NAME",
        help="ValidatingWebhookConfiguration whose caBundle to maintain (repeatable)",
    )
    maintain.add_argument(
        "--mutating-webhook",
        action="append",
        default=[],
        metavar="NAME",
        help="MutatingWebhookConfiguration whose caBundle to maintain (repeatable)",
    )
    maintain.add_argument(
        "--once", action="store_true", help="one round, then exit (Jobs, CronJobs)"
    )
    maintain.add_argument(
        "--interval",
        type=parse_duration,
        default=parse_duration(DEFAULT_INTERVAL),
        metavar="DURATION",
        help=f"time between rounds without --once (default {DEFAULT_INTERVAL})",
    )
    maintain.add_argument(
        "--renew-before",
        type=parse_duration,
        default=parse_duration(DEFAULT_RENEW_BEFORE),
        metavar="DURATION",
        help=f"renew a certificate this long before it expires (default {DEFAULT_RENEW_BEFORE})",
    )
    maintain.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster or $KUBECONFIG)"
    )
    maintain.add_argument("--context", metavar="NAME", help="kubeconfig context")
    maintain.set_defaults(func=maintain_handler)
