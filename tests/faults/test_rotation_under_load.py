"""Certificate rotation under load: the serving certificate is replaced twice (same CA,
new key: what cert-manager or `snapguard certs maintain` do) while 200 reviews/s flow
over kept-alive and new connections. No request fails, and new connections are served
each new certificate (compared by serial number).

tests/webhook/test_server.py rotates once under unpaced clients; this one holds a
steady 200 requests/s and rotates twice, so a rotation lands while requests are being
answered on every connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography import x509

from certs.authority import (
    CERT_FILE_MODE,
    KEY_FILE_MODE,
    certificate_pem,
    issue_serving_certificate,
    private_key_pem,
    service_sans,
    write_file_atomic,
)
from certs.inspect import load_certificate, load_private_key
from tests.webhook.rawhttp import ResponseReader, request_bytes

from .conftest import WEBHOOK_STATE, Served, review, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.server, pytest.mark.timeout(120)]

KEPT_ALIVE_CONNECTIONS = 4
KEPT_ALIVE_RATE = 40.0  # per connection: 160/s
NEW_CONNECTION_CLIENTS = 4
NEW_CONNECTION_RATE = 10.0  # per client, one TLS connection per request: 40/s
MIN_SECONDS = 5.0
MAX_SECONDS = 30.0  # the load stops by itself whatever happens


def peer_serial(sock: object) -> int:
    der = sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


@dataclass
class Load:
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    serials: list[tuple[float, int]] = field(default_factory=list)  # (connected at, serial)

    def paced(self, rate: float, index: int, step: Callable[[int], None]) -> None:
        """Call `step(n)` at `rate` per second until stopped (or MAX_SECONDS)."""
        start = time.monotonic() + index / (rate * 8)
        n = 0
        while not self.stop.is_set() and time.monotonic() - start < MAX_SECONDS:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self.lock:
                self.sent += 1
            try:
                step(n)
                with self.lock:
                    self.answered += 1
            except Exception as error:
                with self.lock:
                    self.failures.append(f"{type(error).__name__}: {error}")
            n += 1


def rotate(served: Served) -> int:
    """A new serving certificate from the same CA, written as a rotation writes it
    (key, then certificate, each replaced atomically); its serial."""
    paths_ca = served.cert_dir / "ca.crt", served.cert_dir / "ca.key"
    ca_cert, ca_key = load_certificate(paths_ca[0]), load_private_key(paths_ca[1])
    cert, key = issue_serving_certificate(ca_cert, ca_key, service_sans(None, None))  # type: ignore[arg-type]
    write_file_atomic(served.cert_dir / "tls.key", private_key_pem(key), mode=KEY_FILE_MODE)
    write_file_atomic(served.cert_dir / "tls.crt", certificate_pem(cert), mode=CERT_FILE_MODE)
    return int(cert.serial_number)


def test_rotations_at_200_requests_per_second_fail_nothing(serve: Callable[..., Served]) -> None:
    served = serve("--state", str(WEBHOOK_STATE))
    load = Load()
    first_serial = int(load_certificate(served.cert_dir / "tls.crt").serial_number)

    def kept_alive(index: int) -> None:
        with served.connect(timeout=10) as sock:
            reader = ResponseReader(sock)

            def step(n: int) -> None:
                uid = f"ka-{index}-{n}"
                sock.sendall(request_bytes("/validate", review(uid)))
                response = reader.read()
                assert response.status == 200, response.body
                assert response.json()["response"]["uid"] == uid

            load.paced(KEPT_ALIVE_RATE, index, step)

    def new_connections(index: int) -> None:
        def step(n: int) -> None:
            uid = f"new-{index}-{n}"
            with served.connect(timeout=10) as sock:
                connected = time.monotonic()
                serial = peer_serial(sock)
                sock.sendall(request_bytes("/validate", review(uid)))
                response = ResponseReader(sock).read()
            assert response.status == 200, response.body
            assert response.json()["response"]["uid"] == uid
            with load.lock:
                load.serials.append((connected, serial))

        load.paced(NEW_CONNECTION_RATE, KEPT_ALIVE_CONNECTIONS + index, step)

    threads = [threading.Thread(target=kept_alive, args=(i,)) for i in range(KEPT_ALIVE_CONNECTIONS)]
    threads += [threading.Thread(target=new_connections, args=(i,)) for i in range(NEW_CONNECTION_CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()

    def seen_after(moment: float, serial: int) -> int:
        with load.lock:
            return sum(1 for at, s in load.serials if at > moment and s == serial)

    try:
        wait_for(lambda: seen_after(0, first_serial) >= 3, "new connections on the first certificate")
        rotated = [time.monotonic()]
        serials = [rotate(served)]
        # Each worker stats the files at most once a second: wait until new
        # connections are served the new certificate, then rotate again.
        wait_for(lambda: seen_after(rotated[0], serials[0]) >= 3, "new connections on the second certificate")
        rotated.append(time.monotonic())
        serials.append(rotate(served))
        wait_for(lambda: seen_after(rotated[1], serials[1]) >= 5, "new connections on the third certificate")
        remaining = MIN_SECONDS - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    elapsed = time.monotonic() - started
    assert load.failures == []
    assert load.answered == load.sent
    assert len({first_serial, *serials}) == 3
    # The last new connections all got the last certificate.
    with load.lock:
        last = [serial for _, serial in sorted(load.serials)[-5:]]
    assert last == [serials[1]] * 5, (last, serials)
    print(f"\n{load.answered} requests answered in {elapsed:.1f} s ({load.answered / elapsed:.0f}/s), "
          f"none failed, across 2 rotations")

