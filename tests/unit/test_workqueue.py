"""The keyed work queue: one worker per key at a time, bursts collapse, retries come back."""

from __future__ import annotations

import threading
import time

from netshift.kube import wait_for
from netshift.workqueue import WorkQueue


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

    def handler(key: str) -> float | None:
        runs.append(time.monotonic())
        return 0.2 if len(runs) == 1 else None

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
