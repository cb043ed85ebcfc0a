"""The one exception type of the ``certs`` package.

Every failure to read, parse or use certificate material surfaces as a
:class:`CertificateError` whose message is a single line naming the file, so
callers (the CLI, readiness probes, logs) can show it verbatim without a
traceback.  This module must not import anything outside the standard library.
"""

from __future__ import annotations

import os


class CertificateError(Exception):
    """A certificate or key file is missing, unreadable, malformed or unusable.

    ``str(error)`` is ``"<path>: <reason>"`` (or just ``"<reason>"`` when no file
    is involved) and never contains a newline.
    """

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path: str | None = None if path is None else os.fspath(path)
        # Library messages (OpenSSL, cryptography) are sometimes multi-line; the
        # CLI contract is "one line", so flatten here, once, for every caller.
        self.reason: str = " ".join(reason.split())
        super().__init__(self.path, self.reason)

    def __str__(self) -> str:
        if self.path is None:
            return self.reason
        return f"{self.path}: {self.reason}"
