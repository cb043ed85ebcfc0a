"""Stalled clients do not delay a normal one: with 100 connections that opened TLS and
send nothing, 100 that sent half a body and 100 idle kept-alive connections (and 100
that never even started TLS), a normal client is answered within a second of sending,
on its kept-alive connection and on a new one.

tests/webhook/test_server.py holds 50 idle kept-alive connections and times a new
connection from before its handshake; this one holds 100 of each kind and times what
the API server waits for, from the moment the request is sent to its answer. That
second is the only timing bound in the fault tests, and it is the outcome the issue
asks for (SPEC: the API server gives a webhook 10 s; a stalled peer must cost nobody
anything)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

import pytest

from tests.webhook.rawhttp import ResponseReader, request_bytes

from .conftest import WEBHOOK_STATE, Served, review

pytestmark = [pytest.mark.faults, pytest.mark.server, pytest.mark.timeout(120)]

EACH = 100
BOUND_SECONDS = 1.0


def timed_exchange(sock: ssl.SSLSocket, reader: ResponseReader, uid: str) -> float:
    """Seconds from sending a review to having its whole answer (checked)."""
    data = request_bytes("/validate", review(uid))
    sent = time.monotonic()
    sock.sendall(data)
    response = reader.read()
    elapsed = time.monotonic() - sent
    assert response.status == 200, response.body
    assert response.json()["response"]["uid"] == uid
    return elapsed


def test_stalled_connections_cost_a_normal_client_nothing(serve: Callable[..., Served]) -> None:
    served = serve("--state", str(WEBHOOK_STATE))
    normal = served.connect()
    normal_reader = ResponseReader(normal)
    timed_exchange(normal, normal_reader, "before")
    held: list[socket.socket] = []
    partial: list[tuple[ssl.SSLSocket, bytes, str]] = []
    idle: list[ssl.SSLSocket] = []
    try:
        for _ in range(EACH):
            held.append(socket.create_connection(("127.0.0.1", served.port), timeout=5))  # no TLS at all
        for _ in range(EACH):
            held.append(served.connect())  # TLS, then silence
        for index in range(EACH):
            sock = served.connect()
            data = request_bytes("/validate", review(f"partial-{index}"))
            sock.sendall(data[: len(data) // 2])
            partial.append((sock, data[len(data) // 2 :], f"partial-{index}"))
        for _ in range(EACH):
            sock = served.connect()
            sock.sendall(request_bytes("/healthz", method="GET"))
            assert ResponseReader(sock).read().status == 200
            idle.append(sock)  # kept alive, idle from now on

        waits: list[float] = []
        for attempt in range(5):
            waits.append(timed_exchange(normal, normal_reader, f"kept-alive-{attempt}"))
            with served.connect() as fresh:
                waits.append(timed_exchange(fresh, ResponseReader(fresh), f"fresh-{attempt}"))
        assert max(waits) < BOUND_SECONDS, f"a normal client waited {max(waits):.3f} s: {waits}"

        # The stalled ones are still served once they go on.
        sock, rest, uid = partial[0]
        sock.sendall(rest)
        response = ResponseReader(sock).read()
        assert response.status == 200 and response.json()["response"]["uid"] == uid
        timed_exchange(idle[0], ResponseReader(idle[0]), "idle-woke")
    finally:
        normal.close()
        for each in (*held, *idle, *(sock for sock, _, _ in partial)):
            each.close()
