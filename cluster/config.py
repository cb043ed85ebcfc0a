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
SERVICE_ACCOUNT_NAMESPACE = SERVICE_ACCOUNT_TOKEN.parent / "namespace"


class ClusterConfigError(Exception):
    """No usable cluster configuration; str() is one line saying which and why.
    `where` is the kubeconfig tried, `reason` the why (one line)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: cannot load cluster configuration: {reason}")
        self.where = where
        self.reason = reason


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


def _config_error(target: ClusterTarget, error: Exception) -> ClusterConfigError:
    where = target.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    if isinstance(error, ConfigException):
        reason = " ".join(str(error).split())
    elif isinstance(error, OSError):
        reason = error.strerror or str(error)
    else:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        what = "invalid YAML" if isinstance(error, yaml.YAMLError) else "not a valid kubeconfig"
        reason = f"{what} ({first_line})"
    return ClusterConfigError(where, reason or type(error).__name__)


def api_client(
    target: ClusterTarget, *, persist_config: bool = True, service_account: bool = True
) -> client.ApiClient:
    """An ApiClient for the target; in-cluster when neither kubeconfig nor context is
    given and the process runs in a pod. `service_account=False`: the kubeconfig only,
    even in a pod. `persist_config=False`: credentials a kubeconfig's auth provider
    refreshes are not written back to the file."""
    try:
        if service_account and not target.kubeconfig and not target.context and in_cluster():
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(
            config_file=target.kubeconfig, context=target.context, persist_config=persist_config
        )
    except Exception as error:  # the loader raises YAML, type, key and attribute errors on bad files
        raise _config_error(target, error) from None


def kube_context(target: ClusterTarget) -> tuple[str, str]:
    """The name of the kubeconfig context the target uses (its `context`, else the
    current one) and that context's namespace (`default` when it sets none)."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=target.kubeconfig)
    except Exception as error:  # as in api_client
        raise _config_error(target, error) from None
    chosen = active
    if target.context:
        chosen = next((c for c in contexts if c.get("name") == target.context), active)
    chosen = chosen or {}
    name = str(chosen.get("name") or target.context or "")
    namespace = str((chosen.get("context") or {}).get("namespace") or "default")
    return name, namespace


def pod_namespace() -> str:
    """The namespace of the pod's service account (`default` when it cannot be read)."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def server_url(api: client.ApiClient) -> str:
    return str(api.configuration.host or "")
