"""The serving TLS context of a worker process, shared by the connection handler and
`/readyz`.

gunicorn forks its workers, and an `ssl.SSLContext` (and the lock inside
`certs.tlscontext.ServerContextCache`) must not cross a fork, so there is one cache per
process, made on first use. The server's `ssl_context` hook and the app's readiness
check both get it from `process_context_cache`, so readiness reports on exactly the
certificate new connections are served with.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from typing import Any

from certs.tlscontext import ServerContextCache

_Key = tuple[int, str, str, str | None]
_caches: dict[_Key, ServerContextCache] = {}
_lock = threading.Lock()


def process_context_cache(
    cert_file: str, key_file: str, client_ca: str | None = None
) -> ServerContextCache:
    """This process's cache for the given files (TLS 1.2 floor, optional client CA)."""
    key = (os.getpid(), cert_file, key_file, client_ca)
    cache = _caches.get(key)
    if cache is None:
        with _lock:
            cache = _caches.get(key)
            if cache is None:
                cache = ServerContextCache(cert_file, key_file, client_ca)
                _caches[key] = cache
    return cache


def ssl_context_hook(
    cert_file: str, key_file: str, client_ca: str | None = None
) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """gunicorn's `ssl_context(config, default_ssl_context_factory)` server hook.

    gunicorn calls it for every accepted connection; the cache answers from memory and
    stats the files at most once a second, so rotated files are picked up by the next
    connection, without a restart, and a broken rotation keeps the last good context.
    """

    def ssl_context(
        config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        del config, default_ssl_context_factory  # our own, rotation-aware context
        return process_context_cache(cert_file, key_file, client_ca).get()

    return ssl_context
