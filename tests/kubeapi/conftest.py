"""Fixtures: `kubeapi` (a started KubeAPIServer), `kube_client` (an ApiClient for it) and
`kubectl` (runs the real kubectl against it, returning CompletedProcess)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest

from tests.kubeapi.server import KubeAPIServer


@pytest.fixture
def kubeapi() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def kube_client(kubeapi: KubeAPIServer, tmp_path: Path) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeapi.kubeconfig_path(tmp_path)))
    yield client
    client.close()


@pytest.fixture
def kubectl(kubeapi: KubeAPIServer, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    kubeconfig = kubeapi.kubeconfig_path(tmp_path)
    env = {**os.environ, "KUBECACHEDIR": str(tmp_path / "kubecache"), "HOME": str(tmp_path),
           "KUBECONFIG": str(kubeconfig)}

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input=input,
                              capture_output=True, text=True, env=env, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run
