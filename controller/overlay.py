"""Our own writes, seen before the watch delivers them.

After the controller patches a pod, its informer cache shows the old pod until
the watch event arrives. A reconcile that runs in between (triggered by some
other pod) would count that pod as not in flight and start one pod too many.
So every object the apiserver returns from our writes is kept here and
preferred over the cached copy until the informer has caught up with exactly
that resourceVersion (or the object is deleted, or `ttl` passes, for the rare
case of a re-list that skips it). The watch event may also arrive before the
write returns: `expect(key)` before the write collects what the informer sees
meanwhile, so `put` knows the cache is already there. Only freshness depends on this; nothing is
lost when it is empty, e.g. after a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from netshift.kube import object_key

JSON = dict[str, Any]
_DELETED = "<deleted>"


def _rv(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class WriteOverlay:
    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[JSON, float]] = {}
        self._expected: dict[str, set[str]] = {}

    def expect(self, key: str) -> None:
        """Call before writing the object `key`."""
        with self._lock:
            self._expected[key] = set()

    def cancel(self, key: str) -> None:
        """The write failed: nothing to remember."""
        with self._lock:
            self._expected.pop(key, None)

    def put(self, obj: JSON) -> None:
        """Remember an object as the apiserver returned it from our write."""
        key = object_key(obj)
        with self._lock:
            seen = self._expected.pop(key, set())
            if _rv(obj) in seen or _DELETED in seen:
                return  # the cache already has it, or something newer
            self._objects[key] = (obj, self._clock())

    def observe(self, kind: str, obj: JSON) -> None:
        """Informer callback: forget our copy once the cache has it (or the object is gone)."""
        key = object_key(obj)
        with self._lock:
            if key in self._expected:
                self._expected[key].add(_DELETED if kind == "DELETED" else _rv(obj))
            held = self._objects.get(key)
            if held is None:
                return
            if kind == "DELETED" or _rv(obj) == _rv(held[0]):
                del self._objects[key]

    def _current(self, key: str) -> JSON | None:
        held = self._objects.get(key)
        if held is None:
            return None
        if self._clock() - held[1] > self._ttl:
            del self._objects[key]
            return None
        return held[0]

    def get(self, key: str, cached: JSON | None) -> JSON | None:
        with self._lock:
            if cached is None:
                return None
            mine = self._current(key)
            return cached if mine is None else mine

    def merge(self, cached: Iterable[JSON]) -> list[JSON]:
        with self._lock:
            out = []
            for obj in cached:
                mine = self._current(object_key(obj))
                out.append(obj if mine is None else mine)
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)
