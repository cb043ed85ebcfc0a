"""Leader election over a `coordination.k8s.io/v1` Lease, as client-go's
`leaderelection` does it, so that of several reconciler replicas exactly one writes.

* A candidate takes the Lease when it does not exist, when its holderIdentity is empty
  (released), or when it has not changed for leaseDurationSeconds *as this candidate
  observed it* (local monotonic time since the record last changed: no trust in the
  other replica's clock). Taking it sets holderIdentity, acquireTime, renewTime and
  bumps leaseTransitions; every write carries the read resourceVersion, so of two
  candidates only one wins (the other gets 409).
* The leader renews renewTime every `retry_period`. It counts as leader only while its
  last successful renewal is younger than `renew_deadline` (< lease_duration): it
  stops acting before anyone else may take over, even if the API server is
  unreachable. Seeing another holder on the Lease ends leadership at once.
* `release` (on shutdown) empties holderIdentity so a successor need not wait.

`is_leader` is what the reconciler asks before every write.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from cluster.api import ApiError
from cluster.leases import LeaseApi, micro_time

log = logging.getLogger(__name__)

# client-go's defaults for controllers (controller-runtime: 15 s, 10 s, 2 s).
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0


class LeaderElector:
    def __init__(
        self,
        leases: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.leases = leases
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._lock = threading.Lock()
        self._leader = False
        self._renewed_at = -math.inf
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = -math.inf

    # --- state --------------------------------------------------------------------

    def is_leader(self) -> bool:
        with self._lock:
            return self._leader and self._clock() < self._renewed_at + self.renew_deadline

    def _step_down(self, why: str) -> None:
        with self._lock:
            was = self._leader
            self._leader = False
        if was:
            log.warning("leader election: %s lost lease %s/%s: %s", self.identity, self.namespace, self.name, why)

    def _renewed(self, started: float) -> None:
        with self._lock:
            if not self._leader:
                log.info("leader election: %s acquired lease %s/%s", self.identity, self.namespace, self.name)
            self._leader = True
            # Count from when the request was sent: the server's renewTime is no older.
            self._renewed_at = started

    # --- one attempt --------------------------------------------------------------

    def _spec(self, now: str, previous: dict[str, Any] | None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration)),
            "renewTime": now,
        }
        previous = previous or {}
        if previous.get("holderIdentity") == self.identity:
            spec["acquireTime"] = previous.get("acquireTime") or now
            spec["leaseTransitions"] = int(previous.get("leaseTransitions") or 0)
        else:
            spec["acquireTime"] = now
            transitions = previous.get("leaseTransitions")
            spec["leaseTransitions"] = 0 if transitions is None and not previous else int(transitions or 0) + 1
        return spec

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the Lease; True when this candidate leads."""
        started = self._clock()
        try:
            lease = self.leases.get(self.namespace, self.name)
        except ApiError as error:
            log.warning("leader election: cannot read lease %s/%s: %s", self.namespace, self.name, error)
            return self.is_leader()
        now = micro_time()
        if lease is None:
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(now, None)}
            try:
                self.leases.create(body)
            except ApiError as error:
                if not error.conflict:
                    log.warning("leader election: cannot create lease %s/%s: %s", self.namespace, self.name, error)
                return self.is_leader()
            self._renewed(started)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseTransitions"))
        with self._lock:
            if record != self._observed:
                self._observed = record
                self._observed_at = started
            observed_at = self._observed_at
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity:
            self._step_down(f'the lease is held by "{holder}"')
            if started < observed_at + duration:
                return False
            log.info("leader election: lease %s/%s of %s expired", self.namespace, self.name, holder)
        lease["spec"] = {**spec, **self._spec(now, spec)}
        try:
            self.leases.replace(lease)
        except ApiError as error:
            if error.conflict:
                # Another candidate wrote first; the next attempt reads who.
                self._step_down("another candidate updated the lease first")
                return False
            log.warning("leader election: cannot update lease %s/%s: %s", self.namespace, self.name, error)
            return self.is_leader()
        self._renewed(started)
        return True

    def release(self) -> bool:
        """Give the Lease up (holderIdentity emptied) if this candidate holds it."""
        with self._lock:
            leading = self._leader
            self._leader = False
        if not leading:
            return False
        try:
            lease = self.leases.get(self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            now = micro_time()
            spec = lease.get("spec") or {}
            lease["spec"] = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            self.leases.replace(lease)
        except ApiError as error:
            log.warning("leader election: cannot release lease %s/%s: %s", self.namespace, self.name, error)
            return False
        log.info("leader election: %s released lease %s/%s", self.identity, self.namespace, self.name)
        return True

    # --- the loop -----------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        """Try (as candidate) or renew (as leader) every retry_period until `stop`;
        call the callbacks on each change of leadership."""
        leading = False
        while not stop.is_set():
            self.try_acquire_or_renew()
            now_leading = self.is_leader()
            if now_leading and not leading and on_started_leading is not None:
                on_started_leading()
            if leading and not now_leading and on_stopped_leading is not None:
                on_stopped_leading()
            leading = now_leading
            stop.wait(self.retry_period)
        if leading and on_stopped_leading is not None:
            on_stopped_leading()
