"""A gunicorn worker in which a slow or silent client can never hold a thread.

Why: gunicorn's gthread worker hands every accepted connection to a pool thread, which
does the TLS handshake blocking and then blocks in the HTTP parser, without a deadline,
until a request arrives. Once `workers x threads` connections have opened TLS (or just
TCP, or sent half a body) and then gone quiet, nobody else is answered, ever. An
admission webhook with `failurePolicy: Fail` that stops answering blocks every write of
the resources it guards, so this worker keeps every connection in its event loop until
a whole request is there:

* the main thread accepts, performs the TLS handshake non-blocking (`SSLWantRead` /
  `SSLWantWrite` re-arm the poller), and reads into a per-connection buffer;
* `framing.RequestFrame` says when the buffer holds a complete request (headers plus a
  `Content-Length` body, or a chunked body through its last chunk), capped at the
  API server's 3 MiB; only then does the connection go to the thread pool, where
  gunicorn's own parser and the WSGI app run on the buffered bytes without waiting;
* every connection not in a thread has a deadline: the handshake, the first request
  after it and each request once its first byte arrived must complete within
  `REQUEST_TIMEOUT` (10 s, the API server's webhook timeout: a later answer is lost);
  an idle kept-alive connection is closed after gunicorn's `keepalive`;
* after the response, a kept-alive connection goes back to the event loop, with any
  pipelined bytes the parser had read ahead.

So threads only ever run the app, and a new client is answered whatever the number of
stalled connections, up to `worker_connections` per worker (then new connections wait
in the listen backlog until deadlines free slots, at most `REQUEST_TIMEOUT` later).

This module knows HTTP framing and sockets, nothing about admission.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import selectors
import socket
import ssl
import time
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn import http, util
from gunicorn import sock as gunicorn_sock
from gunicorn.workers.gthread import TConn, ThreadWorker

from .framing import RequestFrame, Status, Verdict
from .settings import API_SERVER_WEBHOOK_TIMEOUT, MAX_BODY_BYTES, ON_REJECTED

# Handshake, first request after it, and each request from its first byte: the API
# server's webhook timeout. It finishes all three in milliseconds.
REQUEST_TIMEOUT = API_SERVER_WEBHOOK_TIMEOUT
# A thread writing a response to a client that does not read gives up after this.
THREAD_IO_TIMEOUT = API_SERVER_WEBHOOK_TIMEOUT
# After a "Connection: close" response, wait this long for the client's FIN so unread
# bytes do not turn our close into a reset that truncates the response.
CLOSE_LINGER = 2.0
# A stopping worker keeps idle kept-alive connections this long for a request already
# on its way (answered with "Connection: close"), as gunicorn's gthread does.
STOP_LINGER = 2.0
# Bytes buffered by one worker for incomplete requests. Past it, the connection whose
# read crossed the line is refused (503): ~40 API-server-sized maximum requests at once
# is far beyond real use, and memory stays bounded however many clients stall.
MAX_BUFFERED_BYTES = 128 * 1024 * 1024
READ_SIZE = 64 * 1024
# At most this much of a closing client's remaining body is read and discarded, so a
# client that sends a refused body whole before reading still gets our answer.
DRAIN_LIMIT = 16 * 1024 * 1024
ACCEPT_BATCH = 64
SWEEP_INTERVAL = 0.25


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def error_response(status: int, message: str) -> bytes:
    """A whole `Connection: close` response with the documented `{"error": ...}` body."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


# Who hears of an error answered here (the app's `rejected`), per worker process.
_on_rejected: list[Any] = []


def _report_rejected(status: int, reason: str) -> None:
    for hook in _on_rejected:
        with contextlib.suppress(Exception):  # bookkeeping never changes the answer
            hook(status, "", reason)


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, in the documented JSON shape instead of HTML:
    gunicorn answers its own parse errors (invalid request line, header, chunk...)
    through it, from `Worker.handle_error`."""
    message = f"{reason}: {mesg}" if mesg else reason
    _report_rejected(status_int, message)
    util.write_nonblock(sock, error_response(status_int, message))


class Phase(enum.Enum):
    HANDSHAKE = "handshake"
    READING = "reading"
    DISPATCHED = "dispatched"  # owned by a pool thread
    CLOSING = "closing"


class BufferedConnection(TConn):  # type: ignore[misc]
    """A client connection and its buffer; owned by the loop unless DISPATCHED."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)  # leaves the socket non-blocking
        # TConn.init would wrap and parse blocking in a thread: never let it run.
        self.initialized = True
        self.phase = Phase.READING
        self.deadline = 0.0
        self.buffer = bytearray()
        self.frame = RequestFrame(MAX_BODY_BYTES)
        self.request_started = False
        self.sent_continue = False
        self.close_after_response = False
        self.events = 0
        self.drained = 0  # bytes discarded while closing


class BufferedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with the handshake and request reading moved into the event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[BufferedConnection] = set()
        self.nr_conns: int = 0
        self.buffered_bytes = 0
        self._next_sweep = 0.0

    def load_wsgi(self) -> None:
        # In the worker process, before the loop: gunicorn's own error answers in JSON,
        # and every refused request reported to the app (logged and counted).
        super().load_wsgi()
        util.write_error = _write_json_error
        config = getattr(self.wsgi, "config", None)
        hook = config.get(ON_REJECTED) if isinstance(config, dict) else None
        _on_rejected[:] = [hook] if hook is not None else []

    # ------------------------------------------------------------ event loop

    def run(self) -> None:
        self.poller.register(
            self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks
        )
        self.set_accept_enabled(True)
        while self.alive:
            self.notify()
            can_accept = self.nr_conns < self.worker_connections
            if can_accept != self._accepting:
                self.set_accept_enabled(can_accept)
            self.wait_for_and_dispatch_events(timeout=SWEEP_INTERVAL * 2)
            if not self.is_parent_alive():
                break
            self._expire()
        self._shutdown()

    def _shutdown(self) -> None:
        """Stop accepting, finish what has started, then leave."""
        self.set_accept_enabled(False)
        for listener in self.sockets:
            # Once every process closed its copy, connects are refused at once instead
            # of waiting in a backlog nobody will accept from.
            listener.close()
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.phase is Phase.HANDSHAKE or (
                conn.phase is Phase.READING and not conn.request_started
            ):
                conn.deadline = min(conn.deadline, now + STOP_LINGER)
        graceful_deadline = now + self.cfg.graceful_timeout
        self._next_sweep = 0.0
        while self.connections and time.monotonic() < graceful_deadline:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=SWEEP_INTERVAL)
            self._expire()
        for conn in list(self.connections):
            if conn.phase is not Phase.DISPATCHED:
                self._close_now(conn)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()

    def _expire(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for conn in list(self.connections):
            if conn.phase is not Phase.DISPATCHED and now >= conn.deadline:
                self._close_now(conn)

    def _watch(self, conn: BufferedConnection, events: int) -> None:
        if conn.events == events:
            return
        callback = partial(self._on_event, conn)
        if conn.events:
            self.poller.modify(conn.sock, events, callback)
        else:
            self.poller.register(conn.sock, events, callback)
        conn.events = events

    def _unwatch(self, conn: BufferedConnection) -> None:
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            conn.events = 0

    def _on_event(self, conn: BufferedConnection, _fileobj: Any) -> None:
        try:
            if conn.phase is Phase.HANDSHAKE:
                self._handshake(conn)
            elif conn.phase is Phase.READING:
                self._read(conn)
            elif conn.phase is Phase.CLOSING:
                self._drain(conn)
        except Exception:  # a bug here must cost one connection, not the worker
            self.log.exception("error handling a connection; closing it")
            self._close_now(conn)

    # --------------------------------------------------------------- accepting

    def accept(self, listener: Any) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.nr_conns >= self.worker_connections:
                return
            try:
                client, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EAGAIN):
                    continue
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning("cannot accept a connection: %s", error)
                    return
                raise
            client.setblocking(False)
            conn = BufferedConnection(self.cfg, client, address, listener.getsockname())
            self.connections.add(conn)
            self.nr_conns = len(self.connections)
            conn.deadline = time.monotonic() + REQUEST_TIMEOUT
            if self.cfg.is_ssl:
                try:
                    context = gunicorn_sock.ssl_context(self.cfg)
                    conn.sock = context.wrap_socket(
                        client,
                        server_side=True,
                        do_handshake_on_connect=False,
                        suppress_ragged_eofs=True,
                    )
                except Exception as error:  # no usable certificate: refuse, keep serving
                    self.log.error("TLS unavailable, closing a new connection: %s", error)
                    self._close_now(conn)
                    continue
                conn.phase = Phase.HANDSHAKE
                self._handshake(conn)
            else:
                self._read(conn)

    def _handshake(self, conn: BufferedConnection) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as error:
            # Wrong protocol version, no client certificate, a port scanner...
            self.log.debug("TLS handshake with %s failed: %s", conn.client, error)
            self._close_now(conn)
            return
        conn.phase = Phase.READING
        conn.deadline = time.monotonic() + REQUEST_TIMEOUT
        self._read(conn)  # the request may have come along with the handshake

    # ----------------------------------------------------------------- reading

    def _read(self, conn: BufferedConnection) -> None:
        sock = conn.sock
        verdict: Verdict | None = None
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except OSError:  # includes ssl.SSLError: reset, bad record, ...
                self._close_now(conn)
                return
            if not data:  # the client closed
                self._close_now(conn)
                return
            if not conn.request_started:
                conn.request_started = True
                conn.deadline = time.monotonic() + REQUEST_TIMEOUT
            conn.buffer += data
            self.buffered_bytes += len(data)
            verdict = conn.frame.check(conn.buffer)
            if verdict.status is not Status.INCOMPLETE:
                break
            if self.buffered_bytes > MAX_BUFFERED_BYTES:
                self._refuse(conn, 503, "the webhook is buffering too many requests; retry")
                return
        self._advance(conn, verdict)

    def _advance(self, conn: BufferedConnection, verdict: Verdict | None) -> None:
        if verdict is None:
            verdict = (
                conn.frame.check(conn.buffer) if conn.buffer else Verdict(Status.INCOMPLETE)
            )
        if verdict.status is Status.COMPLETE:
            self._dispatch(conn, close_after=False)
        elif verdict.status is Status.OVERSIZED:
            self._dispatch(conn, close_after=True)
        elif verdict.status is Status.INVALID:
            self._refuse(conn, verdict.error_status, verdict.error)
        else:
            if conn.frame.wants_continue(conn.buffer) and not conn.sent_continue:
                # The client waits for this before sending the body it announced.
                conn.sent_continue = True
                try:
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except (OSError, ssl.SSLError):
                    self._close_now(conn)
                    return
            self._watch(conn, selectors.EVENT_READ)

    def _dispatch(self, conn: BufferedConnection, *, close_after: bool) -> None:
        self._unwatch(conn)
        data = bytes(conn.buffer)
        self.buffered_bytes -= len(conn.buffer)
        conn.buffer = bytearray()
        conn.frame = RequestFrame(MAX_BODY_BYTES)
        conn.phase = Phase.DISPATCHED
        conn.close_after_response = close_after
        conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(data)
        conn.sock.settimeout(THREAD_IO_TIMEOUT)
        self.enqueue_req(conn)

    def _refuse(self, conn: BufferedConnection, status: int, message: str) -> None:
        """Answer an error the app never sees (bad framing, too much buffered) and close."""
        _report_rejected(status, message)
        with contextlib.suppress(OSError):  # ssl.SSLError is an OSError
            conn.sock.send(error_response(status, message))  # small: fits the socket buffer
        self._close_gracefully(conn)

    # ------------------------------------------------------------ in a thread

    def handle(self, conn: BufferedConnection) -> bool:
        """Run the app on a buffered request (pool thread); True to keep the connection."""
        req = None
        try:
            req = next(conn.parser)
            if not req:
                return False
            if conn.sent_continue:
                req._expected_100_continue = False  # the loop already sent it
            keepalive = self.handle_request(req, conn)
            if not keepalive or conn.close_after_response:
                return False
            # The whole body is in memory: drain what the app left unread, no waiting.
            return bool(conn.parser.finish_body(deadline=time.monotonic() + 1.0))
        except http.errors.NoMoreData:
            self.log.debug("client went away")
        except StopIteration:
            pass
        except ssl.SSLError as error:
            if error.args[0] != ssl.SSL_ERROR_EOF:
                self.handle_error(req, conn.sock, conn.client, error)
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, None):
                self.log.exception("socket error answering a request")
        except Exception as error:
            self.handle_error(req, conn.sock, conn.client, error)
        return False

    def finish_request(self, conn: BufferedConnection, future: Future[Any]) -> None:
        """Back on the loop thread after the app answered."""
        if conn not in self.connections:
            return
        try:
            keep = bool(future.result()) if not future.cancelled() else False
        except Exception:
            keep = False
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.parser = None
        if not keep:
            self._close_gracefully(conn)
            return
        try:
            conn.sock.setblocking(False)
        except OSError:
            self._close_now(conn)
            return
        now = time.monotonic()
        conn.phase = Phase.READING
        conn.sent_continue = False
        conn.close_after_response = False
        conn.buffer = bytearray(leftover)
        self.buffered_bytes += len(leftover)
        conn.request_started = bool(leftover)
        conn.deadline = now + (REQUEST_TIMEOUT if leftover else self.cfg.keepalive)
        if not self.alive:
            conn.deadline = min(conn.deadline, now + STOP_LINGER)
        # Pipelined bytes (already read) or bytes decrypted in the TLS layer do not
        # wake the poller: look at them now. Anything else will.
        if leftover:
            verdict = conn.frame.check(conn.buffer)
            if verdict.status is not Status.INCOMPLETE:
                self._advance(conn, verdict)
                return
        if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
            self._read(conn)
        else:
            self._watch(conn, selectors.EVENT_READ)

    # ----------------------------------------------------------------- closing

    def _forget(self, conn: BufferedConnection) -> None:
        self._unwatch(conn)
        self.buffered_bytes -= len(conn.buffer)
        conn.buffer = bytearray()
        self.connections.discard(conn)
        self.nr_conns = len(self.connections)

    def _close_now(self, conn: BufferedConnection) -> None:
        self._forget(conn)
        util.close(conn.sock)

    def _close_gracefully(self, conn: BufferedConnection) -> None:
        """Send FIN, then read and discard until the client closes (or CLOSE_LINGER)."""
        self._unwatch(conn)
        self.buffered_bytes -= len(conn.buffer)
        conn.buffer = bytearray()
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close_now(conn)
            return
        conn.phase = Phase.CLOSING
        conn.deadline = time.monotonic() + CLOSE_LINGER
        self._watch(conn, selectors.EVENT_READ)

    def _drain(self, conn: BufferedConnection) -> None:
        """Read and discard what a closing client still sends, a few reads per event.

        A client that writes its whole (refused, oversized) body before reading must
        get to read our 413: closing while its bytes still arrive would answer them
        with a reset that can destroy the response. The drain is bounded by
        CLOSE_LINGER (the sweep closes the connection then) and by DRAIN_LIMIT bytes."""
        for _ in range(16):
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except (OSError, ValueError):
                break
            if not data:
                break
            conn.drained += len(data)
            if conn.drained > DRAIN_LIMIT:
                break
        else:
            return  # still sending: go on at the next event, within the deadline
        self._close_now(conn)

