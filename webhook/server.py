"""gunicorn, driven from Python, serving the webhook app over TLS.

`WebhookServer` is a gunicorn custom application (`BaseApplication`): no config file,
no command line of gunicorn's own. The settings below were chosen by measuring on the
target hardware (figures and commands in docs/webhook.md):

* worker class `webhook.worker.BufferedThreadWorker` (gthread with the TLS handshake
  and request reading in the event loop, so stalled clients cannot hold threads);
* `workers` x `threads` = 2 x 4 by default (one process per core; threads overlap the
  GIL-free parts: TLS, socket writes);
* `keepalive` 120 s: the API server keeps idle connections to a webhook for 90 s
  (Go's `IdleConnTimeout` in its transport defaults); closing first would race its
  next request on a connection we are closing, and a POST is not retried by Go's
  client, so the admission call would fail. 120 s lets the client close first;
* `graceful_timeout` 15 s: on SIGTERM, requests already being read or answered finish
  (each is bounded by the API server's 10 s timeout anyway) before the worker exits;
* TLS 1.2 floor and optional client-certificate verification, from a per-worker
  `certs.tlscontext.ServerContextCache` returned by gunicorn's `ssl_context` hook: the
  context is built once, not per connection, and rotated files are picked up by new
  connections without a restart.

Must not decide anything or know the engine: it serves whatever WSGI app the factory
returns.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication

from .metrics import mark_worker_dead
from .tls import ssl_context_hook
from .worker import BufferedThreadWorker

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8443
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 4
KEEPALIVE_SECONDS = 120
GRACEFUL_TIMEOUT_SECONDS = 15
WORKER_CONNECTIONS = 1000

WORKER_CLASSES: dict[str, Any] = {
    "buffered": BufferedThreadWorker,
    # gunicorn's own classes, for measurements only (see docs/webhook.md).
    "gthread": "gthread",
    "sync": "sync",
}

WSGIApp = Callable[..., Any]


@dataclass(frozen=True)
class ServerOptions:
    cert_file: str
    key_file: str
    client_ca: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    threads: int = DEFAULT_THREADS
    keepalive: int = KEEPALIVE_SECONDS
    graceful_timeout: int = GRACEFUL_TIMEOUT_SECONDS
    worker_connections: int = WORKER_CONNECTIONS
    worker_class: str = "buffered"
    metrics_dir: str | None = None
    loglevel: str = "info"

    @property
    def bind(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def gunicorn_settings(
    options: ServerOptions, on_worker_start: Callable[[], None] | None = None
) -> dict[str, Any]:
    """gunicorn's settings for the options (the whole configuration, in one place)."""
    metrics_dir = options.metrics_dir

    def child_exit(server: Any, worker: Any) -> None:
        del server
        if metrics_dir:
            mark_worker_dead(worker.pid, metrics_dir)

    def post_worker_init(worker: Any) -> None:
        del worker
        if on_worker_start is not None:
            on_worker_start()

    return {
        "bind": [options.bind],
        "workers": options.workers,
        "threads": options.threads,
        "worker_class": WORKER_CLASSES[options.worker_class],
        "worker_connections": options.worker_connections,
        "keepalive": options.keepalive,
        "graceful_timeout": options.graceful_timeout,
        # Heartbeat: a worker whose loop is stuck this long is replaced.
        "timeout": 30,
        "certfile": options.cert_file,
        "keyfile": options.key_file,
        "ssl_context": ssl_context_hook(options.cert_file, options.key_file, options.client_ca),
        "http_protocols": "h1",
        # The view and the engine are built once in the master and shared by fork; bad
        # input fails before a worker starts.
        "preload_app": True,
        "child_exit": child_exit,
        "post_worker_init": post_worker_init,
        "control_socket_disable": True,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": options.loglevel,
        "proc_name": "snapguard-webhook",
    }


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """`WebhookServer(factory, options).run()` serves until SIGTERM/SIGINT."""

    def __init__(
        self,
        app_factory: Callable[[], WSGIApp],
        options: ServerOptions,
        *,
        on_worker_start: Callable[[], None] | None = None,
    ) -> None:
        self._factory = app_factory
        self._options = options
        self._on_worker_start = on_worker_start
        self._app: WSGIApp | None = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_settings(self._options, self._on_worker_start).items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        if self._app is None:
            self._app = self._factory()
            # With preload_app this runs in the master, before the fork: move everything
            # built so far (the view: up to hundreds of thousands of objects) out of the
            # garbage collector's reach, so workers neither traverse it on every full
            # collection nor copy its pages by touching it (gc.freeze's purpose).
            gc.collect()
            gc.freeze()
        return self._app
