"""Errors a command reports to a person as one line (exit code 2), never a traceback."""

from __future__ import annotations

import re
import sys


class UsageError(Exception):
    """Bad arguments or input; str() is the whole one-line message."""


# Characters that would break a line of text output apart, or rewrite the terminal:
# C0 and C1 controls, DEL, and Unicode's line and paragraph separators.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    r"""`text` with every control character escaped (`\n`, `\x1b`), so that a name or a
    message quoting one cannot forge a line of text output or a terminal sequence."""
    return _CONTROLS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def report(message: object) -> None:
    """Print `snapguard: error: <message>` to stderr as one line, whatever it quotes."""
    print(f"snapguard: error: {printable(str(message))}", file=sys.stderr)
