"""A list+watch cache of the cluster: the webhook's live `ClusterView`.

One daemon thread per kind the rules read (`policies.models.MODELS`) does what
client-go's reflector does: a paged list gives the objects and a resourceVersion, a
watch from that version (bookmarks requested) keeps them current, a `410 Gone` (the
version was compacted away) means a fresh list, and a lost connection means a
reconnect from the last version after an exponential backoff with jitter (capped at
30 s, so a restarted API server is not hit by every replica at once). Lookups never
wait on the API server for a kind the cache holds: they are dictionary reads.

Storage: each kind lives in its own `InMemoryView` (the engine's, so the indexes the
rules use are the same ones), and the cache answers `ClusterView` by delegating to the
view of the model's kind. A relist builds a new view for the kind off to the side and
swaps it in with one assignment, so objects deleted while the watch was away disappear
and a reader never sees half a relist.

Threads and consistency. Writers (one watch thread per kind, plus relists of that same
thread) hold `_lock`; readers (the webhook's request threads) take no lock. That is
sound on CPython because the objects are frozen pydantic models, replaced whole and
never mutated, and every step a reader takes is a single dictionary operation
(`dict.get`, `list(d.values())`) that runs in C under the GIL without a switch in the
middle: a lookup returns either the old or the new version of an object, never a mix.
What one dictionary step cannot give is agreement between an object table and an index
during an update, so `InMemoryView.put` writes the new index entries before it drops the
old ones: an index lookup during an update sees the old or the new object, never
neither. Consistency is per lookup: two lookups of one decision may straddle an event,
as they may straddle the API server's own writes. (Free-threaded CPython would need
reader locks; it is not a target.)

Secrets are many and sensitive, so only the VirtualMachineSnapshot Secrets are watched
(field selector on their type). Any other Secret a rule asks for (a VM's provisioning
Secret) is read by name with a GET when the lookup misses, and the answer, found or
not, is kept `secret_ttl` seconds (5 s). Secrets are never listed unfiltered.

A kind the server does not serve (404 on the list: VirtualMachineRestore from platform
v1.9, VolumeSnapshot without the snapshot CRDs) or may not be listed (403) is not
*given*, so rules that need it say `unknown`; it is listed again every
`unserved_retry` seconds (5 minutes).

Readiness: not ready until every kind's first list has completed (a not-served kind
counts as listed). After that, not ready while a kind's watch is disconnected and its
last contact (event, bookmark or list page) is older than `staleness_bound` (60 s).
A connected but quiet watch is fine: kube-apiserver sends bookmarks only about once a
minute on a quiet watch. Lookups keep answering from the last state whatever
readiness says: readiness only tells the kubelet and the API server's endpoints.

`staleness()` (seconds since each kind's last contact) feeds the metric
`snapguard_watch_staleness_seconds` through `on_staleness`, called every
`report_interval` from a thread of its own: a scrape lands in any worker, so each
worker publishes its own value rather than computing it on request.

Must not decide anything (that is `policies/`) nor know about HTTP serving (that is
`webhook/`): it satisfies the webhook's view-source protocol (`view()`, `ready()`,
`start()`) structurally, without importing it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from urllib3.exceptions import HTTPError as Urllib3Error

from policies import kinds
from policies.models import (
    MODELS,
    KubeObject,
    Secret,
    VirtualDisk,
    VirtualMachineBlockDeviceAttachment,
    VirtualMachineIPAddress,
    VirtualMachineMACAddress,
    VirtualMachineOperation,
    VirtualMachineSnapshotOperation,
    VolumeSnapshotClass,
)
from policies.view import ClusterView, InMemoryView

from .api import ApiError, KubeApi, resource_path

T = TypeVar("T", bound=KubeObject)

log = logging.getLogger("snapguard.watchcache")

# Readiness turns false when a kind has been disconnected longer than this.
DEFAULT_STALENESS_BOUND = 60.0
# Objects per list page: what kubectl and client-go's pager ask for.
PAGE_SIZE = 500
# Reconnect backoff: base * 2**attempt, half of it jittered, capped. Equal jitter keeps a
# floor (no hot loop against a refusing server) while spreading the replicas' retries.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# A kind the server does not serve is asked about again this often.
UNSERVED_RETRY = 300.0
# Positive and negative answers of on-demand Secret reads are kept this long.
SECRET_TTL = 5.0
# An on-demand Secret read happens inside an admission request, which the API server
# abandons after 10 s (the webhook timeout); leave room for the decision itself.
SECRET_GET_TIMEOUT = 3.0
SECRET_CACHE_SIZE = 1024
# A watch asks the server to end it after 5-10 minutes (client-go's range), so a
# half-open connection is noticed and load spreads; reads time out a little after that.
WATCH_TIMEOUT_RANGE = (300, 600)
WATCH_READ_GRACE = 30.0
# Label selectors would go here; field selectors restrict what is cached per kind.
FIELD_SELECTORS = {kinds.SECRET: f"type={kinds.SNAPSHOT_SECRET_TYPE}"}

StalenessListener = Callable[[Mapping[str, float]], None]


class SecretLookupError(Exception):
    """An on-demand Secret read failed (not a 404): the rule asking reports an error."""


class _Expired(Exception):
    """The watch's resourceVersion is gone (410): list again."""


class _KindStore(InMemoryView):
    """The view of one kind (InMemoryView.put keeps its indexes whole for lock-free
    readers)."""


@dataclass
class _KindState:
    """What the cache knows about one kind; written only by the kind's thread."""

    kind: str
    model: type[KubeObject]
    field_selector: str | None
    store: _KindStore = field(default_factory=_KindStore)
    resource_version: str | None = None  # None: (re)list before watching
    listed: bool = False  # the first list completed (or showed the kind is not served)
    served: bool = True
    connected: bool = False  # a watch stream is open
    last_contact: float = 0.0  # monotonic time of the last list page, event or bookmark
    last_error: str = ""
    failing: bool = False  # the last attempt failed; logged once until it recovers
    thread: threading.Thread | None = None
    response: Any = None  # the open watch stream, so stop() can cut it

    @property
    def given(self) -> bool:
        return self.listed and self.served


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP,
                  rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (0-based): between half and all of
    min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def _object_key(raw: Any) -> tuple[str, str]:
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _shown(kind: str, namespace: str, name: str) -> str:
    return f'{kind} "{namespace}/{name}"' if namespace else f'{kind} "{name}"'


class WatchCache:
    """A `ClusterView` kept current by list+watch, one thread per kind.

    Also a view source for the webhook: `view()` is the cache itself, `ready()` says
    whether it is synced, `start()` (after gunicorn forks: threads do not survive a
    fork) starts the watches. `stop()` ends them."""

    def __init__(
        self,
        api: KubeApi,
        *,
        kind_names: Iterable[str] | None = None,
        staleness_bound: float = DEFAULT_STALENESS_BOUND,
        page_size: int = PAGE_SIZE,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        unserved_retry: float = UNSERVED_RETRY,
        secret_ttl: float = SECRET_TTL,
        secret_get_timeout: float = SECRET_GET_TIMEOUT,
        watch_timeout_range: tuple[int, int] = WATCH_TIMEOUT_RANGE,
        start_wait: float = 0.0,
        on_staleness: StalenessListener | None = None,
        report_interval: float = 1.0,
    ) -> None:
        self._api = api
        # The same connection pool, a short deadline: this read happens inside a request.
        self._secret_api = KubeApi(api.api_client, timeout=secret_get_timeout)
        self.staleness_bound = staleness_bound
        self._page_size = page_size
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._unserved_retry = unserved_retry
        self._secret_ttl = secret_ttl
        self._watch_timeout_range = watch_timeout_range
        self._start_wait = start_wait
        self._on_staleness = on_staleness
        self._report_interval = report_interval
        self._lock = threading.RLock()  # writers only; readers never take it
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self._secrets: dict[tuple[str, str], tuple[float, Secret | None]] = {}
        self._secret_lock = threading.Lock()
        self._states: dict[str, _KindState] = {
            kind: _KindState(kind, MODELS[kind], FIELD_SELECTORS.get(kind))
            for kind in (kind_names if kind_names is not None else MODELS)
        }
        self._tune_connection_pool(len(self._states) + 8)

    def _tune_connection_pool(self, size: int) -> None:
        """The cache owns its client's connection pool settings:

        * every watch holds a pooled connection for minutes, and the client's default
          pool (5 per CPU) would discard and re-open connections past it, with a
          warning each time;
        * urllib3's own retries (3, each logged) would stack on the cache's backoff.

        Pools are created lazily, so changing the settings before the first call is
        enough."""
        pool_manager = getattr(getattr(self._api.api_client, "rest_client", None), "pool_manager", None)
        settings = getattr(pool_manager, "connection_pool_kw", None)
        if not isinstance(settings, dict):
            return
        if int(settings.get("maxsize") or 0) < size:
            settings["maxsize"] = size
        settings["retries"] = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start one watch thread per kind (once); with `start_wait`, wait up to that
        many seconds for the first lists so a new worker answers from a synced view."""
        if self._threads:
            return
        self._stopping.clear()
        self._started_at = time.monotonic()
        for state in self._states.values():
            state.last_contact = self._started_at
            thread = threading.Thread(
                target=self._run, args=(state,), name=f"snapguard-watch-{state.kind}", daemon=True
            )
            state.thread = thread
            self._threads.append(thread)
        if self._on_staleness is not None:
            self._threads.append(
                threading.Thread(target=self._report, name="snapguard-watch-staleness", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        if self._start_wait > 0:
            self.wait_synced(self._start_wait)

    def stop(self, timeout: float = 5.0) -> None:
        """End the threads: wake their waits and cut the open watch streams."""
        self._stopping.set()
        for state in self._states.values():
            response = state.response
            if response is not None:
                with contextlib.suppress(Exception):  # already released or closed: fine
                    response.shutdown()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    @property
    def threads(self) -> Sequence[threading.Thread]:
        return tuple(self._threads)

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    # ------------------------------------------------------------ view source

    def view(self) -> ClusterView:
        return self

    def ready(self) -> tuple[bool, str]:
        states = list(self._states.values())
        unlisted = [state for state in states if not state.listed]
        if unlisted:
            reason = (
                f"watch cache syncing: {', '.join(state.kind for state in unlisted)} not listed yet "
                f"({len(states) - len(unlisted)} of {len(states)} kinds listed)"
            )
            errors = [f"{state.kind}: {state.last_error}" for state in unlisted if state.last_error]
            if errors:
                reason += f"; last error: {errors[0]}"
            return False, reason
        now = time.monotonic()
        stale = [
            (state, now - state.last_contact)
            for state in states
            if state.served and not state.connected and now - state.last_contact > self.staleness_bound
        ]
        if stale:
            described = ", ".join(
                f"{state.kind} for {age:.0f} s" + (f" ({state.last_error})" if state.last_error else "")
                for state, age in stale
            )
            return False, (
                f"watch cache disconnected longer than {self.staleness_bound:g} s: {described}; "
                "answering from the last state"
            )
        total = sum(self.counts().values())
        reason = f"watch cache synced: {total} objects in {sum(s.served for s in states)} kinds"
        unserved = [state.kind for state in states if not state.served]
        if unserved:
            reason += f"; not served (rules needing them say unknown): {', '.join(unserved)}"
        return True, reason

    def staleness(self) -> dict[str, float]:
        """Seconds since the last event, bookmark or list page, per served kind (before
        its first list: since the cache started)."""
        now = time.monotonic()
        return {
            state.kind: max(0.0, now - state.last_contact)
            for state in self._states.values()
            if state.served
        }

    @property
    def watching(self) -> frozenset[str]:
        """The kinds whose watch stream is open right now."""
        return frozenset(kind for kind, state in self._states.items() if state.connected)

    @property
    def resource_versions(self) -> dict[str, str]:
        """The resourceVersion each kind's watch resumes from ("" before its list)."""
        return {kind: state.resource_version or "" for kind, state in self._states.items()}

    # ------------------------------------------------------------ ClusterView

    def has_kind(self, kind: str) -> bool:
        state = self._states.get(kind)
        return state is not None and state.given

    def get(self, model: type[T], namespace: str, name: str) -> T | None:
        state = self._states.get(model.KIND)
        if state is None:
            return None
        found = state.store.get(model, namespace, name)
        if found is None and model.KIND == kinds.SECRET:
            return cast("T | None", self._secret_by_name(namespace, name))
        return found

    def list(self, model: type[T], namespace: str | None = None) -> Iterable[T]:
        """Every cached object of the kind; for Secrets, the snapshot Secrets only."""
        state = self._states.get(model.KIND)
        return state.store.list(model, namespace) if state is not None else ()

    def _store(self, kind: str) -> InMemoryView:
        state = self._states.get(kind)
        return state.store if state is not None else _EMPTY

    def ip_addresses_holding(self, namespace: str, address: str) -> Sequence[VirtualMachineIPAddress]:
        return self._store(kinds.VIRTUAL_MACHINE_IP_ADDRESS).ip_addresses_holding(namespace, address)

    def mac_addresses_holding(self, namespace: str, address: str) -> Sequence[VirtualMachineMACAddress]:
        return self._store(kinds.VIRTUAL_MACHINE_MAC_ADDRESS).mac_addresses_holding(namespace, address)

    def disks_attached_to(self, namespace: str, vm_name: str) -> Sequence[VirtualDisk]:
        return self._store(kinds.VIRTUAL_DISK).disks_attached_to(namespace, vm_name)

    def attachments_of(self, namespace: str, vm_name: str) -> Sequence[VirtualMachineBlockDeviceAttachment]:
        return self._store(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT).attachments_of(namespace, vm_name)

    def snapshot_classes_for_driver(self, driver: str) -> Sequence[VolumeSnapshotClass]:
        return self._store(kinds.VOLUME_SNAPSHOT_CLASS).snapshot_classes_for_driver(driver)

    def unfinished_operations_of_vm(self, namespace: str, vm_name: str) -> Sequence[VirtualMachineOperation]:
        return self._store(kinds.VIRTUAL_MACHINE_OPERATION).unfinished_operations_of_vm(namespace, vm_name)

    def unfinished_operations_of_snapshot(
        self, namespace: str, snapshot_name: str
    ) -> Sequence[VirtualMachineSnapshotOperation]:
        return self._store(kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION).unfinished_operations_of_snapshot(
            namespace, snapshot_name
        )

    def counts(self) -> dict[str, int]:
        # InMemoryView.counts iterates dictionaries in Python: not safe against a writer,
        # so it runs under the writers' lock (metrics and readiness only, never per request).
        with self._lock:
            return {
                state.kind: state.store.counts().get(state.kind, 0)
                for state in self._states.values()
                if state.given
            }

    # ------------------------------------------------------- on-demand Secrets

    def _secret_by_name(self, namespace: str, name: str) -> Secret | None:
        key = (namespace, name)
        now = time.monotonic()
        cached = self._secrets.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        raw: dict[str, Any] | None = None
        for attempt in range(2):
            try:
                raw = self._secret_api.get(kinds.SECRET, namespace, name)
                break
            except ApiError as error:
                # One retry at the connection level: the pool's urllib3 retries are off
                # (see _tune_connection_pool) and a kept-alive connection the server
                # just closed must not turn into a rule error.
                if error.status == 0 and attempt == 0:
                    continue
                raise SecretLookupError(
                    f'Secret "{namespace}/{name}" could not be read from the API server: {error}'
                ) from None
        secret: Secret | None = None
        if raw is not None:
            try:
                secret = Secret.model_validate(raw)
            except ValidationError as error:
                log.warning("skipping %s: %s", _shown(kinds.SECRET, namespace, name), _first_error(error))
        with self._secret_lock:
            if len(self._secrets) >= SECRET_CACHE_SIZE:
                expired = [k for k, (until, _) in self._secrets.items() if until <= now]
                for stale in expired or list(self._secrets):
                    del self._secrets[stale]
            self._secrets[key] = (time.monotonic() + self._secret_ttl, secret)
        return secret

    # ------------------------------------------------------------ kind threads

    def _run(self, state: _KindState) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                if state.resource_version is None:
                    self._relist(state)
                    attempt = 0
                    if not state.served:
                        self._stopping.wait(self._unserved_retry)
                        continue
                if self._follow(state):
                    attempt = 0
                    continue
                # The stream ended at once without a single event: do not spin on a
                # server that accepts watches and closes them.
            except _Expired:
                state.resource_version = None
                continue
            except ApiError as error:
                if self._stopping.is_set():
                    break
                if error.gone:
                    state.resource_version = None
                    continue
                if error.not_found or error.status == 403:
                    # The kind went away (CRD deleted) or became forbidden: the list says.
                    state.resource_version = None
                self._failed(state, str(error))
            except Exception as error:  # a bug: logged, retried, never a dead thread
                if self._stopping.is_set():
                    break
                log.exception("watch of %s failed unexpectedly", state.kind)
                self._failed(state, f"{type(error).__name__}: {error}")
            self._stopping.wait(backoff_delay(attempt, self._backoff_base, self._backoff_cap))
            attempt += 1

    def _failed(self, state: _KindState, reason: str) -> None:
        state.last_error = " ".join(reason.split())
        if not state.failing:
            log.warning("watch of %s: %s; retrying with backoff", state.kind, state.last_error)
        state.failing = True

    def _contact(self, state: _KindState) -> None:
        state.last_contact = time.monotonic()
        if state.failing:
            log.warning("watch of %s recovered", state.kind)
        state.failing = False
        state.last_error = ""

    def _relist(self, state: _KindState) -> None:
        """List the kind in pages into a new store and swap it in (atomic for readers)."""
        store = _KindStore()
        version = ""
        token: str | None = None
        try:
            while True:
                page = self._api.list_page(
                    state.kind,
                    limit=self._page_size,
                    continue_token=token,
                    field_selector=state.field_selector,
                )
                metadata = page.get("metadata") or {}
                version = version or str(metadata.get("resourceVersion") or "")
                for raw in page.get("items") or []:
                    obj = self._parse(state, raw)
                    if obj is not None:
                        store.put(obj)
                state.last_contact = time.monotonic()
                token = metadata.get("continue") or None
                if not token or self._stopping.is_set():
                    break
        except ApiError as error:
            if error.gone:  # the continue token expired mid-list: start over
                raise _Expired() from None
            if not (error.not_found or error.status == 403):
                raise
            with self._lock:
                state.store = _KindStore()
                state.served = False
                state.resource_version = None
                state.listed = True
            what = "is not served by the API server" if error.not_found else "may not be listed (403)"
            log.warning(
                "%s %s; rules that need it say unknown; asking again in %g s",
                state.kind, what, self._unserved_retry,
            )
            self._contact(state)
            self._check_synced()
            return
        with self._lock:
            state.store = store
            state.served = True
            state.resource_version = version
            state.listed = True
        self._contact(state)
        self._check_synced()

    def _check_synced(self) -> None:
        if all(state.listed for state in self._states.values()):
            self._synced.set()

    def _follow(self, state: _KindState) -> bool:
        """Apply watch events until the stream ends; True when at least one arrived."""
        received = False
        with contextlib.closing(self._watch_stream(state)) as events:
            for event in events:
                received = True
                self._apply(state, event)
                if self._stopping.is_set():
                    break
        return received

    def _watch_stream(self, state: _KindState) -> Generator[dict[str, Any], None, None]:
        """The events of one watch request. Like `KubeApi.watch`, but the open response
        is kept on the state so `stop()` can shut its socket down from another thread."""
        timeout_seconds = random.randint(*self._watch_timeout_range)
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", state.resource_version or ""),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        if state.field_selector:
            query.append(("fieldSelector", state.field_selector))
        response = self._api._call(
            "GET", resource_path(state.kind), query=query, stream=True,
            timeout=timeout_seconds + WATCH_READ_GRACE,
        )
        state.response = response
        state.connected = True
        clean = False
        try:
            buffer = b""
            for chunk in response.stream(amt=65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
            clean = True
        except (Urllib3Error, OSError, ValueError) as error:
            if self._stopping.is_set():
                return
            raise ApiError(0, "Unreachable", f"watch stream broken: {error}") from None
        finally:
            state.connected = False
            state.response = None
            if not clean:  # never hand a half-read stream back to the pool
                with contextlib.suppress(Exception):
                    response.close()
            with contextlib.suppress(Exception):
                response.release_conn()

    def _apply(self, state: _KindState, event: dict[str, Any]) -> None:
        kind_of_event = event.get("type")
        raw = event.get("object")
        if kind_of_event == "ERROR":
            status = raw if isinstance(raw, dict) else {}
            code = int(status.get("code") or 0)
            if code == 410:
                raise _Expired()
            raise ApiError(code, str(status.get("reason") or ""), str(status.get("message") or ""))
        metadata = raw.get("metadata") if isinstance(raw, dict) else None
        version = str(metadata.get("resourceVersion") or "") if isinstance(metadata, dict) else ""
        if kind_of_event == "BOOKMARK":
            pass
        elif kind_of_event in ("ADDED", "MODIFIED"):
            obj = self._parse(state, raw)
            with self._lock:
                if obj is not None:
                    state.store.put(obj)
                else:  # never answer with a version the server no longer has
                    namespace, name = _object_key(raw)
                    state.store.remove(state.kind, namespace, name)
        elif kind_of_event == "DELETED":
            namespace, name = _object_key(raw)
            with self._lock:
                state.store.remove(state.kind, namespace, name)
        else:
            log.warning("watch of %s: ignoring an event of type %r", state.kind, kind_of_event)
        if version:
            state.resource_version = version
        self._contact(state)

    def _parse(self, state: _KindState, raw: Any) -> KubeObject | None:
        """The object's model, or None (one log line) when it does not parse."""
        try:
            return state.model.model_validate(raw)
        except (ValidationError, TypeError, ValueError) as error:
            namespace, name = _object_key(raw)
            log.warning("skipping %s: %s", _shown(state.kind, namespace, name), _first_error(error))
            return None

    # ------------------------------------------------------------ staleness

    def _report(self) -> None:
        listener = self._on_staleness
        while listener is not None and not self._stopping.is_set():
            try:
                listener(self.staleness())
            except Exception:  # a metrics problem must not stop the reports
                log.exception("reporting watch staleness failed")
            self._stopping.wait(self._report_interval)


_EMPTY = InMemoryView()


def _first_error(error: Exception) -> str:
    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    return " ".join(str(error).split())
