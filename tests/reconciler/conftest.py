"""Fixtures for the reconciler tests: the Kubernetes API test server of `tests/kubeapi`
(`kubeapi`, `kube_client`), a `KubeApi` over it, and a factory of in-process
reconcilers with a fast backoff."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from cluster.api import KubeApi
from policies.config import PolicyConfig
from policies.engine import Engine
from reconciler.loop import Key, Reconciler
from reconciler.queue import ExponentialBackoff
from tests.kubeapi.conftest import kube_client  # noqa: F401  (a fixture, used by name)
from tests.kubeapi.server import KubeAPIServer


@pytest.fixture
def kubeapi() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def api(kube_client: kubernetes.client.ApiClient) -> KubeApi:  # noqa: F811
    return KubeApi(kube_client, timeout=10)


def fast_backoff() -> ExponentialBackoff[Key]:
    return ExponentialBackoff(base_delay=0.001, max_delay=0.05)


@pytest.fixture
def make_reconciler(api: KubeApi) -> Callable[..., Reconciler]:
    def make(**options: Any) -> Reconciler:
        # The flows these tests drive are those of v1.8, the last release with
        # VirtualMachineRestore; a test that needs another release passes its engine.
        options.setdefault("engine", Engine(PolicyConfig.model_validate({"platformVersion": "1.8"})))
        options.setdefault("backoff", fast_backoff())
        options.setdefault("poll_interval", 0.5)
        return Reconciler(options.pop("api", api), **options)

    return make
