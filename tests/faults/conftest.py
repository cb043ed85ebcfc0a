"""Fixtures of the fault tests: a real `snapguard serve` (gunicorn, TLS, its default 2
workers x 4 threads) started as a subprocess on a free port, with any arguments, and
stopped at the end of the test.

Every test here is marked `faults` (and `server`): `pytest -m faults` runs them alone.
Load is bounded in count and time, on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.webhook.loadgen import review_body
from tests.webhook.rawhttp import ResponseReader, open_tls, request_bytes

ROOT = Path(__file__).resolve().parents[2]
# Namespace ns1: a Ready disk d1 (a VirtualDiskSnapshot of it is admitted), a resizing d2.
WEBHOOK_STATE = ROOT / "tests" / "webhook" / "data" / "state.yaml"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: faults under load against a real server (certificate rotation, SIGTERM, "
        "stalled clients, API server outages)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    cert_dir: Path
    stderr_path: Path

    @property
    def cafile(self) -> Path:
        return self.cert_dir / "ca.crt"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def connect(self, timeout: float = 5.0) -> ssl.SSLSocket:
        return open_tls(self.port, self.context(), timeout=timeout)

    def get(self, path: str) -> tuple[int, Any]:
        """GET on a new connection (so it lands on whichever worker accepts it)."""
        with self.connect() as sock:
            sock.sendall(request_bytes(path, method="GET"))
            response = ResponseReader(sock).read()
        return response.status, response.json()

    def validate(self, body: bytes) -> dict[str, Any]:
        """POST /validate on a new connection; the AdmissionReview response."""
        with self.connect() as sock:
            sock.sendall(request_bytes("/validate", body))
            response = ResponseReader(sock).read()
        assert response.status == 200, response.body
        answer: dict[str, Any] = response.json()["response"]
        return answer

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise


def environment() -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "SNAPGUARD_CERT_DIR", "KUBECONFIG")
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `condition` every 50 ms until it returns something true (a bound on waiting,
    not an assertion on speed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """`serve(*args)`: `snapguard serve --port P --cert-dir DIR *args`, ready (/readyz
    200) unless `ready=False`; stopped with SIGTERM at the end of the test."""
    started: list[Served] = []

    def launch(*args: str, ready: bool = True) -> Served:
        port = free_port()
        stderr_path = tmp_path / f"serve-{port}.err"
        cert_dir = tmp_path / "certs"
        with open(tmp_path / f"serve-{port}.out", "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "snapguard.cli", "serve", "--port", str(port),
                 "--cert-dir", str(cert_dir), *args],
                cwd=tmp_path, stdout=out, stderr=err, env=environment(),
            )
        served = Served(process, port, cert_dir, stderr_path)
        started.append(served)

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"snapguard serve exited {process.returncode}: {served.stderr()}")
            try:
                status, _ = served.get("/readyz")
            except (OSError, ValueError):
                return False
            return status == 200 or not ready

        wait_for(up, "snapguard serve to answer /readyz", timeout=60)
        return served

    yield launch
    for served in started:
        if served.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                served.stop()


def review(uid: str, disk: str = "d1") -> bytes:
    """A VirtualDiskSnapshot CREATE of `disk` in ns1 (admitted for d1 of WEBHOOK_STATE)."""
    return review_body(uid, disk)


def padded_review(uid: str, size: int) -> bytes:
    """The same review, padded to about `size` bytes with annotations: large but valid
    (the API server sends up to 3 MiB)."""
    body = json.loads(review_body(uid))
    body["request"]["object"]["metadata"]["annotations"] = {
        f"example.com/a{i}": "v" * 100 for i in range(size // 120)
    }
    return json.dumps(body).encode()
