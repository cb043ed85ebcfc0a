"""Connecting to a cluster: a kubeconfig (`--kubeconfig`, `--context`, or $KUBECONFIG)
or the in-cluster service account. Every command that talks to an API server gets its
`ApiClient` here, so the connection rules are in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class ClusterConfigError(Exception):
    """No usable cluster configuration; str() is one line saying which and why."""


@dataclass(frozen=True)
class ClusterTarget:
    kubeconfig: str | None = None
    context: str | None = None


def in_cluster() -> bool:
    """Running in a pod with a service account (what `snapguard serve` checks before
    falling back to the embedded default)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.exists()


def cluster_configured(target: ClusterTarget) -> bool:
    return bool(target.kubeconfig or target.context or in_cluster())


def api_client(target: ClusterTarget) -> client.ApiClient:
    """An ApiClient for the target; in-cluster when neither kubeconfig nor context is
    given and the process runs in a pod."""
    try:
        if not target.kubeconfig and not target.context and in_cluster():
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=target.kubeconfig, context=target.context)
    except (ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as error:
        where = target.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ClusterConfigError(f"{where}: cannot load cluster configuration: {reason}") from None


def server_url(api: client.ApiClient) -> str:
    return str(api.configuration.host)
