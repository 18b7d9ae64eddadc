"""One real node per machine.

The kubelet owns the machine's kubepods cgroups and containerd puts pods' netns in
/run/netns: two real nodes of two state dirs would share (and clean up) each other's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

REAL_NODE_LOCK = "/run/netshift-realnode.lock"


@contextlib.contextmanager
def machine_lock(timeout: float = 1800) -> Iterator[None]:
    """One real node per machine: short-lived users (test sessions, benches, e.g. from
    two worktrees) take turns, each holding this lock while its real node runs; a second
    one waits for it (up to `timeout`) instead of failing on the first one's kubelet."""
    with open(REAL_NODE_LOCK, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{REAL_NODE_LOCK} held for {timeout:.0f}s") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def kubelet_pids() -> list[int]:
    """Every running kubelet on this machine (ours or anyone's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if os.path.basename(argv0) == b"kubelet":
            pids.append(int(entry.name))
    return pids
