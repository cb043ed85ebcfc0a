"""SIGTERM with 50 large requests in flight: every request that had reached the server
(whole, or still arriving) is answered with a valid AdmissionReview, then the server
exits 0 and refuses new connections.

tests/webhook/test_server.py sends SIGTERM under 4 kept-alive clients of small
reviews and one half-sent request; this one has 50 concurrent ~1.5 MB reviews (the
API server sends up to 3 MiB): 25 sent whole and queued behind the workers' threads
when the signal arrives, 25 half sent, finished after it."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.webhook.rawhttp import ResponseReader, request_bytes

from .conftest import WEBHOOK_STATE, Served, padded_review

pytestmark = [pytest.mark.faults, pytest.mark.server, pytest.mark.timeout(120)]

CONNECTIONS = 50
BODY_BYTES = 1_500_000


def test_sigterm_answers_every_request_that_had_started(serve: Callable[..., Served]) -> None:
    served = serve("--state", str(WEBHOOK_STATE))
    sockets = [served.connect(timeout=30) for _ in range(CONNECTIONS)]  # accepted: TLS done
    requests = [request_bytes("/validate", padded_review(f"big-{i}", BODY_BYTES)) for i in range(CONNECTIONS)]
    whole = set(range(0, CONNECTIONS, 2))
    sent_first = threading.Barrier(CONNECTIONS + 1)
    signalled = threading.Event()
    answers: dict[int, tuple[int, object]] = {}
    failures: list[str] = []

    def client(index: int) -> None:
        sock, data = sockets[index], requests[index]
        try:
            if index in whole:
                sock.sendall(data)
            else:
                sock.sendall(data[: len(data) // 2])
            sent_first.wait(timeout=30)
            if index not in whole:
                signalled.wait(timeout=30)
                sock.sendall(data[len(data) // 2 :])
            response = ResponseReader(sock).read()
            answers[index] = (response.status, response.json())
        except Exception as error:
            failures.append(f"request {index}: {type(error).__name__}: {error}")
        finally:
            sock.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    sent_first.wait(timeout=30)
    served.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # the workers are stopping while the rest of the half-sent bodies arrive
    signalled.set()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(answers) == list(range(CONNECTIONS))
    for index, (status, payload) in answers.items():
        assert status == 200, payload
        assert isinstance(payload, dict)
        assert payload["apiVersion"] == "admission.k8s.io/v1" and payload["kind"] == "AdmissionReview"
        assert payload["response"]["uid"] == f"big-{index}"
        assert payload["response"]["allowed"] is True, payload
    assert served.process.wait(timeout=30) == 0, served.stderr()
    assert "Traceback" not in served.stderr()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()
