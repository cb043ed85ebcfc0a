"""The webhook's Prometheus metrics, correct under several gunicorn workers.

Each worker is a separate process, so the counters live in prometheus-client's
multi-process mode: every process writes its values to mmap'ed files in
`PROMETHEUS_MULTIPROC_DIR`, and `/metrics` (answered by whichever worker the scrape
lands on) merges the files of all processes. `snapguard serve` creates that directory
and empties it at start (stale files of an earlier run would add old counts); the
server's `child_exit` hook marks a dead worker so its live gauges disappear.

Gauges use `livemostrecent`: the certificate expiry and the view's object counts are
observations of one shared truth, not per-process quantities, so summing them across
workers would be wrong, `max` would keep showing a certificate that was rotated to one
expiring earlier, and `all` would export one series per pid. The most recent value
written by a live process is the current truth; a dead worker's stale value is dropped.

Hot path: a request only adds to in-memory tallies; a background thread per worker
moves them into the (mmap'ed) metric values once a second and before every scrape, so
a decision costs a few dictionary operations instead of a dozen locked file writes.
Nothing here decides anything or logs.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import glob
import os
import tempfile
import threading
import time
import weakref
from collections import Counter as Counter_
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from policies.catalogue import Action, Outcome
from policies.engine import RuleResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Up to 10 s, the API server's default webhook timeout: past it the answer is lost.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def prepare_multiprocess_dir(path: str | None = None) -> tuple[str, bool]:
    """The directory for multi-process metrics, emptied of an earlier run's files.
    Without `path`, a new temporary directory (the caller removes it; `created` True)."""
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        return path, False
    return tempfile.mkdtemp(prefix="snapguard-metrics-"), True


def enable_multiprocess(path: str) -> None:
    """Switch this process to multi-process metric values in `path`.

    prometheus-client picks its value class from the environment when it is first
    imported; `snapguard serve` sets the variable before importing the webhook, and
    this also covers an earlier import (the class is looked up when a metric is made).
    """
    os.environ[MULTIPROC_ENV] = path
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def mark_worker_dead(pid: int, path: str) -> None:
    """gunicorn `child_exit`: drop the live gauges of a worker that exited."""
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def rule_result_label(result: RuleResult) -> str:
    """pass, deny, warn, audit (a rule that fired, by its action), unknown, error, off."""
    if result.outcome is Outcome.FAIL:
        return result.action.value
    if result.outcome is Outcome.SKIP:
        return Action.OFF.value
    return result.outcome.value


class WebhookMetrics:
    """The metric families of one app.

    The hot path only adds to in-memory tallies under a lock (a few dictionary
    operations); the tallies reach the metric values (mmap writes in multi-process
    mode, eleven of them for a typical decision) in `flush`, run by a background thread
    of each worker every `FLUSH_INTERVAL`, before every exposition and at process exit.
    A scrape can therefore miss at most the last second of another worker's requests,
    which Prometheus counters tolerate (scrape intervals are 10 s or more).
    """

    FLUSH_INTERVAL = 1.0

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir:
            enable_multiprocess(multiprocess_dir)
        self.multiprocess_dir = multiprocess_dir
        # A registry per app: several apps in one process (tests) never collide.
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "snapguard_admission_requests",
            "AdmissionReview requests answered, by kind, operation, decision and dryRun.",
            ["kind", "operation", "decision", "dry_run"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "snapguard_admission_duration_seconds",
            "Time to answer an AdmissionReview, from the parsed body to the encoded answer.",
            ["webhook"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rule_results = Counter(
            "snapguard_rule_results",
            "Rule outcomes: pass, deny/warn/audit (fired, by action), unknown, error, off.",
            ["rule", "result"],
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "snapguard_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate being served, as a Unix timestamp.",
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.view_objects = Gauge(
            "snapguard_view_objects",
            "Objects in the cluster view the rules decide from, by kind.",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.rejected = Counter(
            "snapguard_rejected_requests",
            "Requests answered with an HTTP error before any AdmissionReview was decided "
            "(malformed HTTP, body too large, wrong content type or encoding), by status.",
            ["status"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._pending_requests: Counter_[tuple[str, str, str, str]] = Counter_()
        self._pending_rules: Counter_[tuple[str, str]] = Counter_()
        # webhook -> [count per bucket..., sum of seconds]
        self._pending_durations: dict[str, list[float]] = {}
        self._flusher_pid = 0

    def observe_request(
        self,
        webhook: str,
        kind: str,
        operation: str,
        decision: str,
        dry_run: bool,
        seconds: float,
        results: Iterable[RuleResult] = (),
    ) -> None:
        bucket = bisect.bisect_left(DURATION_BUCKETS, seconds)  # le: seconds <= bound
        rules = [(result.rule, rule_result_label(result)) for result in results]
        with self._lock:
            self._pending_requests[(kind, operation, decision, "true" if dry_run else "false")] += 1
            self._pending_rules.update(rules)
            tally = self._pending_durations.get(webhook)
            if tally is None:
                tally = self._pending_durations[webhook] = [0.0] * (len(DURATION_BUCKETS) + 2)
            tally[bucket] += 1
            tally[-1] += seconds
        if self._flusher_pid != os.getpid():
            self._start_flusher()

    def observe_rejected(self, status: int) -> None:
        """A refused request: rare, counted at once (no tally)."""
        self.rejected.labels(str(status)).inc()

    def flush(self) -> None:
        """Move the tallies into the metric values."""
        with self._lock:
            requests, self._pending_requests = self._pending_requests, Counter_()
            rules, self._pending_rules = self._pending_rules, Counter_()
            durations, self._pending_durations = self._pending_durations, {}
        for labels, count in requests.items():
            self.requests.labels(*labels).inc(count)
        for rule_labels, count in rules.items():
            self.rule_results.labels(*rule_labels).inc(count)
        for webhook, tally in durations.items():
            _add_to_histogram(self.duration.labels(webhook), tally)

    def _start_flusher(self) -> None:
        # Once per process, after gunicorn's fork (threads do not survive a fork).
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        # Weak references: an app that is gone (tests make many) stops its thread.
        reference = weakref.ref(self)
        thread = threading.Thread(
            target=_flush_forever, args=(reference,), name="metrics-flush", daemon=True
        )
        thread.start()
        atexit.register(_flush_if_alive, reference)

    def set_certificate_expiry(self, timestamp: float) -> None:
        self.certificate_expiry.set(timestamp)

    def set_view_counts(self, counts: dict[str, int]) -> None:
        for kind, count in counts.items():
            self.view_objects.labels(kind).set(count)

    def render(self) -> tuple[bytes, str]:
        """The exposition (merged over every worker in multi-process mode)."""
        self.flush()
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _flush_if_alive(reference: weakref.ref[WebhookMetrics]) -> bool:
    metrics = reference()
    if metrics is None:
        return False
    with contextlib.suppress(Exception):  # a full disk must not kill the thread; retry
        metrics.flush()
    return True


def _flush_forever(reference: weakref.ref[WebhookMetrics]) -> None:
    while True:
        time.sleep(WebhookMetrics.FLUSH_INTERVAL)
        if not _flush_if_alive(reference):
            return


def _add_to_histogram(child: Any, tally: list[float]) -> None:
    """Add tallied observations to a histogram child: one write per bucket that got
    any, instead of two per observation. Uses the child's bucket values (stable for
    years in prometheus-client); without them, replays one observation per count at
    the bucket's bound, which keeps counts exact and the sum approximate."""
    buckets, total = tally[: len(DURATION_BUCKETS) + 1], tally[-1]
    values_ = getattr(child, "_buckets", None)
    value_sum = getattr(child, "_sum", None)
    if values_ is not None and value_sum is not None and len(values_) == len(buckets):
        for index, count in enumerate(buckets):
            if count:
                values_[index].inc(count)
        value_sum.inc(total)
        return
    bounds = [*DURATION_BUCKETS, DURATION_BUCKETS[-1] * 2]
    for index, count in enumerate(buckets):
        for _ in range(int(count)):
            child.observe(bounds[index])
