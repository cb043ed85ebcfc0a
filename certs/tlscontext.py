"""Server-side ``ssl.SSLContext`` that follows certificate rotation on disk.

gunicorn's sync and gthread workers call the ``ssl_context`` hook for *every
accepted connection*, so :class:`ServerContextCache` makes that call cheap: it
hands out one cached context and, at most once per ``check_interval``, stats
the certificate files; only when their ``(st_mtime_ns, st_size, st_ino)``
changed does it build a new context.  Rotation by ``os.replace`` (see
:mod:`certs.authority`) or by the kubelet's atomic Secret-volume symlink swap
both change the inode, so they are always noticed.

A failed rebuild (files mid-rotation, a key that does not match, a file that
vanished) never takes the server down: the previous good context keeps being
served and the rebuild is retried on a later call.  Only when there never was a
good context does :meth:`ServerContextCache.get` raise ``CertificateError``.

This module must not write files or decide *when* to rotate; it only follows
what is on disk.  It imports nothing but the standard library and
``cryptography``.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from certs.errors import CertificateError
from certs.inspect import key_matches_certificate, load_certificate, load_private_key

__all__ = ["ServerContextCache", "gunicorn_ssl_context_hook"]

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]
_Signature = tuple[tuple[int, int, int], ...]

# Forward secrecy and AEAD only for TLS 1.2 (TLS 1.3 suites are configured
# separately by OpenSSL and are all fine).  Works with ECDSA and RSA keys.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

# A rebuild whose files changed under it is retried at once, a few times, to
# ride out a rotation in progress instead of waiting for the next interval.
_BUILD_ATTEMPTS = 3


class _Unreadable(CertificateError):
    """A file is missing, unreadable or not PEM: readiness must report it."""


class _Inconsistent(CertificateError):
    """Files are readable but do not form a usable pair (yet): keep serving."""


@dataclass(frozen=True)
class _Served:
    context: ssl.SSLContext
    signature: _Signature
    subject: str
    not_before: datetime
    not_after: datetime


class ServerContextCache:
    """A thread-safe, self-refreshing server ``SSLContext`` for one cert/key pair.

    ``client_ca``, when given, turns on mutual TLS: clients must present a
    certificate signed by that CA (``verify_mode = CERT_REQUIRED``).

    Create one per process (after fork): the lock and context are not meant to
    cross a ``fork``.
    """

    def __init__(
        self,
        certfile: StrPath,
        keyfile: StrPath,
        client_ca: StrPath | None = None,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.certfile = os.fspath(certfile)
        self.keyfile = os.fspath(keyfile)
        self.client_ca = None if client_ca is None else os.fspath(client_ca)
        self._files = [self.certfile, self.keyfile]
        if self.client_ca is not None:
            self._files.append(self.client_ca)
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._served: _Served | None = None
        self._next_check = float("-inf")
        self._error: CertificateError | None = None
        self._logged_error: str | None = None

    # ------------------------------------------------------------------ public

    def get(self) -> ssl.SSLContext:
        """The current context; rebuilt first if the files changed.

        Hot path: two attribute reads and a clock call, lock-free, while within
        ``check_interval`` of the last check.
        """
        served = self._served
        if served is not None and self._clock() < self._next_check:
            return served.context
        return self._refresh(force=False)

    def reload(self) -> ssl.SSLContext:
        """Check the files now, ignoring ``check_interval``."""
        return self._refresh(force=True)

    def status(self, now: datetime | None = None) -> tuple[bool, str]:
        """Readiness: ``(ok, reason)``.

        Not ok when no context could ever be built, when the files are
        currently unreadable, or when the certificate being served is expired
        (or not yet valid) at ``now``.  A rotation that is momentarily
        inconsistent (mismatched pair) is still ok: the previous certificate is
        being served.
        """
        try:
            self._refresh(force=True)
        except CertificateError as exc:
            return False, str(exc)
        with self._lock:
            served, error = self._served, self._error
        assert served is not None  # _refresh raises when there is no context
        if isinstance(error, _Unreadable):
            return False, str(error)
        moment = _utc(now)
        if moment >= served.not_after:
            return False, (
                f"{self.certfile}: served certificate {served.subject} "
                f"expired at {served.not_after.isoformat()}"
            )
        if moment < served.not_before:
            return False, (
                f"{self.certfile}: served certificate {served.subject} "
                f"not valid before {served.not_before.isoformat()}"
            )
        reason = f"serving {served.subject} until {served.not_after.isoformat()}"
        if error is not None:
            reason += f" (reload pending: {error})"
        return True, reason

    @property
    def not_after(self) -> datetime | None:
        """Expiry of the certificate being served, ``None`` before the first success."""
        served = self._served
        return None if served is None else served.not_after

    # ----------------------------------------------------------------- private

    def _refresh(self, *, force: bool) -> ssl.SSLContext:
        with self._lock:
            now = self._clock()
            served = self._served
            if not force and served is not None and now < self._next_check:
                return served.context  # another thread checked while we waited
            self._next_check = now + self._interval
            try:
                new = self._current_or_rebuilt(served)
            except CertificateError as exc:
                self._error = exc
                self._log_failure(exc, have_previous=served is not None)
                if served is None:
                    raise
                return served.context
            if new is not served:
                log.info("TLS certificate loaded: %s until %s", new.subject, new.not_after)
            self._served, self._error, self._logged_error = new, None, None
            return new.context

    def _current_or_rebuilt(self, served: _Served | None) -> _Served:
        for _ in range(_BUILD_ATTEMPTS):
            # Stat *before* loading: if the files change after this point, the
            # next check sees a different signature and rebuilds again.  (Stat
            # after loading could pin new stats to old content forever.)
            signature = self._signature()
            if served is not None and signature == served.signature:
                return served
            new = self._build(signature)
            if self._signature() == signature:
                return new
        raise _Inconsistent(self.certfile, "kept changing while being loaded; will retry")

    def _signature(self) -> _Signature:
        sig = []
        for path in self._files:
            try:
                st = os.stat(path)  # follows the kubelet's ..data symlinks
            except FileNotFoundError:
                raise _Unreadable(path, "not found") from None
            except OSError as exc:
                raise _Unreadable(path, f"cannot stat: {exc.strerror or exc}") from None
            sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(sig)

    def _build(self, signature: _Signature) -> _Served:
        # Parse with cryptography first: it names the broken file precisely,
        # where OpenSSL only says "PEM lib".
        try:
            cert = load_certificate(self.certfile)
            key = load_private_key(self.keyfile)
        except CertificateError as exc:
            raise _Unreadable(exc.path, exc.reason) from None
        if not key_matches_certificate(key, cert):
            raise _Inconsistent(
                self.keyfile,
                f"does not match {os.path.basename(self.certfile)} (rotation in progress?)",
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        context.set_ciphers(TLS12_CIPHERS)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except ssl.SSLError as exc:
            # The files were replaced between our parse and OpenSSL's read.
            raise _Inconsistent(
                self.certfile, f"cannot load certificate chain: {exc.reason or exc}"
            ) from None
        except OSError as exc:
            raise _Unreadable(
                self.certfile, f"cannot load certificate chain: {exc.strerror or exc}"
            ) from None
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except ssl.SSLError as exc:
                raise _Unreadable(
                    self.client_ca, f"cannot load client CA: {exc.reason or exc}"
                ) from None
            except OSError as exc:
                raise _Unreadable(
                    self.client_ca, f"cannot load client CA: {exc.strerror or exc}"
                ) from None
            context.verify_mode = ssl.CERT_REQUIRED
        return _Served(
            context=context,
            signature=signature,
            subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    def _log_failure(self, exc: CertificateError, *, have_previous: bool) -> None:
        # Retries happen every interval; log each distinct problem once.
        message = str(exc)
        if message == self._logged_error:
            return
        self._logged_error = message
        if have_previous:
            log.warning("TLS reload failed, serving the previous certificate: %s", message)
        else:
            log.error("TLS context unavailable: %s", message)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def gunicorn_ssl_context_hook(
    certfile: StrPath | None = None,
    keyfile: StrPath | None = None,
    client_ca: StrPath | None = None,
    *,
    check_interval: float = 1.0,
) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """A gunicorn ``ssl_context(config, default_ssl_context_factory)`` hook.

    Each worker process lazily gets its own :class:`ServerContextCache` (keyed
    by PID, because the hook is defined in the master and inherited by
    ``fork``).  ``certfile``/``keyfile`` default to gunicorn's ``--certfile`` /
    ``--keyfile``; gunicorn's default factory is not used.
    """
    caches: dict[int, ServerContextCache] = {}

    def ssl_context(
        config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        del default_ssl_context_factory  # we build our own, rotation-aware context
        pid = os.getpid()
        cache = caches.get(pid)
        if cache is None:
            cache = ServerContextCache(
                certfile if certfile is not None else config.certfile,
                keyfile if keyfile is not None else config.keyfile,
                client_ca,
                check_interval=check_interval,
            )
            # setdefault is atomic: two threads racing here share one cache.
            cache = caches.setdefault(pid, cache)
        return cache.get()

    return ssl_context
