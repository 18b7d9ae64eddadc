"""A keyed work queue: deduplicated, never two workers on one key, delayed retries.

The same shape as client-go's workqueue: `add(key)` marks a key dirty; a key
being processed is re-queued after its current run if it was added meanwhile,
so one key (one pod) is never handled by two workers at once, and a burst of
events for one pod collapses into one reconcile.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(
        self,
        handler: Callable[[str], float | None],
        workers: int = 4,
        name: str = "queue",
        on_done: Callable[[str, float], None] | None = None,
    ) -> None:
        """`handler(key)` returns None when done, or seconds after which to run the key again."""
        self._handler = handler
        self._workers = workers
        self._name = name
        self._on_done = on_done
        self._cond = threading.Condition()
        self._ready: list[str] = []
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty_while_active: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self.added_at: dict[str, float] = {}

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._timer, name=f"{self._name}-timer", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def add(self, key: str) -> None:
        with self._cond:
            self.added_at.setdefault(key, time.monotonic())
            if key in self._active:
                self._dirty_while_active.add(key)
                return
            if key in self._queued:
                return
            self._queued.add(key)
            self._ready.append(key)
            # notify_all: the timer thread waits on the same condition and must not
            # swallow the wake-up meant for a worker.
            self._cond.notify_all()

    def add_after(self, key: str, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), key))
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._active) + len(self._delayed)

    def _timer(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._delayed and self._delayed[0][0] <= now:
                    due.append(heapq.heappop(self._delayed)[2])
                wait = (self._delayed[0][0] - now) if self._delayed else 1.0
            for key in due:
                self.add(key)
            with self._cond:
                if not self._stopped:
                    self._cond.wait(timeout=min(max(wait, 0.005), 1.0))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                key = self._ready.pop(0)
                self._queued.discard(key)
                self._active.add(key)
                added = self.added_at.pop(key, time.monotonic())
            retry: Any = None
            try:
                retry = self._handler(key)
            except Exception:
                log.exception("%s: handler failed for %s; retrying in 1s", self._name, key)
                retry = 1.0
            if self._on_done is not None:
                self._on_done(key, added)
            with self._cond:
                self._active.discard(key)
                again = key in self._dirty_while_active
                self._dirty_while_active.discard(key)
            if again:
                self.add(key)
            elif retry is not None:
                self.add_after(key, float(retry))
