"""A level-based work queue, shaped like client-go's `workqueue` (rate-limiting, delaying).

Keys name objects, never events: adding a key that is already waiting does nothing
(dedup), so ten watch events for one object cost one reconcile of its latest state.
A key handed to a worker is in `processing`; adding it again meanwhile only marks it
`dirty`, and `done` puts it back in line, so no key is ever reconciled by two workers
at once and no change is lost while one is at work.

`add_after` holds a key back until a moment (requeue-after, and the per-key
exponential backoff of `add_rate_limited`); no extra thread is needed: `get` waits on
the earliest due time. `shutdown` wakes every waiter; `get` then returns None.

The queue knows nothing about Kubernetes: keys are any hashable value.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# client-go's DefaultItemBasedRateLimiter: 5 ms doubling up to 1000 s. A reconciler
# whose API server is down for a minute therefore retries every key a few times a
# minute at most, and a flaky write is retried almost at once.
DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 1000.0


class ExponentialBackoff(Generic[K]):
    """Per-key exponential backoff: the n-th consecutive failure of a key waits
    base * 2**n seconds (capped at `max_delay`); `forget` starts the key over."""

    def __init__(self, base_delay: float = DEFAULT_BASE_DELAY, max_delay: float = DEFAULT_MAX_DELAY) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[K, int] = {}
        self._lock = threading.Lock()

    def when(self, key: K) -> float:
        with self._lock:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        # 2**failures overflows a float long after it passes any sane max_delay.
        delay: float = self.base_delay * 2.0 ** min(failures, 64)
        return min(self.max_delay, delay)

    def failures(self, key: K) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        with self._lock:
            self._failures.pop(key, None)


class WorkQueue(Generic[K]):
    """Dedup, one-worker-per-key, delayed and rate-limited adds, shutdown. Thread-safe."""

    def __init__(
        self,
        backoff: ExponentialBackoff[K] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff: ExponentialBackoff[K] = backoff or ExponentialBackoff()
        self._clock = clock
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        # Delayed keys: a heap of (due, sequence, key) plus the earliest due per key.
        # A later add_after of a waiting key with an earlier due time wins (client-go).
        self._waiting: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._sequence = itertools.count()
        self._shutting_down = False
        self._cond = threading.Condition()

    # --- adding -------------------------------------------------------------------

    def add(self, key: K) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: K) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` once `delay` seconds have passed (at once when delay <= 0)."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutting_down:
                return
            due = self._clock() + delay
            current = self._due.get(key)
            if current is not None and current <= due:
                return
            self._due[key] = due
            heapq.heappush(self._waiting, (due, next(self._sequence), key))
            self._cond.notify()

    def add_rate_limited(self, key: K) -> None:
        """Add `key` after its backoff delay (each call doubles the next delay)."""
        self.add_after(key, self.backoff.when(key))

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts from the base delay again."""
        self.backoff.forget(key)

    def num_requeues(self, key: K) -> int:
        return self.backoff.failures(key)

    # --- taking -------------------------------------------------------------------

    def _promote_due_locked(self) -> float | None:
        """Move due delayed keys into the queue; the wait until the next due one."""
        now = self._clock()
        while self._waiting:
            due, _, key = self._waiting[0]
            if self._due.get(key) != due:  # superseded by an earlier add_after
                heapq.heappop(self._waiting)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._waiting)
            del self._due[key]
            self._add_locked(key)
        return None

    def get(self, timeout: float | None = None) -> K | None:
        """The next key (now in processing; call `done` with it), or None on shutdown
        or when `timeout` seconds pass without one (timeout 0: do not wait)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                next_due = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if self._shutting_down:
                    return None
                wait = next_due
                if deadline is not None:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        """The worker finished `key`; if it was added meanwhile it goes back in line."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    # --- state --------------------------------------------------------------------

    def shutdown(self) -> None:
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be taken (not the delayed ones, not those in processing)."""
        with self._cond:
            return len(self._queue)

    def delayed(self) -> int:
        with self._cond:
            return len(self._due)

    def processing(self) -> int:
        with self._cond:
            return len(self._processing)
