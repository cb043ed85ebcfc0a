"""Fixtures of the cluster tests: the in-process Kubernetes API server of `tests/kubeapi`
(`kubeapi`, `kube_client`, `kubectl`), watch caches on it that are stopped at the end of
the test (`make_cache`), and `wait_for`, the bounded poll every test uses instead of
sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import kubernetes
import pytest

from cluster.api import KubeApi
from cluster.watchcache import WatchCache
from tests.kubeapi.conftest import kube_client, kubeapi, kubectl  # noqa: F401  (fixtures, used by name)

T = TypeVar("T")

# Fast retries so a reconnect takes milliseconds, not the production half second.
FAST = {"backoff_base": 0.02, "backoff_cap": 0.2}


def wait_for(condition: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    """Poll `condition` every 20 ms until it returns something true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def make_cache(kube_client: kubernetes.client.ApiClient) -> Iterator[Callable[..., WatchCache]]:  # noqa: F811
    caches: list[WatchCache] = []

    def make(*, start: bool = True, sync: bool = True, **options: Any) -> WatchCache:
        cache = WatchCache(KubeApi(kube_client), **{**FAST, **options})
        caches.append(cache)
        if start:
            cache.start()
            if sync:
                assert cache.wait_synced(5), cache.ready()[1]
        return cache

    yield make
    for cache in caches:
        cache.stop()
