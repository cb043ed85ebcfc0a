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
import http.client
import json
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes
import pytest
import yaml

from cluster.api import KubeApi
from policies import kinds
from tests.chart.test_chart import CHART, render
from tests.e2e.test_kubectl import SERVICE, Webhook, snapguard
from tests.realcluster.controlplane import ControlPlane, binaries_dir

NAMESPACE = "snapguard-system"  # the release's namespace, exempted by the configurations
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
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


@pytest.fixture(scope="session")
def chart_rbac(control_plane: ControlPlane) -> str:
    """The chart's ServiceAccounts, roles and bindings (default values, the release's
    namespace), applied for real; returns the chart's full name (the names' prefix)."""
    with helm.Chart.load(CHART) as chart:
        rendered = render(chart, {}, namespace=NAMESPACE)
    control_plane.apply([obj for obj in rendered.objects if obj["kind"] in RBAC_KINDS])
    return rendered.fullname


@dataclass
class Serve:
    """A running `snapguard serve` and what it logs (one JSON line per decision)."""

    webhook: Webhook
    url: str

    def decisions(self, name: str) -> list[Obj]:
        lines = [line for line in self.webhook.stderr().splitlines() if line.startswith("{")]
        return [d for d in map(json.loads, lines)
                if d.get("msg") == "admission decision" and d.get("name") == name]

    def review(self, obj: Obj, operation: str = "CREATE") -> Obj:
        """POST an AdmissionReview of `obj` to /validate over verified TLS; the response."""
        group, _, version = obj["apiVersion"].rpartition("/")
        metadata = obj["metadata"]
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": kinds.KINDS[obj["kind"]].plural},
            "name": metadata["name"], "namespace": metadata.get("namespace", ""), "operation": operation,
            "userInfo": {"username": "e2e"}, "object": obj, "dryRun": False}}
        context = ssl.create_default_context(cafile=str(self.webhook.cert_dir / "ca.crt"))
        connection = http.client.HTTPSConnection("127.0.0.1", self.webhook.port, timeout=10, context=context)
        try:
            connection.request("POST", "/validate", json.dumps(review), {"Content-Type": "application/json"})
            response: Obj = json.loads(connection.getresponse().read())["response"]
            return response
        finally:
            connection.close()

    def stop(self) -> int:
        return self.webhook.stop()


def start_serve(control_plane: ControlPlane, workdir: Path, *, kubeconfig: Path | None = None) -> Serve:
    """`snapguard certs create` for the release's Service, then `snapguard serve` (one
    worker) with the kubeconfig (default: the admin's), ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = workdir / "certs"
    snapguard("certs", "create", "--service", SERVICE, "--namespace", NAMESPACE,
              "--cert-dir", str(cert_dir), cwd=workdir)
    kubeconfig = kubeconfig or control_plane.kubeconfig(workdir / "kubeconfig")
    webhook = Webhook.start(kubeconfig, cert_dir, workdir, "--workers", "1")
    return Serve(webhook, f"https://127.0.0.1:{webhook.port}")


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
