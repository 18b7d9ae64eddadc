"""The keyed work queue: one worker per key at a time, bursts collapse, retries come back.

The first tests run the queue's threads on the real clock; the rest drive it by hand
(`process_next`, `promote_due`) on a clock the test moves, so that the waits are exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from netshift.kube import wait_for
from netshift.workqueue import BASE_DELAY, MAX_DELAY, Backoff, Result, TerminalError, WorkQueue


def test_one_key_is_never_handled_by_two_workers_at_once() -> None:
    active: dict[str, int] = {}
    overlap = []
    runs = []
    lock = threading.Lock()

    def handler(key: str) -> None:
        with lock:
            active[key] = active.get(key, 0) + 1
            if active[key] > 1:
                overlap.append(key)
        time.sleep(0.01)
        with lock:
            active[key] -= 1
            runs.append(key)

    q = WorkQueue(handler, workers=4)
    q.start()
    for _ in range(50):
        for key in ("a", "b"):
            q.add(key)
        time.sleep(0.001)
    wait_for(lambda: q.pending() == 0, 10, what="queue drained")
    q.stop()
    assert not overlap
    assert set(runs) == {"a", "b"}
    assert len(runs) < 100  # a burst for one key collapses into fewer runs


def test_an_add_during_a_run_runs_the_key_again() -> None:
    started = threading.Event()
    release = threading.Event()
    runs: list[str] = []

    def handler(key: str) -> None:
        runs.append(key)
        if len(runs) == 1:
            started.set()
            release.wait(5)

    q = WorkQueue(handler, workers=2)
    q.start()
    q.add("k")
    assert started.wait(5)
    q.add("k")  # while the first run is still going
    release.set()
    wait_for(lambda: len(runs) == 2, 5, what="second run")
    q.stop()


def test_a_returned_delay_retries_the_key_and_an_add_is_picked_up_promptly() -> None:
    runs: list[float] = []

    def handler(key: str) -> Result | None:
        runs.append(time.monotonic())
        return Result(requeue_after=0.2) if len(runs) == 1 else None

    q = WorkQueue(handler, workers=1)
    q.start()
    t0 = time.monotonic()
    q.add("k")
    wait_for(lambda: len(runs) == 2, 5, what="retry")
    assert runs[1] - runs[0] >= 0.2
    # The timer thread waits on the same condition; it must not swallow the wake-up.
    for _ in range(20):
        before = len(runs)

        def ran_once_more(before: int = before) -> bool:
            return len(runs) == before + 1

        q.add("k")
        wait_for(ran_once_more, 2, what="prompt run")
    q.stop()
    assert runs[0] - t0 < 1


# -- controller-runtime's semantics, on a clock the test moves ------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Failing(Exception):
    pass


def manual(handler: Callable[[str], Result | None]) -> tuple[WorkQueue, Clock]:
    clock = Clock()
    return WorkQueue(handler, backoff=Backoff(0.01, 1.0), clock=clock), clock


def run_due(q: WorkQueue, clock: Clock, key: str) -> float:
    """Move the clock to the key's timer, run it; the wait it had."""
    wait = q.due_in(key)
    assert wait is not None, f"{key} has no timer"
    clock.now += wait
    q.promote_due()
    assert q.process_next(block=False)
    return wait


def test_attempt_n_waits_base_times_two_to_the_n_up_to_the_cap() -> None:
    def handler(key: str) -> None:
        raise Failing("apiserver unavailable")

    q, clock = manual(handler)
    q.add("k")
    assert q.process_next(block=False)
    waits = [run_due(q, clock, "k") for _ in range(9)]
    waits.append(q.due_in("k") or 0.0)
    assert waits == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0])
    assert q.backoff.failures("k") == 10


def test_the_default_backoff_starts_at_its_base_and_stops_at_its_cap() -> None:
    b = Backoff()
    waits = [b.next("k") for _ in range(100)]
    assert waits[0] == BASE_DELAY and waits[1] == 2 * BASE_DELAY
    assert max(waits) == waits[-1] == MAX_DELAY
    assert b.next("other") == BASE_DELAY  # per key


def test_a_key_is_not_run_before_its_backoff_is_over() -> None:
    runs: list[str] = []

    def handler(key: str) -> None:
        runs.append(key)
        raise Failing("no")

    q, clock = manual(handler)
    q.add("k")
    q.process_next(block=False)
    clock.now += 0.009
    q.promote_due()
    assert not q.process_next(block=False) and runs == ["k"]
    clock.now += 0.001
    q.promote_due()
    assert q.process_next(block=False) and runs == ["k", "k"]


def test_a_terminal_error_is_not_retried() -> None:
    runs: list[str] = []

    def handler(key: str) -> None:
        runs.append(key)
        raise TerminalError("record file unreadable")

    q, clock = manual(handler)
    q.add("k")
    assert q.process_next(block=False)
    assert q.due_in("k") is None and q.pending() == 0
    clock.now += 3600
    assert q.promote_due() is None
    assert not q.process_next(block=False) and runs == ["k"]
    q.add("k")  # an event: it runs again
    assert q.process_next(block=False) and runs == ["k", "k"]


def test_a_requeue_after_is_honoured() -> None:
    runs: list[float] = []
    clock = Clock()

    def handler(key: str) -> Result:
        runs.append(clock.now)
        return Result(requeue_after=7.5)

    q = WorkQueue(handler, clock=clock)
    q.add("k")
    q.process_next(block=False)
    assert q.due_in("k") == pytest.approx(7.5)
    clock.now += 7.4
    q.promote_due()
    assert not q.process_next(block=False)
    clock.now += 0.1
    q.promote_due()
    assert q.process_next(block=False)
    assert [t - runs[0] for t in runs] == pytest.approx([0.0, 7.5])


def test_a_success_resets_the_backoff() -> None:
    outcomes = [Failing, Failing, Failing, None, Failing]

    def handler(key: str) -> None:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure("transient")

    q, clock = manual(handler)
    q.add("k")
    q.process_next(block=False)
    assert [run_due(q, clock, "k") for _ in range(3)] == pytest.approx([0.01, 0.02, 0.04])
    assert q.backoff.failures("k") == 0 and q.due_in("k") is None  # the fourth run succeeded
    q.add("k")
    q.process_next(block=False)
    assert q.due_in("k") == pytest.approx(0.01)


def test_a_requeue_without_an_error_backs_off_too() -> None:
    q, clock = manual(lambda key: Result(requeue=True))
    q.add("k")
    q.process_next(block=False)
    assert [run_due(q, clock, "k") for _ in range(3)] == pytest.approx([0.01, 0.02, 0.04])


def test_an_add_runs_a_key_at_once_whatever_backoff_it_waits_out() -> None:
    runs: list[str] = []

    def handler(key: str) -> None:
        runs.append(key)
        raise Failing("no")

    q, _ = manual(handler)
    q.add("k")
    q.process_next(block=False)
    assert q.due_in("k") == pytest.approx(0.01)
    q.add("k")
    assert q.process_next(block=False) and runs == ["k", "k"]


def test_adds_while_a_key_runs_make_one_more_run_after_it() -> None:
    runs: list[str] = []
    handed_over: list[bool] = []
    q: WorkQueue

    def handler(key: str) -> None:
        runs.append(key)
        if len(runs) == 1:
            for _ in range(3):
                q.add(key)  # events while it runs
            handed_over.append(q.process_next(block=False))  # as a second worker would ask

    q, _ = manual(handler)
    q.add("k")
    q.add("k")
    assert q.pending() == 1  # deduplicated
    assert q.process_next(block=False)
    assert q.process_next(block=False)
    assert not q.process_next(block=False)
    assert runs == ["k", "k"]
    assert handed_over == [False], "a running key is not handed to a second worker"


def test_the_earliest_timer_of_a_key_wins() -> None:
    q, clock = manual(lambda key: None)
    q.add_after("k", 10)
    q.add_after("k", 2)
    q.add_after("k", 5)
    assert q.due_in("k") == pytest.approx(2) and q.pending() == 1
    clock.now += 2
    q.promote_due()
    assert q.process_next(block=False)
    clock.now += 10
    q.promote_due()
    assert not q.process_next(block=False), "the later timers were replaced"
