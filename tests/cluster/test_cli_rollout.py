"""`netshift rollout status|pause|resume`: following and steering a profile's rollout.

Pure tests of reading the progress back from the status the controller writes
(controller.progress), then the commands against the local cluster with the
controller running as a process and the stand-in agent reporting.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from cli.rollout import duration
from controller.progress import (
    DONE,
    EXIT_COMPLETE,
    EXIT_FAILED,
    FAILED,
    OBSERVING,
    PAUSED,
    ROLLING,
    STUCK,
    progress_bar,
    progress_line,
    read_progress,
)
from localcluster.cluster import LocalCluster
from localcluster.procs import main_python
from netshift.keys import ROLLOUT_STARTED_KEY
from netshift.kube import Kube, wait_for
from support.builders import create_nad
from support.controller import (
    ControllerProcess,
    StandInAgent,
    annotations_of,
    condition,
    create_pods,
    create_profile,
    delete_profile,
    label_namespace,
    profile_status,
    wait_running,
)


def profile_with(
    generation: int = 2,
    observed: int = 2,
    pods: dict[str, int] | None = None,
    progressing: tuple[str, str] = ("True", "RollingOut"),
    complete: tuple[str, str] = ("False", "PodsNotConverged"),
) -> dict[str, Any]:
    return {
        "metadata": {"name": "blue", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "pods": pods
            or {"desired": 10, "updated": 4, "converged": 3, "failed": 0, "inFlight": 1},
            "conditions": [
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": "m1",
                },
                {"type": "Complete", "status": complete[0], "reason": complete[1], "message": "m2"},
            ],
        },
    }


def test_a_rolling_profile_is_progressing_with_its_counts() -> None:
    p = read_progress(profile_with())
    assert (p.state, p.exit_code, p.finished) == (ROLLING, None, False)
    assert (p.desired, p.converged, p.failed, p.in_flight, p.updated) == (10, 3, 0, 1, 4)
    assert progress_line(p) == (
        "NetworkProfile blue: Progressing: 3/10 converged, 0 failed, 1 in flight, 4 updated (RollingOut)"
    )


def test_a_status_of_an_older_generation_is_not_believed() -> None:
    p = read_progress(profile_with(generation=3, observed=2, complete=("True", "AllPodsConverged")))
    assert p.state == OBSERVING and p.exit_code is None
    assert "generation 3" in p.message
    assert read_progress({"metadata": {"name": "blue", "generation": 1}}).state == OBSERVING


def test_complete_exits_zero() -> None:
    p = read_progress(
        profile_with(
            progressing=("False", "RolloutFinished"), complete=("True", "AllPodsConverged")
        )
    )
    assert (p.state, p.exit_code) == (DONE, EXIT_COMPLETE)


def test_max_failures_reached_or_finished_with_failures_exits_one() -> None:
    halted = read_progress(profile_with(progressing=("False", "FailureThresholdReached")))
    finished = read_progress(
        profile_with(progressing=("False", "RolloutFinished"), complete=("False", "PodsFailed"))
    )
    assert (halted.state, halted.exit_code) == (FAILED, EXIT_FAILED)
    assert (finished.state, finished.exit_code) == (FAILED, EXIT_FAILED)


def test_a_rollout_that_cannot_finish_as_it_is_exits_one() -> None:
    for reason in ("InvalidSpec", "ExistingPodsIgnored"):
        p = read_progress(profile_with(progressing=("False", reason)))
        assert (p.state, p.exit_code) == (STUCK, EXIT_FAILED)


def test_paused_and_missing_networks_keep_waiting() -> None:
    assert read_progress(profile_with(progressing=("False", "Paused"))).state == PAUSED
    p = read_progress(profile_with(progressing=("False", "MissingNetworks")))
    assert (p.state, p.reason, p.exit_code) == (ROLLING, "MissingNetworks", None)


def test_the_bar_shows_converged_failed_and_in_flight_cells() -> None:
    p = read_progress(
        profile_with(pods={"desired": 10, "updated": 6, "converged": 5, "failed": 1, "inFlight": 2})
    )
    bar = progress_bar(p, width=10)
    assert bar.startswith("[#####x>>..] 5/10 converged  1 failed  2 in flight")
    empty = read_progress(profile_with(pods={"desired": 0}, complete=("True", "AllPodsConverged")))
    assert progress_bar(empty, width=4).startswith("[####] 0/0")


def test_durations_read_like_kubectl_timeouts() -> None:
    assert [duration(t) for t in ("90", "90s", "10m", "1h30m", "0", "500ms")] == [
        90,
        90,
        600,
        5400,
        0,
        0.5,
    ]
    for bad in ("", "10x", "m", "-1s"):
        with pytest.raises(Exception, match="not a duration"):
            duration(bad)


# --- against the local cluster ------------------------------------------------------
# The controller runs as a process; the stand-in agent (tests/support/controller.py)
# reports on the pods it patches. `rollout status` runs as a child process with a
# pipe for stdout, so it prints plain lines.


class StatusCommand:
    """`netshift rollout status ...` as a child process, its output lines collected as they come."""

    def __init__(self, kubeconfig: str, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        self.proc = subprocess.Popen(
            [*main_python(), "rollout", "status", *args, f"--kubeconfig={kubeconfig}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def converged_counts(lines: list[str]) -> list[int]:
    return [
        int(m.group(1)) for m in (re.search(r": (\d+)/\d+ converged", line) for line in lines) if m
    ]


def steer(kubeconfig: str, verb: str, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["rollout", verb, name, f"--kubeconfig={kubeconfig}"]) == 0
    return capsys.readouterr().out


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def rollout_env(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """The controller as a process; the namespace labelled for this test's profiles and its NAD."""
    labels = {"rollout-cli": namespace}
    label_namespace(kube, namespace, labels)
    create_nad(kube, namespace, "net-b")
    controller = ControllerProcess(cluster, tmp_path, "cli", namespace)
    profiles = [f"live-{namespace}"]
    try:
        yield profiles[0], labels
    finally:
        controller.stop()
        for name in profiles:
            delete_profile(kube, name)


def test_rollout_status_follows_a_live_rollout_of_50_pods_until_complete(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    rollout_env: tuple[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, labels = rollout_env
    n = 50
    names = create_pods(kube, namespace, n)
    wait_running(kube, namespace, n, timeout=600)
    # The last pods are held (no agent report) until `status` has shown a rollout in progress,
    # so that the test does not depend on how fast the rollout is.
    held = {f"{namespace}/{p}" for p in names[-5:]}
    stand_in = StandInAgent(kube, [namespace], delay=0.1, hold=set(held)).start()
    status: StatusCommand | None = None
    try:
        create_profile(kube, name, labels=labels, maxConcurrent=5)
        status = StatusCommand(str(cluster.kubeconfig), name, "--timeout=10m")
        wait_for(
            lambda: any(0 < c < n for c in converged_counts(status.lines)),
            300,
            what="rollout status showing a rollout in progress",
        )
        assert status.proc.poll() is None  # still following
        stand_in.hold.clear()
        code = status.wait()
    finally:
        if status is not None:
            status.kill()
        stand_in.stop()
    with capsys.disabled():
        print("\n$ netshift rollout status", name, "  # exit", code)
        print("\n".join(status.lines))
    assert code == 0, status.lines
    counts = converged_counts(status.lines)
    assert counts == sorted(counts) and counts[-1] == n  # progress only ever goes up
    assert f"all {n} pods converged" in status.lines[-1] and "rolled out" in status.lines[-1]
    assert profile_status(kube, name)["pods"]["converged"] == n


def test_pause_stops_new_starts_and_resume_finishes(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    rollout_env: tuple[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, labels = rollout_env
    kubeconfig = str(cluster.kubeconfig)
    names = create_pods(kube, namespace, 8)
    wait_running(kube, namespace, 8)
    keys = {f"{namespace}/{p}" for p in names}
    stand_in = StandInAgent(kube, [namespace], delay=0.1, hold=set(keys)).start()
    try:
        create_profile(kube, name, labels=labels, maxConcurrent=2)
        wait_for(lambda: len(started(kube, namespace)) == 2, 60, what="2 pods started")
        paused_at = datetime.now(UTC)
        assert steer(kubeconfig, "pause", name, capsys) == (
            f"networkprofile.netshift.io/{name} paused\n"
        )
        wait_for(
            lambda: condition(profile_status(kube, name), "Progressing").get("reason") == "Paused",
            60,
            what="the controller saw the pause",
        )
        stand_in.hold.clear()  # the two in flight finish while paused
        wait_for(
            lambda: profile_status(kube, name).get("pods", {}).get("converged") == 2,
            60,
            what="the two started pods converged",
        )
        # While paused, `status` reports it and times out (exit 2): nothing moves.
        waiting = StatusCommand(kubeconfig, name, "--timeout=3s")
        assert waiting.wait(60) == 2, waiting.lines
        assert any("Paused" in line for line in waiting.lines)
        assert "timed out after 3s" in waiting.lines[-1]
        first = started(kube, namespace)
        assert len(first) == 2

        resumed_at = datetime.now(UTC)
        assert steer(kubeconfig, "resume", name, capsys).endswith(" resumed\n")
        finishing = StatusCommand(kubeconfig, name, "--timeout=5m")
        assert finishing.wait() == 0, finishing.lines
    finally:
        stand_in.stop()
    stamps = started(kube, namespace)
    assert set(stamps) == set(names)
    # The pods' own start stamps: two before the pause, none while paused, the rest after resume.
    assert all(parse_stamp(stamps[p]) < paused_at for p in first)
    later = [parse_stamp(s) for p, s in stamps.items() if p not in first]
    assert len(later) == 6 and all(s >= resumed_at for s in later)


def started(kube: Kube, namespace: str) -> dict[str, str]:
    return {
        n: a[ROLLOUT_STARTED_KEY]
        for n, a in annotations_of(kube, namespace).items()
        if ROLLOUT_STARTED_KEY in a
    }


def test_rollout_status_exits_one_when_max_failures_is_reached(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    rollout_env: tuple[str, dict[str, str]],
) -> None:
    name, labels = rollout_env
    names = create_pods(kube, namespace, 4)
    wait_running(kube, namespace, 4)
    stand_in = StandInAgent(kube, [namespace], delay=0.1, fail={f"{namespace}/{names[0]}"}).start()
    try:
        create_profile(kube, name, labels=labels, maxConcurrent=1, maxFailures=1)
        status = StatusCommand(str(cluster.kubeconfig), name, "--timeout=5m")
        code = status.wait()
    finally:
        stand_in.stop()
    assert code == 1, status.lines
    assert "FailureThresholdReached" in status.lines[-2]
    assert "rollout failed" in status.lines[-1]


def test_rollout_of_a_profile_that_does_not_exist_exits_one(cluster: LocalCluster) -> None:
    assert main(["rollout", "pause", "no-such-profile", f"--kubeconfig={cluster.kubeconfig}"]) == 1


def test_on_a_terminal_rollout_status_draws_a_progress_bar(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    rollout_env: tuple[str, dict[str, str]],
) -> None:
    name, labels = rollout_env
    create_pods(kube, namespace, 3)
    wait_running(kube, namespace, 3)
    stand_in = StandInAgent(kube, [namespace], delay=0.1).start()
    leader, follower = pty.openpty()
    try:
        create_profile(kube, name, labels=labels, maxConcurrent=3)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        proc = subprocess.Popen(
            [*main_python(), "rollout", "status", name, f"--kubeconfig={cluster.kubeconfig}"],
            stdout=follower,
            stderr=follower,
            env=env,
        )
        code = proc.wait(timeout=300)
        os.close(follower)
        output = b""
        with contextlib.suppress(OSError):  # EIO once the child's side is closed and drained
            while chunk := os.read(leader, 65536):
                output += chunk
    finally:
        os.close(leader)
        stand_in.stop()
    text = output.decode()
    assert code == 0, text
    assert "\r\x1b[K[" in text  # the bar is redrawn in place
    assert "[" + "#" * 30 + "] 3/3 converged" in text
    assert text.rstrip().endswith("rolled out: all 3 pods converged")
