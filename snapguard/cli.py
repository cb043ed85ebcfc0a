"""Entry point of `snapguard` (and `kubectl snapguard`, the same program as a kubectl
plugin). Each command lives in `snapguard/commands/<name>.py` and registers itself with
`add_parser`; a command returns its exit code. Errors are one line on stderr with exit
code 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

COMMANDS = ("check", "review", "rules", "audit", "serve", "webhook_config", "certs", "reconcile", "convert")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage errors exit 2 as SPEC wants; keep them to one line.
        self.exit(2, f"snapguard: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="snapguard",
        description="Admission checks for DVP snapshots and restores: webhook, CI checks, audits.",
    )
    parser.add_argument("--version", action="version", version=f"snapguard {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"snapguard.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"snapguard.commands.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
