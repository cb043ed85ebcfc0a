"""The work queue: dedup, one worker per key, delayed and rate-limited adds, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from reconciler.queue import ExponentialBackoff, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_adding_a_waiting_key_again_does_nothing() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a"):
        queue.add(key)
    assert len(queue) == 2
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["a", "b", None]


def test_a_key_added_while_processing_waits_for_done() -> None:
    """Never two workers on one key: re-added during processing, it comes back only
    after `done`, once, however many times it was added."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert queue.get(0) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(0) is None  # dirty, but still processing
    queue.done("a")
    assert queue.get(0) == "a"
    queue.done("a")
    assert queue.get(0) is None


def test_concurrent_workers_never_hold_the_same_key() -> None:
    queue: WorkQueue[int] = WorkQueue()
    holding: set[int] = set()
    overlaps: list[int] = []
    processed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while (key := queue.get(timeout=0.5)) is not None:
            with lock:
                if key in holding:
                    overlaps.append(key)
                holding.add(key)
            time.sleep(0.001)
            with lock:
                holding.discard(key)
                processed.append(key)
            queue.done(key)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for round_ in range(50):
        for key in range(5):
            queue.add(key)
        if round_ % 10 == 0:
            time.sleep(0.005)
    for thread in threads:
        thread.join(5)
    assert overlaps == []
    assert set(processed) == set(range(5))


def test_add_after_holds_a_key_back_and_the_earliest_wins() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    queue.add_after("a", 5)
    queue.add_after("a", 20)  # later than the pending one: ignored
    assert queue.get(0) is None and queue.delayed() == 1
    clock.now += 5
    assert queue.get(0) == "a"
    queue.done("a")
    clock.now += 100
    assert queue.get(0) is None  # the superseded entries do not come back
    queue.add_after("b", 0)
    assert queue.get(0) == "b"


def test_get_waits_for_the_next_delayed_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    started = time.monotonic()
    assert queue.get(timeout=2) == "a"
    assert 0.04 <= time.monotonic() - started < 1.5


def test_rate_limited_adds_back_off_exponentially_per_key_until_forgotten() -> None:
    backoff: ExponentialBackoff[str] = ExponentialBackoff(base_delay=0.01, max_delay=0.05)
    assert [backoff.when("a") for _ in range(5)] == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])
    assert backoff.when("b") == pytest.approx(0.01)
    assert backoff.failures("a") == 5
    backoff.forget("a")
    assert backoff.when("a") == pytest.approx(0.01)

    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(ExponentialBackoff(1.0, 60.0), clock=clock)
    queue.add_rate_limited("k")
    queue.add_rate_limited("k")  # 2 s, but the 1 s entry is earlier
    assert queue.num_requeues("k") == 2
    clock.now += 1
    assert queue.get(0) == "k"
    queue.forget("k")
    assert queue.num_requeues("k") == 0


def test_shutdown_wakes_waiting_workers_and_refuses_new_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    results: list[str | None] = []
    thread = threading.Thread(target=lambda: results.append(queue.get()))
    thread.start()
    time.sleep(0.05)
    queue.shutdown()
    thread.join(2)
    assert results == [None]
    queue.add("a")
    queue.add_after("b", 0.01)
    assert queue.get(0) is None
    assert queue.shutting_down
