"""One JSON line per admission decision (and per unexpected error) on stderr.

A decision line says who asked what and what was answered: uid, kind, namespace, name,
operation, user, decision (allowed, denied or patched), the ids of the rules that
fired, dry_run and the time taken. It never contains the object, the old object or a
rule's message: a Secret's data (or a restore's stored VM) must never reach a log.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

# One encoder for every line: json.dumps with options builds a new one per call.
# ASCII-only: a name from the request may hold a lone surrogate UTF-8 cannot encode.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DecisionLog:
    """Writes whole lines under a lock, so threads never interleave within a line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        # None: sys.stderr as it is when writing (so a replaced stderr is honoured).
        self._stream = stream
        self._lock = threading.Lock()

    def decision(
        self,
        *,
        webhook: str,
        uid: str,
        kind: str,
        namespace: str,
        name: str,
        operation: str,
        user: str,
        decision: str,
        rules: list[str],
        dry_run: bool,
        duration_ms: float,
    ) -> None:
        self._write(
            {
                "time": _now(),
                "level": "info",
                "msg": "admission decision",
                "webhook": webhook,
                "uid": uid,
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "operation": operation,
                "user": user,
                "decision": decision,
                "rules": rules,
                "dry_run": dry_run,
                "duration_ms": round(duration_ms, 3),
            }
        )

    def rejected(self, *, status: int, path: str, reason: str) -> None:
        """A request answered with an HTTP error (4xx): what was wrong with it."""
        self._write(
            {
                "time": _now(),
                "level": "warning",
                "msg": "request rejected",
                "status": status,
                "path": path,
                "reason": reason,
            }
        )

    def error(self, message: str, error: BaseException, **context: Any) -> None:
        """An unexpected failure: the type, message and traceback go to the log only,
        never to the client."""
        self._write(
            {
                "time": _now(),
                "level": "error",
                "msg": message,
                **context,
                "error": f"{type(error).__name__}: {error}",
                "traceback": "".join(
                    traceback.format_exception(type(error), error, error.__traceback__)
                ),
            }
        )

    def _write(self, record: dict[str, Any]) -> None:
        line = _encode(record) + "\n"
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):  # a closed stderr must not fail a request
                pass
