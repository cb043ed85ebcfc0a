"""The control loop: watches feed keys into a work queue, workers reconcile them.

Keys are (kind, namespace, name) of VirtualDiskSnapshots, VirtualMachineSnapshots and
VirtualMachineRestores. Watches of those kinds, and of the kinds whose changes matter
to them, map every event to keys: a VolumeSnapshot to its owning VDS, a VDS also to its
owning VMS, a VMS to the restores that name it. A watch lists first (all keys), then
watches from the list's resourceVersion, and lists again on 410 Gone or any error. A
periodic resync lists the three kinds again and enqueues every object, so nothing
depends on a watch event arriving; waiting reconciles also ask to be looked at again
after `poll_interval`.

Decisions are made from fresh reads, not from the watch: each reconcile GETs what it
needs and builds the engine's InMemoryView from it (reconciler/objects.py ViewReader).
Why: the reconciler writes and then immediately decides from what it wrote, and a watch
cache lags behind its own writes; the "GET before create" rule needs the API server's
answer anyway; and snapshots and restores are rare, so a few GETs per reconcile cost
nothing worth a cache's staleness. The watches only say *when* to look.

Two ways to drive it:
* `start()` / `stop()`: watch threads, a resync thread, N worker threads and, with
  leader election, the elector thread (`snapguard reconcile`);
* `step()` / `run_until_idle()`: list, then drain the queue in the calling thread,
  until a pass writes nothing: deterministic, for tests. A BaseException (a test's
  simulated kill) passes straight through and leaves the cluster as it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cluster.api import ApiError, KubeApi
from policies import kinds
from policies.engine import Engine

from .client import ClusterClient, NotLeader, WriteHook
from .disk_snapshot import DiskSnapshotController
from .leader import LeaderElector
from .machine_snapshot import MachineSnapshotController
from .objects import Context, Controller, JSONObject, meta, owners_of_kind, spec_of
from .queue import ExponentialBackoff, WorkQueue
from .vm_restore import RestoreController

log = logging.getLogger(__name__)

Key = tuple[str, str, str]

PRIMARY_KINDS = (
    kinds.VIRTUAL_MACHINE_RESTORE,
    kinds.VIRTUAL_MACHINE_SNAPSHOT,
    kinds.VIRTUAL_DISK_SNAPSHOT,
)
WATCHED_KINDS = (*PRIMARY_KINDS, kinds.VOLUME_SNAPSHOT)

DEFAULT_RESYNC_PERIOD = 60.0
DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_WATCH_TIMEOUT = 300


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str | None = None,
        engine: Engine | None = None,
        elector: LeaderElector | None = None,
        write_hook: WriteHook | None = None,
        workers: int = 1,
        resync_period: float = DEFAULT_RESYNC_PERIOD,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        watch_timeout: int = DEFAULT_WATCH_TIMEOUT,
        backoff: ExponentialBackoff[Key] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("need at least one worker")
        self.api = api
        self.namespace = namespace
        self.elector = elector
        self.client = ClusterClient(api, may_write=self.may_act, write_hook=write_hook)
        context = Context(self.client, engine or Engine(), poll_interval)
        self.controllers: dict[str, Controller] = {
            kinds.VIRTUAL_DISK_SNAPSHOT: DiskSnapshotController(context),
            kinds.VIRTUAL_MACHINE_SNAPSHOT: MachineSnapshotController(context),
            kinds.VIRTUAL_MACHINE_RESTORE: RestoreController(context),
        }
        self.queue: WorkQueue[Key] = WorkQueue(backoff)
        self.workers = workers
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.errors = 0
        self.reconciles = 0
        # namespace -> restore name -> snapshot name: which restores a VMS event wakes.
        self._restores: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- who may act --------------------------------------------------------------

    def may_act(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    # --- events to keys -----------------------------------------------------------

    def keys_for(self, kind: str, obj: JSONObject, *, deleted: bool = False) -> list[Key]:
        metadata = meta(obj)
        namespace = str(metadata.get("namespace") or "")
        name = str(metadata.get("name") or "")
        if not name:
            return []
        keys: list[Key] = []
        if kind in self.controllers:
            keys.append((kind, namespace, name))
        if kind == kinds.VOLUME_SNAPSHOT:
            keys.extend((kinds.VIRTUAL_DISK_SNAPSHOT, namespace, owner) for owner in owners_of_kind(obj, kinds.VIRTUAL_DISK_SNAPSHOT))
        elif kind == kinds.VIRTUAL_DISK_SNAPSHOT:
            keys.extend(
                (kinds.VIRTUAL_MACHINE_SNAPSHOT, namespace, owner)
                for owner in owners_of_kind(obj, kinds.VIRTUAL_MACHINE_SNAPSHOT)
            )
        elif kind == kinds.VIRTUAL_MACHINE_SNAPSHOT:
            with self._lock:
                restores = self._restores.get(namespace, {})
                keys.extend(
                    (kinds.VIRTUAL_MACHINE_RESTORE, namespace, restore)
                    for restore, snapshot in restores.items()
                    if snapshot == name
                )
        elif kind == kinds.VIRTUAL_MACHINE_RESTORE:
            with self._lock:
                restores = self._restores.setdefault(namespace, {})
                if deleted:
                    restores.pop(name, None)
                else:
                    restores[name] = str(spec_of(obj).get("virtualMachineSnapshotName") or "")
        return keys

    def enqueue(self, kind: str, obj: JSONObject, *, deleted: bool = False) -> None:
        for key in self.keys_for(kind, obj, deleted=deleted):
            self.queue.add(key)

    def resync(self) -> None:
        """List the three kinds and enqueue every object (restores first, so the
        restore index is complete before snapshots are mapped)."""
        for kind in PRIMARY_KINDS:
            for obj in self.client.list(kind, self.namespace):
                self.enqueue(kind, obj)

    # --- one key ------------------------------------------------------------------

    def process(self, key: Key) -> None:
        """Reconcile one key taken from the queue and tell the queue what next."""
        if not self.may_act():
            return  # dropped: becoming leader resyncs everything
        kind, namespace, name = key
        self.reconciles += 1
        try:
            result = self.controllers[kind].reconcile(namespace, name)
        except NotLeader:
            log.info("%s %s/%s: not the leader any more, stopping", kind, namespace, name)
            return
        except ApiError as error:
            self.errors += 1
            if error.conflict:
                log.debug("%s %s/%s: conflict, retrying: %s", kind, namespace, name, error)
            else:
                log.warning("%s %s/%s: API error, retrying: %s", kind, namespace, name, error)
            self.queue.add_rate_limited(key)
            return
        except Exception:
            self.errors += 1
            log.exception("%s %s/%s: reconcile failed, retrying", kind, namespace, name)
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        if result.requeue:
            self.queue.add(key)
        elif result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)

    # --- deterministic driving (tests) --------------------------------------------

    def drain(self) -> int:
        """Process every key that is ready now (not the delayed ones)."""
        count = 0
        while (key := self.queue.get(timeout=0)) is not None:
            try:
                self.process(key)
            finally:
                self.queue.done(key)
            count += 1
        return count

    def step(self) -> int:
        """One pass: list everything, then drain. The number of keys processed."""
        if self.elector is not None:
            self.elector.try_acquire_or_renew()
        if not self.may_act():
            return 0
        self.resync()
        return self.drain()

    def run_until_idle(self, timeout: float = 10.0) -> int:
        """Pass after pass until one writes nothing and fails nothing; the number of
        passes. TimeoutError when it does not settle within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        passes = 0
        while True:
            writes, errors = self.client.writes, self.errors
            self.step()
            passes += 1
            if self.client.writes == writes and self.errors == errors:
                return passes
            if time.monotonic() > deadline:
                raise TimeoutError(f"the reconciler did not settle in {timeout} s ({passes} passes)")

    # --- threads (snapguard reconcile) --------------------------------------------

    def _thread(self, target: Callable[..., Any], *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start(self) -> None:
        self._stop.clear()
        if self.elector is not None:
            self._thread(self.elector.run, self._stop, self._started_leading, self._stopped_leading, name="elector")
        for kind in WATCHED_KINDS:
            self._thread(self._watch, kind, name=f"watch-{kind}")
        self._thread(self._resync_loop, name="resync")
        for index in range(self.workers):
            self._thread(self._work, name=f"worker-{index}")

    def _started_leading(self) -> None:
        log.info("leading: resyncing every object")
        try:
            self.resync()
        except ApiError as error:
            log.warning("resync after becoming leader failed: %s", error)

    def _stopped_leading(self) -> None:
        log.warning("not leading any more: no writes until the lease is held again")

    def stop(self, *, release: bool = True, timeout: float = 5.0) -> None:
        """Stop the workers, the resync and (eventually) the watches; release the
        Lease unless `release` is False (an abrupt stop, as a killed process)."""
        self._stop.set()
        self.queue.shutdown()
        for thread in self._threads:
            if not thread.name.startswith("watch-"):  # a watch ends with its stream
                thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self.elector is not None and release:
            self.elector.release()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _work(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get()
            if key is None:
                return
            try:
                if not self._stop.is_set():
                    self.process(key)
            finally:
                self.queue.done(key)

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.resync_period):
            if self.may_act():
                try:
                    self.resync()
                except ApiError as error:
                    log.warning("periodic resync failed: %s", error)

    def _watch(self, kind: str) -> None:
        """List, then watch from the list's resourceVersion; list again after 410 Gone,
        an ERROR event or a failure (with a growing pause while the API fails)."""
        version = ""
        pause = 0.1
        while not self._stop.is_set():
            try:
                if not version:
                    items, version = self.api.list_all(kind, self.namespace)
                    for item in items:
                        self.enqueue(kind, item)
                for event in self.api.watch(
                    kind, version, namespace=self.namespace, timeout_seconds=self.watch_timeout
                ):
                    if self._stop.is_set():
                        return
                    event_type = event.get("type")
                    obj = event.get("object") or {}
                    if event_type == "ERROR":
                        log.info("watch %s: %s; listing again", kind, obj.get("message") or obj)
                        version = ""
                        break
                    version = str(meta(obj).get("resourceVersion") or version)
                    if event_type != "BOOKMARK":
                        self.enqueue(kind, obj, deleted=event_type == "DELETED")
                pause = 0.1
            except ApiError as error:
                version = ""
                if error.status == 404:
                    # The kind is not served (e.g. no snapshot CRDs): look again later.
                    log.warning("watch %s: not served by the API server; retrying in %s s", kind, self.resync_period)
                    self._stop.wait(self.resync_period)
                    continue
                if not error.gone:
                    log.warning("watch %s: %s; listing again in %.1f s", kind, error, pause)
                    self._stop.wait(pause)
                    pause = min(pause * 2, 30.0)
            except Exception:
                version = ""
                log.exception("watch %s failed; listing again in %.1f s", kind, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 30.0)
