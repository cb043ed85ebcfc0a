"""Fixtures of the webhook tests: the test state, AdmissionReview builders, the Flask
app with a captured decision log, and a real `snapguard serve` over TLS on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from certs.authority import CertPaths, ensure_certificates
from cluster.statefiles import load_state
from policies.config import PolicyConfig
from webhook.app import create_app
from webhook.settings import WebhookSettings
from webhook.viewsource import StaticViewSource

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STATE = HERE / "data" / "state.yaml"
GOLDEN = HERE / "golden"
GROUP = "virtualization.deckhouse.io"


def review(
    kind: str = "VirtualDiskSnapshot",
    spec: dict[str, Any] | None = None,
    *,
    name: str = "s1",
    namespace: str = "ns1",
    operation: str = "CREATE",
    uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
    group: str = GROUP,
    version: str = "v1alpha2",
    dry_run: bool = False,
    old_spec: dict[str, Any] | None = None,
    user: str = "alice",
) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview as the API server sends it."""
    api_version = f"{group}/{version}" if group else version
    obj = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec if spec is not None else {"virtualDiskName": "d1", "requiredConsistency": True},
    }
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": None if operation == "DELETE" else obj,
        "oldObject": None,
        "dryRun": dry_run,
    }
    if operation in ("UPDATE", "DELETE"):
        old = copy.deepcopy(obj)
        if old_spec is not None:
            old["spec"] = old_spec
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@dataclass
class WebhookUnderTest:
    app: Flask
    client: FlaskClient
    log: io.StringIO

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.client.post(path, json=body, **kwargs)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line]


@pytest.fixture(scope="session")
def state_view() -> Any:
    return load_state([str(STATE)])


@pytest.fixture
def make_webhook(state_view: Any) -> Callable[..., WebhookUnderTest]:
    def make(policy: dict[str, Any] | None = None, state: Any = None, **settings: Any) -> WebhookUnderTest:
        config = PolicyConfig.model_validate(policy or {})
        app = create_app(
            WebhookSettings(policy=config, **settings),
            StaticViewSource(state if state is not None else state_view, "tests/webhook/data/state.yaml"),
            log_stream=(log := io.StringIO()),
        )
        return WebhookUnderTest(app, app.test_client(), log)

    return make


@pytest.fixture
def webhook(make_webhook: Callable[..., WebhookUnderTest]) -> WebhookUnderTest:
    return make_webhook()


# ---------------------------------------------------------------- real server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    paths: CertPaths
    stdout_path: Path
    stderr_path: Path
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_context(self, **kwargs: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.paths.ca_cert))
        for key, value in kwargs.items():
            setattr(context, key, value)
        return context

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise


def start_server(
    tmp_path: Path,
    *args: str,
    cert_dir: Path | None = None,
    default_cert_dir: bool = False,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> RunningServer:
    """`snapguard serve` as a subprocess on a free port, the test state as its view.
    With `default_cert_dir`, no --cert-dir: the embedded default under `tmp_path`."""
    port = free_port()
    cert_dir = tmp_path / ".snapguard" / "certs" if default_cert_dir else cert_dir or tmp_path / "certs"
    stdout_path = tmp_path / f"serve-{port}.out"
    stderr_path = tmp_path / f"serve-{port}.err"
    environment = {
        k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "SNAPGUARD_CERT_DIR")
    }
    environment["PYTHONPATH"] = str(ROOT)
    environment.update(env or {})
    command = [
        sys.executable, "-m", "snapguard.cli", "serve", "--port", str(port), "--state", str(STATE), *args,
    ]
    if not default_cert_dir:
        command += ["--cert-dir", str(cert_dir)]
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=err, env=environment)
    server = RunningServer(process, port, CertPaths(cert_dir), stdout_path, stderr_path, list(args))
    if wait:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"snapguard serve exited {process.returncode}: {server.stderr()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    server.stop(signal.SIGKILL)
                    raise AssertionError(f"snapguard serve did not listen: {server.stderr()}") from None
                time.sleep(0.05)
    return server


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def launch(*args: str, **kwargs: Any) -> RunningServer:
        server = start_server(tmp_path, *args, **kwargs)
        started.append(server)
        return server

    yield launch
    for server in started:
        if server.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.stop(timeout=30)


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    ensure_certificates(directory)
    return directory


if sys.platform != "linux":  # the server tests use Linux socket behaviour
    collect_ignore_glob = ["test_server*.py"]
