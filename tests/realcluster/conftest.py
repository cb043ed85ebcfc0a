"""Fixtures of the real-control-plane suite (`./scripts/e2e`; marker `controlplane`,
deselected from the default `./scripts/test` run).

* `control_plane`: one etcd + kube-apiserver for the whole session (starting one costs
  20-60 s), with the CRDs of `controlplane.DEFAULT_CRDS`;
* `namespace`: a fresh namespace per test;
* `serve(...)`: `snapguard serve --kubeconfig` as a subprocess (real gunicorn, real TLS,
  the watch cache on the real API server), stopped at the end of the module;
* `route_to(configurations, url)`: the webhook configurations with `clientConfig.service`
  replaced by a URL on 127.0.0.1. A real API server cannot route a Service to the
  loopback interface (EndpointSlice validation rejects 127.0.0.0/8 addresses), so
  everything else of the configuration is applied exactly as generated.

A control plane that cannot be built or started is an error of every test, never a skip.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from cluster.api import KubeApi

from tests.e2e.test_kubectl import SERVICE, Webhook, _environment, snapguard
from tests.realcluster.controlplane import ControlPlane, binaries_dir, free_port, wait_until

NAMESPACE = "snapguard-system"  # the release's namespace, exempted by the configurations
Obj = dict[str, Any]


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("controlplane"), binaries_dir()) as plane:
        plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
        yield plane


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """`cluster.api.KubeApi` as the admin, through the real client."""
    kubeconfig = control_plane.kubeconfig(tmp_path_factory.mktemp("admin") / "kubeconfig")
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield KubeApi(client, timeout=30)
    client.close()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    return control_plane.namespace(request.node.name.removeprefix("test_"))


@dataclass
class Serve:
    """A running `snapguard serve` and what it logs (one JSON line per decision)."""

    webhook: Webhook
    url: str

    def decisions(self, name: str) -> list[Obj]:
        lines = [line for line in self.webhook.stderr().splitlines() if line.startswith("{")]
        return [d for d in map(json.loads, lines)
                if d.get("msg") == "admission decision" and d.get("name") == name]

    def stop(self) -> int:
        process = self.webhook.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        return process.returncode


def start_serve(control_plane: ControlPlane, workdir: Path, *, kubeconfig: Path | None = None,
                extra: tuple[str, ...] = ()) -> Serve:
    """`snapguard certs create` for the release's Service, then `snapguard serve` on a free
    port with the kubeconfig (default: the admin's), waited for until /readyz is 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = workdir / "certs"
    if not (cert_dir / "tls.crt").exists():
        snapguard("certs", "create", "--service", SERVICE, "--namespace", NAMESPACE,
                  "--cert-dir", str(cert_dir), cwd=workdir)
    kubeconfig = kubeconfig or control_plane.kubeconfig(workdir / "kubeconfig")
    port = free_port()
    stderr_path = workdir / f"serve-{port}.err"
    with open(workdir / f"serve-{port}.out", "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "snapguard.cli", "serve", "--kubeconfig", str(kubeconfig),
             "--cert-dir", str(cert_dir), "--port", str(port), "--workers", "1", *extra],
            cwd=workdir, stdout=out, stderr=err, env=_environment(),
        )
    serve = Serve(Webhook(process, port, cert_dir, stderr_path), f"https://127.0.0.1:{port}")

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"snapguard serve exited {process.returncode}: {serve.webhook.stderr()}")
        return serve.webhook.readiness()[0] == 200

    try:
        wait_until(ready, "snapguard serve to be ready", 60)
    except BaseException:
        serve.stop()
        raise
    return serve


@pytest.fixture(scope="module")
def serve_factory(control_plane: ControlPlane,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Serve]]:
    """Start `snapguard serve` processes; every one is stopped when the module ends."""
    started: list[Serve] = []

    def start(**options: Any) -> Serve:
        serve = start_serve(control_plane, tmp_path_factory.mktemp("serve"), **options)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.stop()


def webhook_config(cert_dir: Path, *args: str) -> list[Obj]:
    """What `snapguard webhook-config` prints for the release's Service and our CA."""
    text = snapguard("webhook-config", "--service", SERVICE, "--namespace", NAMESPACE,
                     "--ca-bundle", str(cert_dir / "ca.crt"), *args, cwd=cert_dir).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def route_to(configurations: list[Obj], url: str) -> list[Obj]:
    """The same configurations, each webhook calling `url` + its Service path."""
    routed = copy.deepcopy(configurations)
    for configuration in routed:
        for webhook in configuration["webhooks"]:
            client = webhook["clientConfig"]
            service = client.pop("service")
            client["url"] = url + service.get("path", "/")
    return routed


def registered_resources(configurations: list[Obj]) -> set[str]:
    """Every resource the validating configuration sends to the webhook."""
    return {resource
            for configuration in configurations if configuration["kind"] == "ValidatingWebhookConfiguration"
            for webhook in configuration["webhooks"] for rule in webhook["rules"]
            for resource in rule["resources"]}
