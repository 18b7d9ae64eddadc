"""A keyed work queue with controller-runtime's semantics, for the controller, the agent, nodesim.

A key (a pod UID, a rollout name) is what gets reconciled, never the event:

- `add(key)` marks it dirty. A burst of adds collapses into one run, and a key
  added while it runs is run once more after that run, so one key is never
  handled by two workers at once.
- The reconciler returns a `Result`: done (`Result()`, or None), or
  `Result(requeue_after=s)`, run the key again after `s` seconds (how a
  reconciler that waits on time says when to look again). Either way the key's
  failures are forgotten.
- It raises: the key runs again after its backoff, `BASE_DELAY * 2**n` seconds
  for its n-th failure in a row (n from 0), at most `MAX_DELAY`, until a run
  succeeds. `Result(requeue=True)` asks for the same backoff without an error
  (something expected, such as a write refused because the object changed).
- It raises `TerminalError`: logged, and not retried; the key runs again only
  when something adds it (an event, a resync).

An add always runs the key at once, whatever backoff it is waiting out (as in
client-go): a new event is news, and a level-triggered reconciler handles it.

Base and cap, against controller-runtime's 5 ms and 1000 s: `BASE_DELAY` is 50 ms.
The errors here are round trips to the apiserver (a 5xx, a reset connection, an
apiserver restarting) or a filesystem error; the first retry still comes far
sooner than the fixed second this queue used to wait, and a failure that lasts
logs about six tracebacks in its first three seconds rather than controller-runtime's
ten. `MAX_DELAY` is 300 s, the agent's own cap for a failed attachment
(`agent.plan.MAX_BACKOFF`): a key in error is looked at no less often than a
failed attachment. Both components also re-add every key at each resync (60 s
by default), which bounds the wait of a key that keeps failing anyway.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

BASE_DELAY = 0.05
MAX_DELAY = 300.0


class TerminalError(Exception):
    """A failure that no retry can mend (it needs a person): logged, and the key not retried."""


@dataclass(frozen=True)
class Result:
    """What a reconcile asks of the queue; `Result()` is done."""

    requeue_after: float | None = None  # run the key again after this many seconds
    requeue: bool = False  # run it again after the key's backoff, as after an error


class Backoff:
    """Per-key exponential backoff: base * 2**n for the n-th failure in a row, at most cap."""

    def __init__(self, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def next(self, key: str) -> float:
        """The wait before retrying `key` after one more failure."""
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        # 2**n overflows a float long after the cap is reached.
        return self.cap if n >= 64 else min(self.base * 2**n, self.cap)

    def forget(self, key: str) -> None:
        """`key` succeeded: its next failure waits `base` again."""
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        with self._lock:
            return self._failures.get(key, 0)


Reconciler = Callable[[str], Result | None]


class WorkQueue:
    def __init__(
        self,
        handler: Reconciler,
        workers: int = 4,
        name: str = "queue",
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`handler(key)` reconciles one key and returns a `Result` (None: done)."""
        self._handler = handler
        self._workers = workers
        self._name = name
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._ready: deque[str] = deque()
        self._dirty: set[str] = set()  # queued in _ready, or added again while active
        self._active: set[str] = set()
        self._waiting: dict[str, float] = {}  # key -> when it is due (the earliest asked for)
        self._timers: list[tuple[float, int, str]] = []  # heap; stale entries are skipped
        self._seq = itertools.count()
        self._stopped = False
        self._threads: list[threading.Thread] = []

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

    # -- adding --------------------------------------------------------------------------

    def add(self, key: str) -> None:
        with self._cond:
            if key in self._dirty:
                return
            self._dirty.add(key)
            if key in self._active:
                return  # run again when the current run is done
            self._ready.append(key)
            # notify_all: the timer thread waits on the same condition and must not
            # swallow the wake-up meant for a worker.
            self._cond.notify_all()

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` after `delay` seconds (or earlier, if it was due earlier already)."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            due = self._clock() + delay
            if self._waiting.get(key, due + 1) <= due:
                return
            self._waiting[key] = due
            heapq.heappush(self._timers, (due, next(self._seq), key))
            self._cond.notify_all()

    def due_in(self, key: str) -> float | None:
        """Seconds until `key` is added again by a timer; None when none is set."""
        with self._cond:
            due = self._waiting.get(key)
            return None if due is None else due - self._clock()

    def pending(self) -> int:
        """Keys queued, running, or waiting for a timer."""
        with self._cond:
            return len(self._ready) + len(self._active) + len(self._waiting)

    # -- running -------------------------------------------------------------------------

    def promote_due(self) -> float | None:
        """Add the keys whose timers are due; seconds until the next timer (None: none)."""
        due: list[str] = []
        with self._cond:
            now = self._clock()
            while self._timers and self._timers[0][0] <= now:
                at, _, key = heapq.heappop(self._timers)
                if self._waiting.get(key) == at:  # else replaced by an earlier timer
                    del self._waiting[key]
                    due.append(key)
            wait = self._timers[0][0] - now if self._timers else None
        for key in due:
            self.add(key)
        return wait

    def process_next(self, block: bool = True) -> bool:
        """Reconcile the next ready key; False when stopped (or, unblocked, when none is ready)."""
        with self._cond:
            while not self._ready and not self._stopped:
                if not block:
                    return False
                self._cond.wait()
            if self._stopped:
                return False
            key = self._ready.popleft()
            self._dirty.discard(key)
            self._active.add(key)
        try:
            self._run(key)
        finally:
            with self._cond:
                self._active.discard(key)
                if key in self._dirty:
                    self._ready.append(key)
                    self._cond.notify_all()
        return True

    def _run(self, key: str) -> None:
        try:
            result = self._handler(key) or Result()
        except TerminalError as err:
            self.backoff.forget(key)
            log.error("%s: %s failed and is not retried: %s", self._name, key, err)
            return
        except Exception:
            delay = self.backoff.next(key)
            log.exception("%s: %s failed; retrying in %.3gs", self._name, key, delay)
            self.add_after(key, delay)
            return
        if result.requeue:
            self.add_after(key, self.backoff.next(key))
            return
        self.backoff.forget(key)
        if result.requeue_after is not None:
            self.add_after(key, result.requeue_after)

    def _work(self) -> None:
        while self.process_next():
            pass

    def _timer(self) -> None:
        # Under the lock from the promotion to the wait (the condition's lock is reentrant),
        # so that a timer set in between cannot go unnoticed.
        with self._cond:
            while not self._stopped:
                self._cond.wait(timeout=self.promote_due())
