"""Where a rollout's time goes: CPU per process, py-spy stacks, and each pod's path.

Used by bench/rollout.py around the switch of its largest size:

- `CpuMeter`: CPU seconds (user + system) each of the cluster's processes spent
  between `start()` and `stop()`, and their children's beside them (the CNI plugins
  are the agent's children: the floor's work), read from /proc/<pid>/stat.
- `Spy`: `py-spy record` of the controller and the agent (if py-spy is installed),
  summarised per thread group: what the threads were doing (the leaf frames,
  busy and waiting alike), so that a thread pool stuck behind one call shows.
- `pod_path_table`: per pod, from the controller's audit log and the agent's timing
  log: when the controller patched it, when the agent picked it up, its CNI work,
  its status write, and when the controller saw it settled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float, float, float]:
    """(utime, stime, cutime, cstime) of a process in seconds: its own CPU in user space
    and in the kernel, its reaped children's likewise."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After "(comm)": state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based).
    user, system, cuser, csystem = (int(x) / TICK for x in fields[11:15])
    return user, system, cuser, csystem


class CpuMeter:
    """CPU per process; a process whose children used CPU gets a second row for them.

    Each row also tells how much of it was in the kernel (system time): the agent's
    setns, netlink, fork/exec and fsync are kernel work that no Python change shortens.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, tuple[float, float, float, float]] = {}
        self.used: dict[str, tuple[float, float]] = {}  # row -> (user, system) seconds
        self.wall = 0.0

    def start(self) -> None:
        self.before = {name: cpu_times(pid) for name, pid in self.pids.items()}
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        self.used = {}
        for name, pid in self.pids.items():
            now, then = cpu_times(pid), self.before[name]
            user, system, cuser, csystem = (a - b for a, b in zip(now, then, strict=True))
            self.used[name] = (user, system)
            if cuser + csystem > 0:
                self.used[f"{name}'s children"] = (cuser, csystem)

    def per_pod(self, pods: int) -> dict[str, float]:
        """CPU milliseconds per pod of each row (what the bench's rounds compare)."""
        return {name: 1000 * (u + s) / pods for name, (u, s) in self.used.items()}

    def table(self, pods: int) -> list[str]:
        total = sum(u + s for u, s in self.used.values())
        lines = [f"CPU during the switch ({self.wall:.1f} s wall, {total:.1f} CPU s in all):"]
        for name, (user, system) in sorted(self.used.items(), key=lambda kv: -sum(kv[1])):
            used = user + system
            lines.append(
                f"  {name:24} {used:6.2f} s  {100 * used / self.wall:5.0f}% of a core  "
                f"{1000 * used / pods:6.1f} ms/pod  ({100 * system / used if used else 0:3.0f}% "
                "in the kernel)"
            )
        return lines


REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_requests(metrics: str) -> Counter[str]:
    """kube-apiserver's apiserver_request_total by "VERB resource[/subresource]"."""
    counts: Counter[str] = Counter()
    for line in metrics.splitlines():
        m = REQUEST_LINE.match(line)
        if m is None:
            continue
        labels = dict(LABEL.findall(m["labels"]))
        what = labels.get("resource", "") + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        counts[f"{labels.get('verb', '?')} {what}"] += int(float(m["value"]))
    return counts


def api_request_table(before: Counter[str], after: Counter[str], pods: int) -> list[str]:
    """The apiserver requests made during the switch, per pod (WATCH: watches opened)."""
    diff = {k: after[k] - before.get(k, 0) for k in after}
    rows = sorted(((k, v) for k, v in diff.items() if v > 0), key=lambda kv: -kv[1])
    lines = [f"apiserver requests during the switch ({sum(v for _, v in rows)} in all):"]
    lines += [f"  {k:40} {v:6d}  {v / pods:6.2f} per pod" for k, v in rows]
    return lines


class Spy:
    """`py-spy record --idle --threads` of some processes while a step runs."""

    def __init__(
        self, pids: dict[str, int], out_dir: Path, rate: int = 100, idle: bool = True
    ) -> None:
        self.pids = pids
        self.out_dir = out_dir
        self.rate = rate
        # idle: every thread's samples, waiting included (where a pool is stuck);
        # not idle: only the thread holding the GIL (where the Python code's CPU goes;
        # py-spy's own idle guess counts threads in fsync or a TLS read as running).
        self.idle = idle
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exe = shutil.which("py-spy") or _beside_python("py-spy")

    @property
    def available(self) -> bool:
        return self.exe is not None

    def start(self) -> None:
        if self.exe is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self.procs[name] = subprocess.Popen(
                [
                    self.exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(self.rate),
                    "--idle" if self.idle else "--gil",
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(self.out_dir / f"{name}.stacks"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for proc in self.procs.values():
            proc.wait(timeout=60)

    def summary(self, top: int = 4) -> list[str]:
        lines = []
        for name in self.procs:
            path = self.out_dir / f"{name}.stacks"
            if not path.exists():
                continue
            raw = path.read_text()
            lines += summarise_stacks(name, raw, top) if self.idle else summarise_cpu(name, raw)
        return lines


def _beside_python(name: str) -> str | None:
    import sys

    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


def _group(thread: str) -> str:
    """'thread (123): pod-patch_4' -> 'pod-patch'; 'agent-7' -> 'agent'."""
    name = thread.split(": ", 1)[-1]
    return re.sub(r"[-_]\d+$", "", name)


def _frame(frame: str) -> str:
    """'Kube.request (netshift/kube.py:105)' -> 'Kube.request (netshift/kube.py)'."""
    return re.sub(r":\d+\)$", ")", frame)


def summarise_stacks(process: str, raw: str, top: int) -> list[str]:
    """Per thread group: its threads' samples, and the deepest netshift frames they were in.

    "Deepest netshift frame" is the last frame of netshift's own code in each sample
    (not the library call under it): the question is which of our calls the time went to.
    """
    groups: dict[str, Counter[str]] = {}
    threads: dict[str, set[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        group = _group(frames[0])
        threads.setdefault(group, set()).add(frames[0])
        ours = [f for f in frames[1:] if _is_ours(f)]
        where = _frame(ours[-1]) if ours else _frame(frames[-1])
        groups.setdefault(group, Counter())[where] += int(count)
    lines = [f"py-spy, {process} (samples of every thread, waiting included):"]
    order = sorted(groups, key=lambda g: -sum(groups[g].values()))
    for group in order:
        counts = groups[group]
        total = sum(counts.values())
        if all(_is_parked(w) for w in counts):
            continue  # threads that only ever waited for work: nothing to say
        lines.append(f"  {group} ({len(threads[group])} threads, {total} samples):")
        for where, n in counts.most_common(top):
            lines.append(f"    {100 * n / total:5.1f}%  {where}")
    return lines


def summarise_cpu(process: str, raw: str, top: int = 14) -> list[str]:
    """Where a process's CPU went: the share of its running samples under each of our
    functions (inclusive: a caller counts its callees' time), and the leaf frames of any
    code (the library or builtin calls that burned it)."""
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")[1:]  # the first is the thread
        for where in {_frame(f) for f in frames if _is_ours(f)}:
            inclusive[where] += n
        if frames:
            leaves[_frame(frames[-1])] += n
    lines = [f"py-spy, {process} (samples of the thread holding the GIL: {total}):"]
    if not total:
        return lines
    lines.append("  ours, inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {w}" for w, n in inclusive.most_common(top)]
    lines.append("  leaf frames:")
    lines += [f"    {100 * n / total:5.1f}%  {w}" for w, n in leaves.most_common(top // 2)]
    return lines


OURS = ("netshift/", "agent/", "controller/", "nodesim/", "webhook/", "cli/")


def _is_ours(frame: str) -> bool:
    return any(f"({p}" in frame for p in OURS)


def _is_parked(where: str) -> bool:
    return "WorkQueue._work" in where or "WorkQueue._timer" in where


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _read_audit(
    audit_log: Path, since: float
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Per pod: when its start patch was answered, its round trip, when it was seen settled."""
    answered: dict[str, float] = {}
    took: dict[str, float] = {}
    settles: dict[str, float] = {}
    for line in audit_log.read_text().splitlines():
        entry = json.loads(line)
        at = _ts(entry["ts"])
        if at < since:
            continue
        if entry["event"] == "start" and entry["pod"] not in answered:
            answered[entry["pod"]] = at
            if "seconds" in entry:
                took[entry["pod"]] = float(entry["seconds"])
        elif entry["event"] == "settled":
            settles[entry["pod"]] = at
    return answered, took, settles


def pod_path_table(
    audit_log: Path, timing_log: Path, since: float, max_concurrent: int
) -> list[str]:
    """Median / p90 of each step of a pod's switch, from the two logs (times after `since`).

    The audit log's start line is written when the patch is answered and carries its
    round trip (`seconds`; absent before issue 23, then the sending time is unknown).
    """
    answered, took, settles = _read_audit(audit_log, since)
    steps: dict[str, list[float]] = {}
    for line in timing_log.read_text().splitlines():
        t: dict[str, Any] = json.loads(line)
        pod = t["pod"]
        if pod not in answered or pod not in settles or t["done_at"] < since:
            continue
        picked = t.get("picked_at", t["seen_at"])
        for step, value in (
            ("controller: pod patch round trip", took.get(pod)),
            ("patch answered -> agent picks the pod up", picked - answered[pod]),
            ("agent: observe + CNI + netlink + records", t["cni_seconds"]),
            ("agent: status patch", t["status_seconds"]),
            ("status written -> controller sees it settled", settles[pod] - t["done_at"]),
            (
                "patch sent -> settled seen (a slot held)",
                settles[pod] - answered[pod] + took.get(pod, 0.0),
            ),
        ):
            if value is not None:
                steps.setdefault(step, []).append(value)
    if not steps:
        return ["per-pod path: no pods in both logs"]
    n = len(steps["agent: status patch"])
    lines = [f"per-pod path ({n} pods; seconds, median / p90 / max):"]
    for step, values in steps.items():
        values.sort()
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        lines.append(f"  {step:46} {statistics.median(values):6.3f} {p90:6.3f} {values[-1]:6.3f}")
    first = min(answered[p] - took.get(p, 0.0) for p in answered)
    last = max(settles.values())
    held = sum(steps["patch sent -> settled seen (a slot held)"])
    lines.append(
        f"  first patch sent -> last settle seen: {last - first:.2f} s; slots held on average: "
        f"{held / (last - first):.1f} of maxConcurrent {max_concurrent}"
    )
    return lines
