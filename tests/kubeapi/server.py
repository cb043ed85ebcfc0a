"""A small in-process Kubernetes API server for tests.

`KubeAPIServer` speaks the kube-apiserver REST protocol over plain HTTP on 127.0.0.1 for the
kinds listed in `RESOURCES` (one line per kind), well enough for the real `kubernetes` Python
client and for `kubectl` (get / apply / create / delete / patch, client-side validation off or
on). It is built on `http.server.ThreadingHTTPServer` and keeps everything in memory.

What it does, as kube-apiserver does:
  * discovery (/api, /apis, APIResourceList), /version, a minimal /openapi/v2 and /openapi/v3
    (enough for kubectl to use server-side field validation), Table output for kubectl get;
  * get / list (label + field selectors, limit/continue paging) / watch (chunked JSON lines,
    replay from a bounded history, BOOKMARKs, 410 Expired ERROR events, timeoutSeconds);
  * create (generateName, uid, a global resourceVersion counter, generation), update with
    optimistic concurrency, merge / JSON / strategic(=merge) patch, a simplified server-side
    apply, the status subresource (main and /status writes are isolated), delete with
    finalizers (deletionTimestamp) and ownerReference garbage collection, namespace termination;
  * dryRun=All, admission webhooks from stored Mutating/ValidatingWebhookConfigurations
    (rules, namespace/object selectors, HTTPS with caBundle, timeouts, failurePolicy,
    sideEffects, JSONPatch, warnings), Status error bodies with the real reasons and messages;
  * test hooks: fail_next(), expire_history(), drop_watches(), stop()/start() on the same port,
    put_object()/get_object()/objects(), admission_log and request_log; `omit=` serves a
    subset of RESOURCES (an older or newer platform: no VirtualMachineRestore, no
    VirtualMachineSnapshotOperation, no Deckhouse Module).

What it deliberately does not do: authentication/authorization (every caller is
`kubernetes-admin`, or whoever the Impersonate-User header names), OpenAPI schema validation,
defaulting or pruning, CEL (matchConditions, validating admission policies), managedFields and
real field ownership for server-side apply, consistent snapshots for paged lists (later pages see
current data), deletecollection, propagationPolicy (Foreground/Orphan), webhook reinvocation,
sendInitialEvents, `kubectl explain` (no schemas), and any controller besides GC and namespace
cleanup. Protobuf request bodies (kubectl's typed generators such as `kubectl create secret`) get
415; use manifests (`kubectl apply -f` / `create -f`), which kubectl sends as JSON.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import copy
import http.client
import json
import random
import re
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import jsonpatch
import yaml

Obj = dict[str, Any]
BUILTIN_GROUPS = {"", "storage.k8s.io", "coordination.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io"}


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource
    short_names: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = ()  # extra `kubectl get` columns: (header, dotted path)
    field_selectors: tuple[str, ...] = ()  # besides metadata.name and metadata.namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def builtin(self) -> bool:  # compiled-in type rather than a CRD
        return self.group in BUILTIN_GROUPS

    @property
    def qualified(self) -> str:  # "virtualdisks.virtualization.deckhouse.io" as in messages
        return f"{self.plural}.{self.group}" if self.group else self.plural


R, DVP, SNAP = Resource, "virtualization.deckhouse.io", "snapshot.storage.k8s.io"
PHASE, CONSISTENT = ("Phase", "status.phase"), ("Consistent", "status.consistent")
EVENT_FIELDS = ("involvedObject.kind", "involvedObject.name", "involvedObject.namespace", "involvedObject.uid", "reason", "type")
# One line per served kind. Everything (discovery, routing, lists, openapi, kubectl tables) derives from this.
RESOURCES: list[Resource] = [
    R("", "v1", "namespaces", "Namespace", namespaced=False, status=True, short_names=("ns",), columns=(("Status", "status.phase"),)),
    R("", "v1", "secrets", "Secret", field_selectors=("type",), columns=(("Type", "type"),)),
    R("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status=True, short_names=("pvc",), columns=(("Status", "status.phase"),)),
    R("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    R("", "v1", "events", "Event", short_names=("ev",), field_selectors=EVENT_FIELDS),
    R("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False, short_names=("sc",), columns=(("Provisioner", "provisioner"),)),
    R(SNAP, "v1", "volumesnapshots", "VolumeSnapshot", status=True, short_names=("vs",), columns=(("ReadyToUse", "status.readyToUse"),)),
    R(SNAP, "v1", "volumesnapshotclasses", "VolumeSnapshotClass", namespaced=False, short_names=("vsclass", "vsclasses"), columns=(("Driver", "driver"),)),
    R(DVP, "v1alpha2", "virtualdisks", "VirtualDisk", status=True, short_names=("vd",), columns=(PHASE,)),
    R(DVP, "v1alpha2", "virtualmachines", "VirtualMachine", status=True, short_names=("vm",), columns=(PHASE,)),
    R(DVP, "v1alpha2", "virtualmachineipaddresses", "VirtualMachineIPAddress", status=True, short_names=("vmip", "vmips"), columns=(PHASE,)),
    R(DVP, "v1alpha2", "virtualmachinemacaddresses", "VirtualMachineMACAddress", status=True, short_names=("vmmac", "vmmacs"), columns=(PHASE,)),
    R(DVP, "v1alpha2", "virtualmachineblockdeviceattachments", "VirtualMachineBlockDeviceAttachment", status=True, short_names=("vmbda", "vmbdas"), columns=(PHASE,)),
    R(DVP, "v1alpha2", "virtualdisksnapshots", "VirtualDiskSnapshot", status=True, short_names=("vdsnapshot", "vds"), columns=(PHASE, CONSISTENT)),
    R(DVP, "v1alpha2", "virtualmachinesnapshots", "VirtualMachineSnapshot", status=True, short_names=("vmsnapshot", "vmsnapshots"), columns=(PHASE, CONSISTENT)),
    R(DVP, "v1alpha2", "virtualmachinerestores", "VirtualMachineRestore", status=True, short_names=("vmrestore", "vmrestores"), columns=(PHASE,)),
    R(DVP, "v1alpha2", "virtualmachineoperations", "VirtualMachineOperation", status=True, short_names=("vmop", "vmops"), columns=(PHASE, ("Type", "spec.type"))),
    R(DVP, "v1alpha2", "virtualmachinesnapshotoperations", "VirtualMachineSnapshotOperation", status=True, short_names=("vmsop", "vmsops"), columns=(PHASE, ("Type", "spec.type"))),
    R(DVP, "v1alpha2", "virtualimages", "VirtualImage", status=True, short_names=("vi", "vis"), columns=(PHASE,)),
    R(DVP, "v1alpha2", "clustervirtualimages", "ClusterVirtualImage", namespaced=False, status=True, short_names=("cvi", "cvis"), columns=(PHASE,)),
    R("coordination.k8s.io", "v1", "leases", "Lease", columns=(("Holder", "spec.holderIdentity"),)),
    R("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", namespaced=False),
    R("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", namespaced=False),
    R("wgpolicyk8s.io", "v1alpha2", "policyreports", "PolicyReport", short_names=("polr",)),
    # Deckhouse's module objects (the virtualization module's version) and the CRDs
    # themselves (which vmop types the platform accepts): what platform detection reads.
    R("deckhouse.io", "v1alpha1", "modules", "Module", namespaced=False, status=True),
    R("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False,
      status=True, short_names=("crd", "crds")),
]

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
           422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable", 504: "Timeout"}
ADMIN = {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}
GC_USER = {"username": "system:serviceaccount:kube-system:generic-garbage-collector",
           "groups": ["system:serviceaccounts", "system:authenticated"]}
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2025-04-22T00:00:00Z", "goVersion": "go1.23.8",
           "compiler": "gc", "platform": "linux/amd64"}


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if not reason:  # metav1.StatusReasonUnknown is omitted
        del body["reason"]
    if details:
        body["details"] = {k: v for k, v in details.items() if v not in ("", None)}
    return body


class ApiError(Exception):
    """Becomes an HTTP error response carrying a metav1.Status body."""

    def __init__(self, code: int, reason: str | None, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code = code
        self.status = status_body(code, REASONS.get(code, "") if reason is None else reason,
                                  message, details)


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res: Resource, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
                    {"name": name, "group": res.group, "kind": res.plural})


def invalid(res: Resource, name: str, field: str, detail: str) -> ApiError:
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {field}: {detail}',
                    {"name": name, "group": res.group, "kind": res.kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}]})


def now_ts() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def human_age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    s = max(0, int(time.time() - calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))))
    for limit, unit, size in ((120, "s", 1), (3 * 3600, "m", 60), (48 * 3600, "h", 3600)):
        if s < limit:
            return f"{s // size}{unit}"
    return f"{s // 86400}d"


def dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; `$`-directives of strategic merge patches are dropped."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- label and field selectors ------------------------------------------------------------

_TOKEN = r"[^\s,=!()]+"
_LABEL_REQ = re.compile(
    rf"\s*(?:!\s*(?P<nk>{_TOKEN})|(?P<k>{_TOKEN})\s*(?:(?P<op>==|=|!=)\s*(?P<v>[^\s,=!()]*)"
    rf"|\s+(?P<set>in|notin)\s*\((?P<vals>[^)]*)\))?)\s*(?:,|$)")
Requirement = tuple[str, str, list[str]]  # (key, "in"|"notin"|"exists"|"!", values)


def parse_label_selector(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    pos = 0
    while pos < len(text):
        m = _LABEL_REQ.match(text, pos)
        if not m or m.end() == pos:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {text[pos:]!r}")
        pos = m.end()
        if m["nk"]:
            reqs.append((m["nk"], "!", []))
        elif m["op"]:
            reqs.append((m["k"], "notin" if m["op"] == "!=" else "in", [m["v"]]))
        elif m["set"]:
            reqs.append((m["k"], m["set"], [v.strip() for v in m["vals"].split(",") if v.strip()]))
        else:
            reqs.append((m["k"], "exists", []))
    return reqs


def selector_requirements(sel: Obj | None) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels / matchExpressions) as requirements."""
    sel = sel or {}
    reqs: list[Requirement] = [(k, "in", [v]) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for e in sel.get("matchExpressions") or []:
        reqs.append((e["key"], ops[e["operator"]], list(e.get("values") or [])))
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        if (op == "in" and not (present and labels[key] in values)) \
                or (op == "notin" and present and labels[key] in values) \
                or (op == "exists" and not present) or (op == "!" and present):
            return False
    return True


def parse_field_selector(res: Resource, text: str) -> list[tuple[str, bool, str]]:
    reqs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: '{text}'; can't understand '{part}'")
        field = m[1]
        allowed = ("metadata.name", "metadata.namespace", *res.field_selectors)
        if field not in allowed:
            raise ApiError(400, "BadRequest", f'"{field}" is not a known field selector: only '
                           + ", ".join(f'"{a}"' for a in allowed))
        reqs.append((field, m[2] != "!=", m[3]))
    return reqs


def fields_match(reqs: list[tuple[str, bool, str]], obj: Obj) -> bool:
    return all((str(dig(obj, f) or "") == v) == eq for f, eq, v in reqs)


# ---- the server ---------------------------------------------------------------------------

class RequestInfo(NamedTuple):
    """What fail_next() predicates receive."""
    verb: str  # get list watch create update patch delete
    resource: str  # plural, or "plural/status"
    namespace: str
    name: str


@dataclass
class _Failure:
    match: Callable[[RequestInfo], bool]
    code: int
    count: int
    message: str | None


@dataclass
class _Event:
    rv: int
    type: str
    res: Resource
    obj: Obj
    old: Obj | None


@dataclass
class _Req:
    handler: _Handler | None  # None for the server's own requests (garbage collector)
    method: str
    query: dict[str, str]
    body: bytes
    res: Resource
    ns: str
    name: str
    sub: str
    user: Obj
    warnings: list[str]
    streaming: bool = False  # response headers already sent (watch)

    def options(self, kind: str) -> Obj:  # Create/UpdateOptions as admission webhooks see them
        opts = {"kind": kind, "apiVersion": "meta.k8s.io/v1", "fieldManager": self.query.get("fieldManager")}
        if self.dry_run:
            opts["dryRun"] = ["All"]
        return {k: v for k, v in opts.items() if v}

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"

    def json(self) -> Any:
        ctype = self.handler.headers.get("Content-Type", "application/json") if self.handler else ""
        if "protobuf" in ctype or "cbor" in ctype:  # e.g. `kubectl create secret` (typed clients)
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format "
                           "- accepted media types include: application/json, application/yaml")
        try:
            return yaml.safe_load(self.body) if "yaml" in ctype else json.loads(self.body or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"the request body could not be decoded: {e}") from e


class _WebhookError(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two sends; with Nagle on, the second waits for the
    # client's delayed ACK and every request costs ~44 ms instead of ~0.6 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.api._connections.add(self.connection)

    def finish(self) -> None:
        self.server.api._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.api._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_body(self, code: int, body: Any, warnings: Sequence[str] = (), ctype: str = "") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for w in warnings:
            text = w.replace("\\", "\\\\").replace('"', '\\"').encode().decode("latin-1")
            self.send_header("Warning", f'299 - "{text}"')
        self.end_headers()
        self.wfile.write(data)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A watch cache opens one watch per kind at once; the default backlog of 5 refuses some.
    request_queue_size = 128
    api: KubeAPIServer


class KubeAPIServer:
    """In-memory kube-apiserver; use as a context manager or call start()/stop()."""

    def __init__(self, *, port: int = 0, history_size: int = 1000, bookmark_interval: float = 1.0,
                 watch_timeout: float = 1800.0, gc_interval: float = 0.05, omit: Collection[str] = ()):
        """`omit`: plurals of RESOURCES this server does not serve (absent from discovery,
        404 on every path), e.g. {"virtualmachinerestores"} for a platform from v1.9."""
        unknown = set(omit) - {r.plural for r in RESOURCES}
        if unknown:
            raise ValueError(f"omit: not resources of this server: {sorted(unknown)}")
        self.resources = [r for r in RESOURCES if r.plural not in omit]
        self.port = port
        self.history_size = history_size
        self.bookmark_interval = bookmark_interval  # seconds between BOOKMARKs, when requested
        self.watch_timeout = watch_timeout  # for watches that send no timeoutSeconds
        self.gc_interval = gc_interval
        self.gc_enabled = True
        self.service_urls: dict[tuple[str, str], str] = {}  # (ns, svc) -> "https://127.0.0.1:PORT"
        self.admission_log: list[Obj] = []  # every AdmissionReview sent
        self.request_log: list[tuple[str, str]] = []  # (method, path?query)
        self._store: dict[Resource, dict[tuple[str, str], Obj]] = {r: {} for r in self.resources}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._rv = 1
        self._floor = 1  # watches / continue tokens from an older resourceVersion get 410
        self._history: deque[_Event] = deque()
        self._epoch = 0  # bumped to end all open watches
        self._watches = 0
        self._failures: list[_Failure] = []
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._started_once = False
        self._gc_backoff: dict[str, float] = {}  # uid -> monotonic time before which GC won't retry

    # ---- lifecycle and test hooks -----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def active_watches(self) -> int:
        return self._watches

    def start(self) -> KubeAPIServer:
        if self._started_once:  # a restarted apiserver's watch cache starts at the current rv
            with self._lock:
                self._history.clear()
                self._floor = self._rv
        self._httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.api = self
        self.port = self._httpd.server_address[1]
        self._started_once = True
        self._threads = [threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True),
                         threading.Thread(target=self._gc_loop, args=(self._httpd,), daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        self.drop_watches()
        for conn in list(self._connections):  # like a process exit: cut kept-alive connections too
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def expire_history(self) -> None:
        """Compact: every resourceVersion handed out so far becomes too old. Watches from them,
        open watches included, get a 410 ERROR event and continue tokens a 410 Expired error."""
        with self._cond:
            self._rv += 1
            self._history.clear()
            self._floor = self._rv
            self._cond.notify_all()

    def drop_watches(self) -> None:
        """End every open watch stream (and its connection), as an apiserver restart would."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    def fail_next(self, verb: str | Callable[[RequestInfo], bool], resource: str | None = None,
                  code: int = 500, count: int = 1, message: str | None = None) -> None:
        """Fail the next `count` requests matching verb ("*" = any) and resource (plural or
        "plural/status"; None = any), or matching a predicate on RequestInfo."""
        if callable(verb):
            match = verb
        else:
            def match(i: RequestInfo) -> bool:
                return verb in ("*", i.verb) and resource in (None, i.resource, i.resource.split("/")[0])
        with self._lock:
            self._failures.append(_Failure(match, code, count, message))

    def kubeconfig_path(self, directory: str | Path) -> Path:
        path = Path(directory) / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kubeapi",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "kubernetes-admin", "user": {}}],
            "contexts": [{"name": "kubeapi", "context": {
                "cluster": "kubeapi", "user": "kubernetes-admin", "namespace": "default"}}]}))
        return path

    def resource(self, name: str) -> Resource:
        """Look a Resource up by plural, "plural.group", kind or short name."""
        for r in self.resources:
            if name in (r.plural, r.qualified, r.kind, *r.short_names):
                return r
        raise KeyError(name)

    def put_object(self, obj: Obj) -> Obj:
        """Store an object as is (status included), bypassing admission; emits a watch event."""
        group, _, version = obj["apiVersion"].rpartition("/")
        res = next((r for r in self.resources if (r.group, r.version, r.kind) == (group, version, obj["kind"])), None)
        if res is None:
            raise KeyError(f"{obj['apiVersion']} {obj['kind']} is not served by this server")
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if res.namespaced:
            md.setdefault("namespace", "default")
        else:
            md.pop("namespace", None)
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", now_ts())
        md.setdefault("generation", 1)
        if res.plural == "namespaces":
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md["name"]
        with self._lock:
            if res.namespaced:
                self._ensure_namespace(md["namespace"])
            old = self._store[res].get((md.get("namespace", ""), md["name"]))
            return self._commit(res, obj, "MODIFIED" if old else "ADDED", old)

    def get_object(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        with self._lock:
            obj = self._store[self.resource(resource)].get((namespace or "", name))
            return copy.deepcopy(obj)

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            items = self._store[self.resource(resource)]
            return [copy.deepcopy(o) for k, o in sorted(items.items())
                    if namespace is None or k[0] == namespace]

    # ---- storage ----------------------------------------------------------------------------

    def _commit(self, res: Resource, obj: Obj, etype: str, old: Obj | None) -> Obj:
        """Write one new version (or the deletion) under the lock and record the watch event."""
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if etype == "DELETED":
            self._store[res].pop(key, None)
        else:
            self._store[res][key] = obj
        self._history.append(_Event(self._rv, etype, res, obj, old))
        while len(self._history) > self.history_size:
            self._floor = self._history.popleft().rv
        self._cond.notify_all()
        return copy.deepcopy(obj)

    def _stored(self, res: Resource, ns: str, name: str) -> Obj:
        obj = self._store[res].get((ns, name))
        if obj is None:
            raise not_found(res, name)
        return copy.deepcopy(obj)

    def _ensure_namespace(self, ns: str) -> None:
        nsres = self.resource("namespaces")
        existing = self._store[nsres].get(("", ns))
        if existing is None:
            self._commit(nsres, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now_ts(),
                "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}, "ADDED", None)
        elif existing["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {ns} "
                           "because it is being terminated", {"name": ns, "kind": "namespaces"})

    # ---- HTTP dispatch ----------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        body = h.read_body()
        url = urlsplit(h.path)
        self.request_log.append((h.command, h.path))
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = "/" + url.path.strip("/")
        req = None
        try:
            static = self._static(path, h.headers.get("Accept", ""))
            if static is not None and h.command == "GET":
                code, payload, ctype = static
                return h.send_body(code, payload, ctype=ctype)
            user = dict(ADMIN)
            if h.headers.get("Impersonate-User"):
                user = {"username": h.headers["Impersonate-User"],
                        "groups": h.headers.get_all("Impersonate-Group") or ["system:authenticated"]}
            req = self._route(h, path, query, body, user)
            self._inject_failure(req)
            code, result = self._serve(req)
            if code:
                h.send_body(code, result, req.warnings)
        except ApiError as e:
            h.send_body(e.code, e.status, req.warnings if req else [])
        except Exception as e:  # a bug in this server: answer like the apiserver's panic handler
            traceback.print_exc()
            if req and req.streaming:
                h.close_connection = True
            else:
                h.send_body(500, status_body(500, "InternalError", f"Internal error occurred: {e!r}"))

    def _route(self, h: _Handler, path: str, query: dict[str, str], body: bytes, user: Obj) -> _Req:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        by_plural = {r.plural: r for r in self.resources if (r.group, r.version) == (group, version)}
        ns = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in by_plural:
            ns, rest = rest[1], rest[2:]
        res = by_plural.get(rest[0])
        name, sub = ([*rest, "", ""])[1:3]
        if res is None or len(rest) > 3 or (ns and not res.namespaced) or (name and res.namespaced and not ns) \
                or (sub and not (sub == "status" and res.status)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Req(h, h.command, query, body, res, ns, name, sub, user, [])

    def _inject_failure(self, req: _Req) -> None:
        verb = {"GET": "get" if req.name else ("watch" if req.query.get("watch") in ("1", "true")
                                                else "list"),
                "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[req.method]
        info = RequestInfo(verb, req.res.plural + ("/" + req.sub if req.sub else ""), req.ns, req.name)
        with self._lock:
            for f in self._failures:
                if f.match(info):
                    f.count -= 1
                    if f.count <= 0:
                        self._failures.remove(f)
                    raise ApiError(f.code, None, f.message or f"injected failure: {verb} {info.resource}")

    def _serve(self, req: _Req) -> tuple[int, Any]:
        m, named = req.method, bool(req.name)
        if m == "GET" and not named:
            if req.query.get("watch") in ("1", "true"):
                self._watch(req)
                return 0, None
            return 200, self._list(req)
        if m == "GET":
            with self._lock:
                obj = self._stored(req.res, req.ns, req.name)
            return 200, self._maybe_table(req, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}) or obj
        if m == "POST" and not named and not req.sub:
            return self._create(req, req.json())
        if m == "PUT" and named:
            return self._update(req)
        if m == "PATCH" and named:
            return self._patch(req)
        if m == "DELETE" and named and not req.sub:
            opts = req.json() or {}
            dry_run = req.dry_run or opts.get("dryRun") == ["All"]
            return 200, self._delete(req.res, req.ns, req.name, opts, dry_run, req.user, req.warnings)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # ---- read paths -------------------------------------------------------------------------

    def _selectors(self, req: _Req) -> Callable[[Obj], bool]:
        lreqs = parse_label_selector(req.query.get("labelSelector", ""))
        freqs = parse_field_selector(req.res, req.query.get("fieldSelector", ""))
        ns = req.ns
        return lambda o: (not ns or o["metadata"].get("namespace") == ns) \
            and labels_match(lreqs, o["metadata"].get("labels") or {}) and fields_match(freqs, o)

    def _list(self, req: _Req) -> Obj:
        res, match = req.res, self._selectors(req)
        limit = int(req.query.get("limit") or 0)
        with self._lock:
            rv = self._rv
            items = [(k, o) for k, o in sorted(self._store[res].items()) if match(o)]
            if token := req.query.get("continue"):
                try:
                    decoded = json.loads(base64.urlsafe_b64decode(token))
                    rv, start = int(decoded["rv"]), tuple(decoded["start"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ApiError(400, "BadRequest", f"continue key is not valid: {e}") from e
                if rv < self._floor:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display "
                                   "a consistent list result. You can start a new list without the "
                                   "continue parameter.")
                items = [(k, o) for k, o in items if k > start]
        meta: Obj = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            items, rest = items[:limit], len(items) - limit
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": rv, "start": list(items[-1][0])}).encode()).decode()
            if not req.query.get("labelSelector") and not req.query.get("fieldSelector"):
                meta["remainingItemCount"] = rest
        objs = [copy.deepcopy(o) for _, o in items]
        table = self._maybe_table(req, objs, meta)
        if table:
            return table
        for o in objs:  # typed lists carry no per-item kind/apiVersion; CR lists do
            if res.builtin:
                o.pop("kind", None)
                o.pop("apiVersion", None)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": objs}

    def _maybe_table(self, req: _Req, objs: list[Obj], meta: Obj) -> Obj | None:
        if "as=Table" not in req.handler.headers.get("Accept", ""):
            return None
        res, include = req.res, req.query.get("includeObject", "Metadata")
        cols = [("Name", "string", "name")] + [(c, "string", "") for c, _ in res.columns] + [("Age", "date", "")]
        rows = []
        for o in objs:
            cells = [o["metadata"]["name"], *(dig(o, p) for _, p in res.columns),
                     human_age(o["metadata"].get("creationTimestamp"))]
            row: Obj = {"cells": cells}
            if include == "Object":
                row["object"] = o
            elif include == "Metadata":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": o["metadata"]}
            rows.append(row)
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": rows,
                "columnDefinitions": [{"name": n, "type": t, "format": f, "description": "", "priority": 0}
                                      for n, t, f in cols]}

    def _watch(self, req: _Req) -> None:
        h, res, match = req.handler, req.res, self._selectors(req)
        rv_param = req.query.get("resourceVersion", "")
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise ApiError(400, "BadRequest", f'invalid resource version "{rv_param}"')
        deadline = time.monotonic() + float(req.query.get("timeoutSeconds") or self.watch_timeout)
        bookmarks = req.query.get("allowWatchBookmarks") in ("1", "true")
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache, private")
        h.end_headers()
        req.streaming = True
        with self._lock:
            epoch, self._watches = self._epoch, self._watches + 1
            if rv_param in ("", "0"):  # "get state and start at most recent"
                cursor = self._rv
                out = [{"type": "ADDED", "object": copy.deepcopy(o)}
                       for _, o in sorted(self._store[res].items()) if match(o)]
            else:
                cursor, out = int(rv_param), []
        next_bookmark = time.monotonic() + self.bookmark_interval
        try:
            while True:
                for event in out:
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED") and (table := self._maybe_table(
                            req, [event["object"]], {"resourceVersion": event["object"]["metadata"]["resourceVersion"]})):
                        event = {"type": event["type"], "object": table}  # kubectl get -w
                    data = json.dumps(event).encode() + b"\n"
                    h.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
                if out and out[-1]["type"] == "ERROR":
                    break
                out = []
                with self._cond:
                    while not out:
                        if epoch != self._epoch:  # drop_watches()/stop(): end the stream and connection
                            h.close_connection = True
                            break
                        if cursor < self._floor:
                            out = [{"type": "ERROR", "object": status_body(
                                410, "Expired", f"too old resource version: {cursor} ({self._floor})")}]
                            break
                        for ev in self._history:
                            if ev.rv > cursor and ev.res is res and (e := self._watch_event(ev, match)):
                                out.append(e)
                        cursor = max(cursor, self._rv)
                        now = time.monotonic()
                        if now >= deadline:
                            break
                        if bookmarks and now >= next_bookmark and not out:
                            out = [{"type": "BOOKMARK", "object": {
                                "kind": res.kind, "apiVersion": res.api_version,
                                "metadata": {"resourceVersion": str(cursor)}}}]
                            next_bookmark = now + self.bookmark_interval
                        if not out:
                            self._cond.wait(min(deadline, next_bookmark if bookmarks else deadline) - now)
                if not out:  # timeoutSeconds reached
                    break
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            h.close_connection = True
        finally:
            with self._lock:
                self._watches -= 1

    @staticmethod
    def _watch_event(ev: _Event, match: Callable[[Obj], bool]) -> Obj | None:
        now_in = match(ev.obj)
        if ev.type == "MODIFIED":  # selector transitions turn into ADDED / DELETED, like the cacher
            was_in = ev.old is not None and match(ev.old)
            if was_in and not now_in:
                old = copy.deepcopy(ev.old)
                old["metadata"]["resourceVersion"] = str(ev.rv)
                return {"type": "DELETED", "object": old}
            return {"type": "MODIFIED" if was_in else "ADDED", "object": ev.obj} if now_in else None
        return {"type": ev.type, "object": ev.obj} if now_in else None

    # ---- write paths ------------------------------------------------------------------------

    def _check_body(self, req: _Req, obj: Any) -> Obj:
        res = req.res
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        if obj.get("apiVersion", res.api_version) != res.api_version or obj.get("kind", res.kind) != res.kind:
            raise ApiError(400, "BadRequest", f"the API version in the data ({obj.get('apiVersion')}) does "
                           f"not match the expected API version ({res.api_version})")
        obj.update(apiVersion=res.api_version, kind=res.kind)
        md = obj.setdefault("metadata", {})
        if res.namespaced and md.get("namespace", req.ns) != req.ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                           "the namespace sent on the request")
        if res.namespaced:
            md["namespace"] = req.ns
        else:
            md.pop("namespace", None)
        return obj

    def _create(self, req: _Req, body: Any) -> tuple[int, Obj]:
        res, obj = req.res, self._check_body(req, body)
        md = obj["metadata"]
        if md.get("resourceVersion"):
            raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
        opts = req.options("CreateOptions")
        obj = self._admit("mutating", "CREATE", req, obj, None, opts)
        md = obj.setdefault("metadata", {})
        if not md.get("name"):
            if not md.get("generateName"):
                raise invalid(res, "", "metadata.name", "Required value: name or generateName is required")
            md["name"] = md["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if not NAME_RE.match(md["name"]) or len(md["name"]) > 253:
            raise invalid(res, md["name"], "metadata.name", f'Invalid value: "{md["name"]}": a lowercase RFC '
                          "1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                          "and must start and end with an alphanumeric character")
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            md.pop(k, None)
        md.update(uid=str(uuid.uuid4()), creationTimestamp=now_ts(), generation=1)
        if res.status:
            obj.pop("status", None)
        if res.plural == "namespaces":
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md["name"]
            obj.update(spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})
        obj = self._admit("validating", "CREATE", req, obj, None, opts)
        if req.dry_run:
            return 201, obj
        with self._lock:
            if (req.ns, md["name"]) in self._store[res]:
                raise ApiError(409, "AlreadyExists", f'{res.qualified} "{md["name"]}" already exists',
                               {"name": md["name"], "group": res.group, "kind": res.plural})
            if res.namespaced:
                self._ensure_namespace(req.ns)
            return 201, self._commit(res, obj, "ADDED", None)

    def _update(self, req: _Req) -> tuple[int, Obj]:
        body = self._check_body(req, req.json())
        return self._guaranteed_update(req, lambda old: copy.deepcopy(body), "UpdateOptions",
                                       require_rv=not req.res.builtin)

    def _patch(self, req: _Req) -> tuple[int, Obj]:
        ctype = req.handler.headers.get("Content-Type", "").split(";")[0].strip()
        patch = req.json()
        if ctype == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json patch must be a JSON array of operations")

            def apply(old: Obj) -> Obj:
                try:
                    return jsonpatch.apply_patch(old, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error "
                                   f"in our request: {e}") from e
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                       "application/apply-patch+yaml"):
            if ctype == "application/strategic-merge-patch+json" and not req.res.builtin:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                               "format - strategic merge patch is not supported for custom resources")
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "the patch must be a JSON object")
            if ctype == "application/apply-patch+yaml":  # simplified server-side apply
                if not req.query.get("fieldManager"):
                    raise ApiError(400, "BadRequest", "PATCH with apply requires a fieldManager")
                patch["metadata"] = {**(patch.get("metadata") or {}), "name": req.name}
                with self._lock:
                    exists = (req.ns, req.name) in self._store[req.res]
                if not exists:
                    return self._create(req, patch)

            def apply(old: Obj) -> Obj:
                return merge_patch(old, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json-patch+json, "
                           "application/merge-patch+json, application/apply-patch+yaml")
        return self._guaranteed_update(req, apply, "UpdateOptions")

    def _guaranteed_update(self, req: _Req, compute: Callable[[Obj], Any], opts_kind: str,
                           require_rv: bool = False) -> tuple[int, Obj]:
        res = req.res
        opts = req.options(opts_kind)
        for _ in range(10):
            with self._lock:
                old = self._stored(res, req.ns, req.name)
            new = self._check_body(req, compute(copy.deepcopy(old)))
            if new["metadata"].get("name") != req.name:
                raise ApiError(400, "BadRequest", f"the name of the object ({new['metadata'].get('name')}) "
                               f"does not match the name on the URL ({req.name})")
            if require_rv and not new["metadata"].get("resourceVersion"):  # CRDs: no unconditional PUT
                raise invalid(res, req.name, "metadata.resourceVersion",
                              "Invalid value: 0x0: must be specified for an update")
            if (new["metadata"].get("resourceVersion") or old["metadata"]["resourceVersion"]) \
                    != old["metadata"]["resourceVersion"]:
                raise conflict(res, req.name, "the object has been modified; please apply your changes "
                               "to the latest version and try again")
            new = self._admit("mutating", "UPDATE", req, new, old, opts)
            new = self._prepare_update(res, req.sub, old, new)
            new = self._admit("validating", "UPDATE", req, new, old, opts)
            if req.dry_run:
                return 200, new
            with self._lock:
                current = self._store[res].get((req.ns, req.name))
                if current is None:
                    raise not_found(res, req.name)
                if current["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]:
                    continue  # raced with another writer: recompute on the latest object
                if new == old:  # no-op updates neither bump the resourceVersion nor notify watchers
                    return 200, old
                return 200, self._finish_update(res, new, old)
        raise conflict(res, req.name, "too many concurrent updates")

    def _prepare_update(self, res: Resource, sub: str, old: Obj, new: Obj) -> Obj:
        """The update strategy: immutable metadata, status isolation, generation, finalizers."""
        if sub == "status":
            result = copy.deepcopy(old)
            result.pop("status", None)
            if "status" in new:
                result["status"] = new["status"]
            return result
        md, old_md = new["metadata"], old["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "resourceVersion"):
            if k in old_md:
                md[k] = old_md[k]
            else:
                md.pop(k, None)
        if res.status:
            new.pop("status", None)
            if "status" in old:
                new["status"] = old["status"]
        if res.plural == "namespaces":
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md["name"]
        skip = ("metadata", "status") if res.status else ("metadata",)
        if {k: v for k, v in new.items() if k not in skip} != {k: v for k, v in old.items() if k not in skip}:
            md["generation"] = old_md.get("generation", 0) + 1
        added = set(md.get("finalizers") or []) - set(old_md.get("finalizers") or [])
        if old_md.get("deletionTimestamp") and added:
            raise invalid(res, md["name"], "metadata.finalizers", "Forbidden: no new finalizers can be "
                          f"added if the object is being deleted, found new finalizers {sorted(added)}")
        return new

    def _finish_update(self, res: Resource, new: Obj, old: Obj) -> Obj:
        md = new["metadata"]
        if md.get("deletionTimestamp") and not md.get("finalizers") and res.plural != "namespaces":
            return self._commit(res, new, "DELETED", old)
        return self._commit(res, new, "MODIFIED", old)

    def _delete(self, res: Resource, ns: str, name: str, opts: Obj, dry_run: bool, user: Obj,
                warnings: list[str]) -> Obj:
        pre = opts.get("preconditions") or {}
        options = {"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", **opts}
        for _ in range(10):
            with self._lock:
                old = self._stored(res, ns, name)
            md = old["metadata"]
            for field, key in (("UID", "uid"), ("ResourceVersion", "resourceVersion")):
                if pre.get(key) and pre[key] != md.get(key):
                    raise conflict(res, name, f"Precondition failed: {field} in precondition: {pre[key]}, "
                                   f"{field} in object meta: {md.get(key)}")
            fake = _Req(None, "DELETE", {}, b"", res, ns, name, "", user, warnings)
            for phase in ("mutating", "validating"):
                self._admit(phase, "DELETE", fake, None, old, options, dry_run=dry_run)
            new = copy.deepcopy(old)
            graceful = bool(md.get("finalizers")) or res.plural == "namespaces"
            if graceful and not md.get("deletionTimestamp"):
                new["metadata"].update(deletionTimestamp=now_ts(), deletionGracePeriodSeconds=0,
                                       generation=md.get("generation", 0) + 1)
                if res.plural == "namespaces":
                    new["status"] = {"phase": "Terminating"}
            if dry_run:
                return new
            with self._lock:
                current = self._store[res].get((ns, name))
                if current is None:
                    raise not_found(res, name)
                if current["metadata"]["resourceVersion"] != md["resourceVersion"]:
                    continue
                if graceful:
                    return self._commit(res, new, "MODIFIED", old) if new != old else old
                gone = self._commit(res, new, "DELETED", old)
            if res.builtin:
                return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {k: v for k, v in {"name": name, "group": res.group, "kind": res.plural,
                                                      "uid": md["uid"]}.items() if v}}
            return gone
        raise conflict(res, name, "too many concurrent updates")

    # ---- garbage collection and namespace cleanup --------------------------------------------

    def _gc_loop(self, httpd: _HTTPServer) -> None:
        while self._httpd is httpd:
            time.sleep(self.gc_interval)
            if self.gc_enabled:
                self.collect_garbage()

    def collect_garbage(self) -> None:
        """One pass of the garbage collector and namespace controller (the loop runs this)."""
        victims: list[tuple[Resource, str, str, str]] = []
        with self._lock:
            terminating = {ns["metadata"]["name"]: ns for ns in self._store[self.resource("namespaces")].values()
                           if ns["metadata"].get("deletionTimestamp")}
            by_kind = {(r.group, r.kind): r for r in self.resources}
            occupied = set()
            for res, objs in self._store.items():
                for (ns, name), obj in objs.items():
                    md = obj["metadata"]
                    if ns in terminating:
                        occupied.add(ns)
                        if not md.get("deletionTimestamp"):
                            victims.append((res, ns, name, md["uid"]))
                        continue
                    refs = md.get("ownerReferences") or []
                    if refs and not md.get("deletionTimestamp") and all(
                            self._owner_gone(by_kind, ref, ns) for ref in refs):
                        victims.append((res, ns, name, md["uid"]))
            for name, ns_obj in terminating.items():
                if name not in occupied and not ns_obj["metadata"].get("finalizers"):
                    self._commit(self.resource("namespaces"), ns_obj, "DELETED", ns_obj)
        for res, ns, name, uid in victims:
            if self._gc_backoff.get(uid, 0) > time.monotonic():
                continue
            try:
                self._delete(res, ns, name, {"propagationPolicy": "Background"}, False, GC_USER, [])
            except ApiError:  # denied by a webhook, or already gone: retry later, as the real GC does
                self._gc_backoff[uid] = time.monotonic() + 1.0

    def _owner_gone(self, by_kind: dict[tuple[str, str], Resource], ref: Obj, ns: str) -> bool:
        group = ref.get("apiVersion", "").rpartition("/")[0]
        res = by_kind.get((group, ref.get("kind")))
        if res is None:  # a kind this server does not serve: never collect on its behalf
            return False
        owner = self._store[res].get((ns if res.namespaced else "", ref.get("name")))
        return owner is None or owner["metadata"].get("uid") != ref.get("uid")

    # ---- admission ----------------------------------------------------------------------------

    def _admit(self, phase: str, op: str, req: _Req, obj: Obj | None, old: Obj | None, options: Obj,
               dry_run: bool | None = None) -> Obj | None:
        res = req.res
        dry_run = req.dry_run if dry_run is None else dry_run
        if res.group == "admissionregistration.k8s.io":  # never sent to webhooks (no deadlocks)
            return obj
        with self._lock:
            configs = sorted(self._store[self.resource(f"{phase}webhookconfigurations")].values(),
                             key=lambda c: c["metadata"]["name"])
            configs = copy.deepcopy(configs)
        for wh in (w for c in configs for w in c.get("webhooks") or []):
            if not self._webhook_matches(wh, op, req, obj, old):
                continue
            name = wh.get("name", "")
            if dry_run and wh.get("sideEffects") not in ("None", "NoneOnDryRun"):
                raise ApiError(400, "BadRequest", f'admission webhook "{name}" does not support dry run')
            gvk = {"group": res.group, "version": res.version, "kind": res.kind}
            gvr = {"group": res.group, "version": res.version, "resource": res.plural}
            obj_name = (obj or old or {}).get("metadata", {}).get("name", "")
            request = {"uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk,
                       "requestResource": gvr, "name": obj_name,  # a Namespace is its own namespace:
                       "namespace": req.ns or (obj_name if res.plural == "namespaces" else ""),
                       "operation": op, "userInfo": req.user, "object": obj, "oldObject": old,
                       "dryRun": dry_run, "options": options}
            if req.sub:
                request.update(subResource=req.sub, requestSubResource=req.sub)
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
            self.admission_log.append(review)
            try:
                resp = self._call_webhook(wh, review)
                if resp.get("patch") and phase != "mutating":
                    raise _WebhookError("validating webhook may not return a patch")
            except _WebhookError as e:
                if wh.get("failurePolicy", "Fail") == "Ignore":
                    continue
                raise ApiError(500, "InternalError",
                               f'Internal error occurred: failed calling webhook "{name}": {e}') from e
            req.warnings.extend(resp.get("warnings") or [])
            if not resp.get("allowed"):
                st = dict(resp.get("status") or {})
                text = st.get("message") or st.get("reason")
                msg = f'admission webhook "{name}" denied the request' + (f": {text}" if text else
                                                                          " without explanation")
                code = st.get("code") or 0
                raise ApiError(code if code >= 400 else 400, st.get("reason", ""), msg, st.get("details"))
            if resp.get("patch") and obj is not None:
                try:
                    ops = json.loads(base64.b64decode(resp["patch"]))
                    obj = jsonpatch.apply_patch(obj, ops)
                except (ValueError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise ApiError(500, "InternalError", f"Internal error occurred: {e}") from e
        return obj

    def _webhook_matches(self, wh: Obj, op: str, req: _Req, obj: Obj | None, old: Obj | None) -> bool:
        res, sub = req.res, req.sub
        for rule in wh.get("rules") or []:
            ops, scope = rule.get("operations") or [], rule.get("scope", "*")
            if not (("*" in ops or op in ops)
                    and any(g in ("*", res.group) for g in rule.get("apiGroups") or [])
                    and any(v in ("*", res.version) for v in rule.get("apiVersions") or [])
                    and (scope == "*" or (scope == "Cluster") != (res.namespaced or res.plural == "namespaces"))):
                continue
            for pattern in rule.get("resources") or []:
                p_res, _, p_sub = pattern.partition("/")
                if p_res in ("*", res.plural) and p_sub in ("*", sub):
                    break
            else:
                continue
            break
        else:
            return False
        objects = [o for o in (obj, old) if o]
        if wh.get("namespaceSelector") and (res.namespaced or res.plural == "namespaces"):
            if res.plural == "namespaces":
                labels = objects[0]["metadata"].get("labels") or {}
            else:
                with self._lock:
                    ns_obj = self._store[self.resource("namespaces")].get(("", req.ns))
                labels = (ns_obj or {}).get("metadata", {}).get("labels") or {"kubernetes.io/metadata.name": req.ns}
            if not labels_match(selector_requirements(wh["namespaceSelector"]), labels):
                return False
        if wh.get("objectSelector"):
            reqs = selector_requirements(wh["objectSelector"])
            if not any(labels_match(reqs, o["metadata"].get("labels") or {}) for o in objects):
                return False
        return True

    def _call_webhook(self, wh: Obj, review: Obj) -> Obj:
        cc, timeout = wh.get("clientConfig") or {}, wh.get("timeoutSeconds") or 10
        if "v1" not in (wh.get("admissionReviewVersions") or ["v1"]):
            raise _WebhookError("webhook does not accept known AdmissionReview versions")
        if cc.get("url"):
            shown = target = cc["url"]
            sni = urlsplit(target).hostname or ""
        else:
            svc = cc.get("service") or {}
            sni = f"{svc.get('name')}.{svc.get('namespace')}.svc"
            shown = f"https://{sni}:{svc.get('port', 443)}{svc.get('path', '')}"
            base = self.service_urls.get((svc.get("namespace"), svc.get("name")))
            if base is None:
                raise _WebhookError(f'failed to call webhook: Post "{shown}": dial tcp: lookup {sni}: no such host')
            target = base.rstrip("/") + svc.get("path", "")
        u = urlsplit(target)
        path = (u.path or "/") + ("?" + u.query + "&" if u.query else "?") + f"timeout={timeout}s"
        shown += ("&" if "?" in shown else "?") + f"timeout={timeout}s"
        try:
            ctx = ssl.create_default_context()
            if cc.get("caBundle"):
                ctx = ssl.create_default_context(cadata=base64.b64decode(cc["caBundle"]).decode())
            conn = http.client.HTTPConnection(u.hostname or "", u.port or 443, timeout=timeout)
            try:
                raw = socket.create_connection((u.hostname, u.port or 443), timeout=timeout)
                conn.sock = ctx.wrap_socket(raw, server_hostname=sni)
                conn.request("POST", path, json.dumps(review).encode(),
                             {"Content-Type": "application/json", "Accept": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise _WebhookError(f'failed to call webhook: Post "{shown}": {e}') from e
        if resp.status != 200:
            raise _WebhookError(f"the server responded with status code {resp.status}: {data[:200]!r}")
        try:
            body = json.loads(data)
            result = body["response"]
            assert (body.get("apiVersion"), body.get("kind")) == ("admission.k8s.io/v1", "AdmissionReview")
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            raise _WebhookError(f"received invalid webhook response: {data[:200]!r}") from e
        if result.get("uid") != review["request"]["uid"]:
            raise _WebhookError(f'expected response.uid="{review["request"]["uid"]}", got "{result.get("uid")}"')
        return result

    # ---- discovery and openapi ----------------------------------------------------------------

    def _static(self, path: str, accept: str) -> tuple[int, Any, str] | None:
        groups: dict[str, list[Resource]] = {}
        for r in self.resources:
            groups.setdefault(r.api_version, []).append(r)
        named = [gv for gv in groups if "/" in gv]
        if path == "/version":
            return 200, VERSION, ""
        if path in ("/healthz", "/readyz", "/livez"):
            return 200, b"ok", "text/plain"
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}, ""
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1",
                         "groups": [self._group(gv) for gv in named]}, ""
        if path.startswith("/apis/") and path.count("/") == 2 and any(gv.startswith(path[6:] + "/") for gv in named):
            return 200, {"kind": "APIGroup", "apiVersion": "v1",
                         **self._group(next(gv for gv in named if gv.startswith(path[6:] + "/")))}, ""
        gv = path.removeprefix("/apis/") if path.startswith("/apis/") else path.removeprefix("/api/")
        if path.startswith(("/api/", "/apis/")) and gv in groups and ("/" in gv) == path.startswith("/apis/"):
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                         "resources": [e for r in groups[gv] for e in self._api_resources(r)]}, ""
        if path == "/openapi/v2":
            if "protobuf" in accept:  # an openapi_v2.Document{swagger: "2.0"}: no schemas to check
                return 200, b"\n\x032.0", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
            return 200, {"swagger": "2.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
                         "paths": {}, "definitions": {}}, ""
        if path == "/openapi/v3":
            return 200, {"paths": {("api/" if "/" not in g else "apis/") + g: {
                "serverRelativeURL": f"/openapi/v3/{'api/' if '/' not in g else 'apis/'}{g}?hash=0"}
                for g in groups}}, ""
        gv = path.removeprefix("/openapi/v3/apis/").removeprefix("/openapi/v3/api/")
        if path.startswith("/openapi/v3/") and gv in groups:
            return 200, self._openapi_v3(groups[gv]), ""
        return None

    @staticmethod
    def _group(gv: str) -> Obj:
        ver = {"groupVersion": gv, "version": gv.split("/")[1]}
        return {"name": gv.split("/")[0], "versions": [ver], "preferredVersion": ver}

    @staticmethod
    def _api_resources(r: Resource) -> list[Obj]:
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        main = {"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                "kind": r.kind, "verbs": verbs}
        if r.short_names:
            main["shortNames"] = list(r.short_names)
        if r.group == DVP:
            main["categories"] = ["virtualization"]
        subs = [{"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                 "kind": r.kind, "verbs": ["get", "patch", "update"]}] if r.status else []
        return [main, *subs]

    @staticmethod
    def _openapi_v3(resources: list[Resource]) -> Obj:
        """Just enough for kubectl: PATCH operations that advertise the fieldValidation parameter."""
        paths = {}
        for r in resources:
            base = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
            item = f"{base}/namespaces/{{namespace}}/{r.plural}/{{name}}" if r.namespaced else f"{base}/{r.plural}/{{name}}"
            paths[item] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}}
                               for p in ("dryRun", "fieldManager", "fieldValidation", "force")],
                "requestBody": {"content": {t: {"schema": {"type": "object"}} for t in (
                    "application/json-patch+json", "application/merge-patch+json",
                    "application/apply-patch+yaml")}},
                "responses": {"200": {"description": "OK"}}}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
                "paths": paths, "components": {"schemas": {}}}
