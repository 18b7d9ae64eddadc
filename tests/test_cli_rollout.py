"""`netshift rollout status|pause|resume`: following and steering a profile's rollout.

Pure tests of reading the progress back from the status the controller writes
(controller.progress), then the commands against the local cluster with the
controller running as a process and the stand-in agent reporting.
"""

from __future__ import annotations

from typing import Any

import pytest

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
