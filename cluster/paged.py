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

The connection comes from `cluster.config`, the requests go through `cluster.api`'s
`KubeApi` (as do those of its sibling `cluster/reports.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ParamSpec, TypeVar

from pydantic import ValidationError

from policies import kinds
from policies.kinds import KindInfo
from policies.models import MODELS, KubeObject, Secret, parse_object
from policies.view import InMemoryView

from .api import ApiError, KubeApi
from .config import (
    ClusterConfigError,
    ClusterTarget,
    api_client,
    in_cluster,
    kube_context,
    pod_namespace,
    server_url,
)

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
R = TypeVar("R")
P = ParamSpec("P")


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

    def api(self, *extra_kinds: KindInfo) -> KubeApi:
        """The REST calls, with the audit's request timeout."""
        return KubeApi(self.api_client, timeout=REQUEST_TIMEOUT, extra_kinds=extra_kinds)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def api_reason(error: ApiError) -> str:
    """`404 Not Found: <the server's message>`."""
    try:
        phrase = HTTPStatus(error.status).phrase
    except ValueError:
        phrase = error.reason
    status = f"{error.status} {phrase or ''}".strip()
    return f"{status}: {_one_line(error.message)}" if error.message else status


def request(server: str, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """A `KubeApi` request: a server that cannot be reached (status 0) or that answers
    without JSON is a `ClusterError`; any other API error stays an `ApiError`."""
    try:
        return call(*args, **kwargs)
    except ApiError as error:
        if error.status:
            raise
        detail = error.message.removeprefix(f"{server}: ") or error.reason
        raise ClusterError(
            f"cannot reach the Kubernetes API server at {server}: {_one_line(detail)}"
        ) from None
    except ValueError as error:
        raise ClusterError(f"the Kubernetes API server at {server} sent no JSON: {error}") from None


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """A client for the kubeconfig (default: $KUBECONFIG or ~/.kube/config) and context
    (default: its current one); without either, inside a pod, the pod's service account
    when that kubeconfig cannot be used (a kubeconfig first, as kubectl does)."""
    target = ClusterTarget(kubeconfig, context)
    try:
        client = api_client(target, persist_config=False, service_account=False)
        name, namespace = kube_context(target)
    except ClusterConfigError as error:
        if kubeconfig is None and context is None and in_cluster():
            return _in_cluster()
        raise ClusterError(f"cannot use kubeconfig {error.where}: {error.reason}") from None
    server = server_url(client)
    if not server:
        raise ClusterError(f"kubeconfig context {name!r} names a cluster without a server URL")
    return Cluster(client, name, server, namespace)


def _in_cluster() -> Cluster:
    try:
        client = api_client(ClusterTarget())
    except ClusterConfigError as error:
        raise ClusterError(f"cannot use the pod's service account: {error.reason}") from None
    return Cluster(client, "in-cluster", server_url(client), pod_namespace())


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
        self.api = cluster.api()
        self.namespace = namespace
        self.page_size = page_size
        self.progress = progress
        self.view = LiveView(self.fetch_secret)
        self.notes: list[str] = []
        self.counts: dict[str, int] = {}

    def fetch_secret(self, namespace: str, name: str) -> Secret | None:
        info = kinds.KINDS[kinds.SECRET]
        try:
            raw = request(self.cluster.server, self.api.get, kinds.SECRET, namespace, name)
        except ApiError as error:
            raise ClusterError(
                f"cannot read Secret {namespace}/{name} from {self.cluster.server}: "
                f"{api_reason(error)}"
            ) from None
        if raw is None:  # 404
            return None
        obj = _parse(raw, info, self.cluster.server)
        return obj if isinstance(obj, Secret) else None

    def list_kind(self, info: KindInfo) -> None:
        field_selector = None
        if info.kind == kinds.SECRET:
            # Never every Secret's data: the snapshot Secrets only, others by name.
            field_selector = f"type={kinds.SNAPSHOT_SECRET_TYPE}"
        namespace = self.namespace if info.namespaced else None
        for attempt in range(LIST_ATTEMPTS):
            listed: list[tuple[str, str]] = []
            token: str | None = None
            try:
                while True:
                    page = request(
                        self.cluster.server,
                        self.api.list_page,
                        info.kind,
                        namespace,
                        limit=self.page_size,
                        continue_token=token,
                        field_selector=field_selector,
                    )
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
            except ApiError as error:
                if error.gone and attempt + 1 < LIST_ATTEMPTS:
                    # The continue token expired: list the kind again, from scratch.
                    for obj_namespace, name in listed:
                        self.view.remove(info.kind, obj_namespace, name)
                    continue
                self.list_failed(info, error)
                return
            self.view.mark_given(info.kind)
            self.counts[info.kind] = len(listed)
            return

    def list_failed(self, info: KindInfo, error: ApiError) -> None:
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
