"""A live cluster read once into an `InMemoryView`, for `snapguard audit`.

Every kind the rules read (`policies.models.MODELS`) is listed in pages (`limit` /
`continue`, `PAGE_SIZE` objects a request), and each object is parsed into its model as
its page arrives: at most one page of raw JSON is held at a time, never the whole list.

Secrets are special: their data is sensitive and a cluster has many. Only the
VirtualMachineSnapshot Secrets are listed (field selector on their type); any other
Secret a rule looks up (a VM's provisioning Secret, the one a restore would overwrite)
is fetched by name the first time a rule asks for it (`LiveView.get`), so the audit reads
exactly the Secrets it needs.

A kind the server does not serve (404 on list: VirtualMachineRestore on platform v1.9+,
no snapshot CRDs) or that the user may not list (403) is not *given* to the view, so
rules that need it report `unknown` instead of passing; `read_cluster` returns one note
per such kind. Anything else (the server unreachable, 5xx) is a `ClusterError` with one
line naming the server.

The only audit module that imports `kubernetes` (with its sibling `cluster/reports.py`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from policies import kinds
from policies.kinds import KindInfo
from policies.models import MODELS, KubeObject, Secret, parse_object
from policies.view import InMemoryView

# Objects per list request. kube-apiserver serves up to this many from its watch cache
# cheaply; 500 is what kubectl and client-go's pager use.
PAGE_SIZE = 500
# (connect, read) seconds per request: long enough for a 500-object page from a busy
# server, short enough that an unreachable one fails the audit instead of hanging it.
REQUEST_TIMEOUT = (10.0, 60.0)
# A continue token expires (410 Gone) when the list takes longer than etcd's compaction
# interval (5 minutes by default); the kind is then listed again from the start.
LIST_ATTEMPTS = 3

Progress = Callable[[str, int], None]
T = TypeVar("T", bound=KubeObject)


class ClusterError(Exception):
    """The cluster cannot be read or written; str() is one line naming the server."""


@dataclass(frozen=True)
class Cluster:
    """A connection to an API server, and the kubeconfig context it came from."""

    api_client: Any
    context: str
    server: str
    # The context's namespace, the default scope as for kubectl.
    namespace: str = "default"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _network_reason(error: BaseException) -> str:
    """`Connection refused` rather than urllib3's wrapped object reprs."""
    reason = getattr(error, "reason", None) or error
    text = _one_line(str(reason))
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"^Failed to establish a new connection:\s*", "", text)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text or type(error).__name__


def api_reason(error: ApiException) -> str:
    """`404 Not Found: <the server's message>`."""
    message = ""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            message = str(json.loads(body).get("message") or "")
        except (ValueError, AttributeError):
            message = body
    status = f"{error.status} {error.reason or ''}".strip()
    return f"{status}: {_one_line(message)}" if message else status


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """A client for the kubeconfig (default: $KUBECONFIG or ~/.kube/config) and context
    (default: its current one); without either, inside a pod, the pod's service account."""
    try:
        api_client = kube_config.new_client_from_config(
            config_file=kubeconfig, context=context, persist_config=False
        )
        contexts, active = kube_config.list_kube_config_contexts(config_file=kubeconfig)
    except ConfigException as error:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return _in_cluster()
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterError(f"cannot use kubeconfig {where}: {_one_line(str(error))}") from None
    except OSError as error:
        raise ClusterError(
            f"cannot read kubeconfig {kubeconfig}: {error.strerror or error}"
        ) from None
    except Exception as error:  # the loader raises YAML, type and key errors on bad files
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        what = "invalid YAML" if isinstance(error, yaml.YAMLError) else "not a valid kubeconfig"
        raise ClusterError(f"cannot use kubeconfig {where}: {what} ({first_line})") from None
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    chosen = chosen or {}
    name = str(chosen.get("name") or context or "")
    server = str(api_client.configuration.host or "")
    if not server:
        raise ClusterError(f"kubeconfig context {name!r} names a cluster without a server URL")
    namespace = str((chosen.get("context") or {}).get("namespace") or "default")
    return Cluster(api_client, name, server, namespace)


def _in_cluster() -> Cluster:
    configuration = kube_client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)
    except ConfigException as error:
        raise ClusterError(f"cannot use the pod's service account: {_one_line(str(error))}") from None
    namespace = "default"
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as file:
            namespace = file.read().strip() or namespace
    except OSError:
        pass
    return Cluster(kube_client.ApiClient(configuration), "in-cluster", configuration.host, namespace)


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


class KubeApi:
    """The typed client calls for a kind, returning parsed JSON (`_preload_content=False`
    keeps the client from building its own model objects of every item)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.core = kube_client.CoreV1Api(cluster.api_client)
        self.storage = kube_client.StorageV1Api(cluster.api_client)
        self.custom = kube_client.CustomObjectsApi(cluster.api_client)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            response = function(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
            return json.loads(response.data)
        except ApiException:
            raise
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterError(
                f"cannot reach the Kubernetes API server at {self.cluster.server}: "
                f"{_network_reason(error)}"
            ) from None
        except ValueError as error:
            raise ClusterError(
                f"the Kubernetes API server at {self.cluster.server} sent no JSON: {error}"
            ) from None

    def list(self, info: KindInfo, namespace: str | None, **query: Any) -> Any:
        if info.group == "":
            snake = _snake(info.kind)
            if info.namespaced and namespace is not None:
                return self.call(getattr(self.core, f"list_namespaced_{snake}"), namespace, **query)
            if info.namespaced:
                return self.call(getattr(self.core, f"list_{snake}_for_all_namespaces"), **query)
            return self.call(getattr(self.core, f"list_{snake}"), **query)
        if info.group == "storage.k8s.io":
            return self.call(getattr(self.storage, f"list_{_snake(info.kind)}"), **query)
        if info.namespaced and namespace is not None:
            return self.call(
                self.custom.list_namespaced_custom_object,
                info.group,
                info.version,
                namespace,
                info.plural,
                **query,
            )
        return self.call(
            self.custom.list_cluster_custom_object, info.group, info.version, info.plural, **query
        )

    def read_secret(self, namespace: str, name: str) -> Any:
        return self.call(self.core.read_namespaced_secret, name, namespace)


def _qualified(info: KindInfo) -> str:
    return f"{info.plural}.{info.group}" if info.group else info.plural


class LiveView(InMemoryView):
    """The listed objects, plus Secrets fetched by name the first time a rule asks for
    one that the list (snapshot Secrets only) did not hold. A failed fetch (other than
    404) is recorded in `errors`: the caller must not trust the audit then."""

    def __init__(self, fetch_secret: Callable[[str, str], Secret | None] | None = None) -> None:
        super().__init__()
        self._fetch_secret = fetch_secret
        self._fetched: set[tuple[str, str]] = set()
        self.errors: list[str] = []

    def get(self, model: type[T], namespace: str, name: str) -> T | None:
        found = super().get(model, namespace, name)
        if found is not None or model is not Secret or self._fetch_secret is None:
            return found
        if not self.has_kind(kinds.SECRET) or (namespace, name) in self._fetched:
            return None
        self._fetched.add((namespace, name))
        try:
            secret = self._fetch_secret(namespace, name)
        except ClusterError as error:
            self.errors.append(str(error))
            return None
        if secret is None:
            return None
        self.put(secret)
        return super().get(model, namespace, name)


@dataclass
class ClusterRead:
    view: LiveView
    # One line per kind the audit could not list (not served, not allowed).
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _parse(raw: Any, info: KindInfo, server: str) -> KubeObject:
    if not isinstance(raw, dict):
        raise ClusterError(f"{server}: a {info.kind} list holds a non-object item")
    # Items of a list carry no kind (core kinds) and, for some servers, no apiVersion.
    raw.setdefault("kind", info.kind)
    raw.setdefault("apiVersion", info.api_version)
    try:
        return parse_object(raw)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        meta = raw.get("metadata") or {}
        raise ClusterError(
            f"{server}: {info.kind} {meta.get('namespace', '')}/{meta.get('name', '')}: "
            f"{location}: {first['msg']}"
        ) from None


class _Reader:
    def __init__(self, cluster: Cluster, namespace: str | None, page_size: int, progress: Progress | None) -> None:
        self.cluster = cluster
        self.api = KubeApi(cluster)
        self.namespace = namespace
        self.page_size = page_size
        self.progress = progress
        self.view = LiveView(self.fetch_secret)
        self.notes: list[str] = []
        self.counts: dict[str, int] = {}

    def fetch_secret(self, namespace: str, name: str) -> Secret | None:
        info = kinds.KINDS[kinds.SECRET]
        try:
            raw = self.api.read_secret(namespace, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise ClusterError(
                f"cannot read Secret {namespace}/{name} from {self.cluster.server}: "
                f"{api_reason(error)}"
            ) from None
        obj = _parse(raw, info, self.cluster.server)
        return obj if isinstance(obj, Secret) else None

    def list_kind(self, info: KindInfo) -> None:
        query: dict[str, Any] = {}
        if info.kind == kinds.SECRET:
            # Never every Secret's data: the snapshot Secrets only, others by name.
            query["field_selector"] = f"type={kinds.SNAPSHOT_SECRET_TYPE}"
        namespace = self.namespace if info.namespaced else None
        for attempt in range(LIST_ATTEMPTS):
            listed: list[tuple[str, str]] = []
            token: str | None = None
            try:
                while True:
                    page_query = dict(query, limit=self.page_size)
                    if token:
                        page_query["_continue"] = token
                    page = self.api.list(info, namespace, **page_query)
                    for raw in page.get("items") or ():
                        obj = _parse(raw, info, self.cluster.server)
                        self.view.put(obj)
                        listed.append((obj.namespace, obj.name))
                    token = (page.get("metadata") or {}).get("continue") or None
                    del page  # one page of raw JSON at a time
                    if self.progress is not None:
                        self.progress(info.kind, len(listed))
                    if not token:
                        break
            except ApiException as error:
                if error.status == 410 and attempt + 1 < LIST_ATTEMPTS:
                    # The continue token expired: list the kind again, from scratch.
                    for obj_namespace, name in listed:
                        self.view.remove(info.kind, obj_namespace, name)
                    continue
                self.list_failed(info, error)
                return
            self.view.mark_given(info.kind)
            self.counts[info.kind] = len(listed)
            return

    def list_failed(self, info: KindInfo, error: ApiException) -> None:
        if error.status in (403, 404):
            why = (
                "the cluster does not serve it"
                if error.status == 404
                else "listing it is forbidden to this user"
            )
            extra = (
                " (VirtualMachineRestore was removed in platform v1.9)"
                if info.kind == kinds.VIRTUAL_MACHINE_RESTORE and error.status == 404
                else ""
            )
            self.notes.append(
                f"{info.kind} ({_qualified(info)}) not read: {why}{extra}; rules that need "
                f"{info.kind} objects report unknown"
            )
            return
        raise ClusterError(
            f"cannot list {_qualified(info)} from {self.cluster.server}: {api_reason(error)}"
        )


def read_cluster(
    cluster: Cluster,
    *,
    namespace: str | None = None,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
) -> ClusterRead:
    """Every kind the rules read, into a view. `namespace` restricts namespaced kinds to
    one namespace (None: all); cluster-scoped kinds are always listed whole."""
    reader = _Reader(cluster, namespace, max(page_size, 1), progress)
    for kind in MODELS:
        reader.list_kind(kinds.KINDS[kind])
    return ClusterRead(reader.view, reader.notes, reader.counts)
