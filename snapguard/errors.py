"""Errors a command reports to a person as one line (exit code 2), never a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """Bad arguments or input; str() is the whole one-line message."""
