"""``snapguard certs``: create and show the webhook's TLS material.

``certs create`` makes (or renews, or with ``--force`` replaces) the CA and
serving certificate in a directory; ``certs show`` describes ``ca.crt`` and
``tls.crt`` as text or JSON.  All certificate logic lives in :mod:`certs`; this
module only parses arguments, formats output and maps errors to exit codes.

Contract with ``snapguard/cli.py``: :func:`add_parser` registers the command and
sets ``func`` on every leaf sub-parser; ``func(args)`` returns the exit code
(0 ok, 2 error).  Errors are one line on stderr,
``snapguard: error: <file>: <what>``, never a traceback.  This module must not
call ``sys.exit`` or talk to the Kubernetes API.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from certs.authority import CertPaths, EnsureResult, ensure_certificates
from certs.errors import CertificateError
from certs.inspect import CertificateInfo, describe, is_issued_by

__all__ = ["CERT_DIR_ENV", "DEFAULT_CERT_DIR", "add_parser", "create_handler", "show_handler"]

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


# --------------------------------------------------------------------- parser


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``certs create`` and ``certs show`` on the top-level sub-parsers."""
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
