"""Worker processes of one webhook replica (`netshift webhook --workers N`).

The first process binds the listening sockets, prepares what the workers share,
forks them and supervises. Shared:
- the listening sockets: the kernel spreads connections over the workers
  accepting on them;
- the metrics directory (prometheus_client's multiprocess mode, with more than
  one worker): each worker writes its own file, and a scrape answered by any
  worker merges them, so /metrics counts every admission of the replica;
- the readiness board: each worker posts whether it is ready, and /readyz on
  any worker answers for all of them (the kernel may hand the next admission
  request to any worker, so the replica is ready only when every worker is).
Everything else is per worker, as in a single-process webhook: its API client,
informer caches, TLS context and certificate watcher, so each picks up a
rotated keypair by itself.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import signal
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netshift.metrics import (
    MULTIPROCESS_ENV,
    enable_multiprocess,
    prepare_multiprocess_directory,
    process_gone,
)

log = logging.getLogger(__name__)

WORKERS_ENV = "NETSHIFT_WEBHOOK_WORKERS"
# A worker posts every second from its event loop; one silent for this long has a stuck
# loop (the apiserver gives up on a webhook call after 5 s), so the replica is not ready.
STALE_AFTER = 10.0


def default_workers() -> int:
    """$NETSHIFT_WEBHOOK_WORKERS, else 1."""
    text = os.environ.get(WORKERS_ENV, "")
    return max(1, int(text)) if text.strip() else 1


class ReadinessBoard:
    """Each worker's readiness, in anonymous shared memory that the forked workers inherit.

    A worker's slot holds the CLOCK_MONOTONIC time (ns, the same clock in every
    process) of its last post, positive when it was ready, negative when it
    was not, 0 before its first post: one 8-byte word, written in one store.
    """

    _SLOT = struct.Struct("q")

    def __init__(
        self,
        workers: int,
        *,
        stale_after: float = STALE_AFTER,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if workers < 1:
            raise ValueError("a replica has at least one worker")
        self.workers = workers
        self._stale_ns = int(stale_after * 1e9)
        self._clock = clock
        # MAP_SHARED | MAP_ANONYMOUS: the same pages in this process and its forks.
        self._memory = mmap.mmap(-1, self._SLOT.size * workers)

    def post(self, index: int, ready: bool) -> None:
        now = max(1, self._clock())
        self._SLOT.pack_into(self._memory, index * self._SLOT.size, now if ready else -now)

    def waiting(self) -> list[int]:
        """The workers that are not ready: not posted yet, posted not ready, or gone silent."""
        now = self._clock()
        out = []
        for index in range(self.workers):
            (stamp,) = self._SLOT.unpack_from(self._memory, index * self._SLOT.size)
            if stamp <= 0 or now - stamp > self._stale_ns:
                out.append(index)
        return out


@dataclass
class Workers:
    """What the workers of one replica share; made in the first process, before forking."""

    count: int
    board: ReadinessBoard
    metrics_dir: Path | None = None
    _made_dir: bool = False

    @classmethod
    def prepare(cls, count: int, metrics_dir: Path | None = None) -> Workers:
        """Call before any metric exists and before forking (nothing else has started).

        With more than one worker (or $PROMETHEUS_MULTIPROC_DIR set), metrics go
        to `metrics_dir` (default $PROMETHEUS_MULTIPROC_DIR, else a temporary
        directory removed at exit), emptied first: files a previous run of this
        replica left would add its counts to the new ones.
        """
        made = False
        if metrics_dir is None and os.environ.get(MULTIPROCESS_ENV):
            metrics_dir = Path(os.environ[MULTIPROCESS_ENV])
        if count > 1 or metrics_dir is not None:
            if metrics_dir is None:
                metrics_dir = Path(tempfile.mkdtemp(prefix="netshift-webhook-metrics-"))
                made = True
            prepare_multiprocess_directory(metrics_dir)
            enable_multiprocess(metrics_dir)
        return cls(count, ReadinessBoard(count), metrics_dir, made)

    def run(self, target: Callable[[int], int]) -> int:
        """`target(index)` in each worker (see `run_workers`); the exit code for the process."""
        try:
            return run_workers(self.count, target, reaped=process_gone)
        finally:
            if self._made_dir and self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """Best effort (Linux): a worker gets SIGTERM when its supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_workers(
    workers: int,
    target: Callable[[int], int],
    *,
    reaped: Callable[[int], None] = lambda _pid: None,
) -> int:
    """Run `target(index)` in `workers` forked processes sharing the listening sockets.

    One worker: `target(0)` runs in this process. More: this process only forks
    (before any thread is started: the caller binds sockets and nothing else),
    forwards SIGTERM/SIGINT to the workers and waits, calling `reaped(pid)` for
    each worker that exited. When a worker exits on its own, the others are
    stopped and the exit code is non-zero, so that the kubelet restarts the
    container as a whole.
    """
    if workers <= 1:
        return target(0)
    children = {_fork_worker(index, target): index for index in range(workers)}
    stopping = False

    def forward(sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("webhook serving with %d worker processes: %s", workers, sorted(children))
    result = 0
    try:
        while children:
            pid, status = os.wait()
            if pid not in children:
                continue
            index = children.pop(pid)
            reaped(pid)
            code = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error("webhook worker %d (pid %d) exited with %d; stopping", index, pid, code)
                forward(signal.SIGTERM, None)
                result = 1
            elif code not in (0, -signal.SIGTERM, -signal.SIGINT):
                result = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return result


def _fork_worker(index: int, target: Callable[[int], int]) -> int:
    """Fork one worker running `target(index)`; returns its pid (never returns in the child)."""
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with_parent()
        code = target(index)
    except BaseException:
        log.exception("webhook worker %d failed", index)
    finally:
        os._exit(code)
