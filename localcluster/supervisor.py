"""Detached processes with pid files and logs: how the plane and every node run theirs.

A process started here survives `netshift up` (its own session) and is found again
by its pid file, so that a second `up` reuses what runs and `down` stops exactly what
was started; one that died is reported with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from localcluster.errors import ClusterError
from localcluster.procs import Proc, clean_env, indent, log_tail, pid_alive

Say = Callable[[str], None]
# One row of `netshift status`: name, pid (None: no pid file), alive.
ProcStatus = tuple[str, int | None, bool]


class Supervisor:
    """The processes of one owner (the plane, a node): pid files in `run_dir`, logs in
    `log_dir`, each started with `cwd` as its working directory."""

    def __init__(self, run_dir: Path, log_dir: Path, cwd: Path, order: Sequence[str]) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.cwd = cwd
        # The names in the order they start; status lists them so, and others after.
        self.order = tuple(order)

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        try:
            return int(self._pidfile(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and pid_alive(pid)

    def start(self, proc: Proc) -> str:
        """Start `proc` unless it already runs; say what happened."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(proc.name)
        note = ""
        pid = self.pid(proc.name)
        if pid is not None:
            if pid_alive(pid):
                return f"{proc.name}: already running (pid {pid})"
            note = (
                f"{proc.name}: had died since it was started (pid {pid}); last log lines:\n"
                + indent(log_tail(log_path))
                + "\n"
            )
        with open(log_path, "ab") as logf:
            child = subprocess.Popen(
                proc.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=clean_env(proc.env),
                start_new_session=True,  # survives `netshift up`, stopped by `netshift down`
                cwd=self.cwd,
            )
        self._pidfile(proc.name).write_text(f"{child.pid}\n")
        return note + f"{proc.name}: started (pid {child.pid})"

    def wait_healthy(self, proc: Proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid(proc.name)
            if pid is None or not pid_alive(pid):
                raise ClusterError(
                    f"{proc.name} exited during start-up; last log lines:\n"
                    + indent(log_tail(self.log_path(proc.name)))
                )
            if proc.healthy is None or proc.healthy():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{proc.name} not healthy after {timeout:.0f}s; last log lines:\n"
                    + indent(log_tail(self.log_path(proc.name)))
                )
            time.sleep(0.1)

    def start_all(self, procs: Sequence[Proc], say: Say, timeout: float = 60) -> None:
        """One after the other, each healthy (and its `after_healthy` done) before the next."""
        for proc in procs:
            say(self.start(proc))
            self.wait_healthy(proc, timeout)
            if proc.after_healthy is not None:
                proc.after_healthy()

    def names(self) -> list[str]:
        """Every process with a pid file, in start order, unknown names last."""
        found = {p.stem for p in self.run_dir.glob("*.pid")} if self.run_dir.exists() else set()
        return [n for n in (*self.order, *sorted(found - set(self.order))) if n in found]

    def status(self) -> list[ProcStatus]:
        return [(n, self.pid(n), self.running(n)) for n in self.names()]

    def stop(self, name: str, say: Say, timeout: float = 15) -> None:
        """SIGTERM the process group of `name`, SIGKILL it after `timeout`; forget its pid."""
        pid = self.pid(name)
        if pid is None:
            return
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                say(f"{name}: killed (pid {pid}) after {timeout:.0f}s")
            else:
                say(f"{name}: stopped (pid {pid})")
        else:
            say(f"{name}: was not running (pid {pid})")
        self._pidfile(name).unlink(missing_ok=True)

    def stop_all(self, say: Say, timeout: float = 15) -> None:
        """Every process with a pid file, the last started first."""
        for name in reversed(self.names()):
            self.stop(name, say, timeout)
