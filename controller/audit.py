"""The rollout audit log: one JSON object per line for every pod start and settle.

Optional (`--audit-log PATH`). It exists so that a run can be checked after the
fact, e.g. that no more than maxConcurrent pods were ever in flight. Lines are
appended and flushed one at a time, so several controllers (a killed one and
its successor) may share one file.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TextIO

from netshift.kube import now_rfc3339

START, SETTLED, FAILED, GONE = "start", "settled", "failed", "gone"


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    def write(
        self, event: str, pod: str, profile: str, inflight: int, took: float | None = None
    ) -> None:
        entry: dict[str, object] = {
            "ts": now_rfc3339(),
            "event": event,
            "pod": pod,
            "profile": profile,
            "inflight": inflight,
        }
        if took is not None:
            entry["seconds"] = round(took, 4)  # a start: its patch's round trip
        line = json.dumps(entry, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
