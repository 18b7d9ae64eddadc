"""NetworkProfile.status and Events from a rollout plan, pure (no cluster)."""

from __future__ import annotations

from typing import Any

from controller.rollout import RolloutPlan, start_patch
from controller.status import (
    ALL_CONVERGED,
    COMPLETE,
    CONFLICT,
    FINISHED,
    MISSING_NETWORKS,
    PODS_FAILED,
    PROGRESSING,
    ROLLING_OUT,
    build_status,
    condition_of,
    transition_events,
)
from netshift.keys import DEGRADED
from support.controller import STAMP, patched, plan, pods, profile, reported, snapshot

T0 = "2025-06-01T12:00:00.000000Z"
T1 = "2025-06-01T12:05:00.000000Z"


def cond(status: dict[str, Any], type_: str) -> tuple[str, str]:
    c = condition_of(status, type_)
    return str(c["status"]), str(c["reason"])


def finished_plan(n: int = 3, fail: int = 0, **rollout: Any) -> RolloutPlan:
    prof = profile(maxConcurrent=n, **rollout)
    all_pods = pods(n)
    first = plan("blue", snapshot([prof], all_pods))
    done = []
    for i, (p, s) in enumerate(zip(all_pods, first.starts, strict=True)):
        started = patched(p, start_patch(s, "blue", STAMP))
        done.append(reported(started, DEGRADED if i < fail else "Converged", "plugin said no"))
    return plan("blue", snapshot([prof], done))


def test_a_finished_rollout_is_complete_and_no_longer_progressing() -> None:
    status = build_status(finished_plan(3), 1, None, T0)
    assert status["pods"] == {
        "desired": 3,
        "updated": 3,
        "converged": 3,
        "failed": 0,
        "inFlight": 0,
    }
    assert status["selectedNamespaces"] == ["ns1", "ns2"] and status["namespaceCount"] == 2
    assert status["observedGeneration"] == 1
    assert cond(status, COMPLETE) == ("True", ALL_CONVERGED)
    assert cond(status, PROGRESSING) == ("False", FINISHED)
    assert cond(status, CONFLICT)[0] == "False"


def test_a_rollout_in_progress_is_progressing_and_not_complete() -> None:
    status = build_status(plan("blue", snapshot([profile()], pods(5))), 1, None, T0)
    assert cond(status, PROGRESSING) == ("True", ROLLING_OUT)
    assert cond(status, COMPLETE)[0] == "False"
    assert "0 of 5 pods updated" in condition_of(status, PROGRESSING)["message"]


def test_failures_at_the_threshold_stop_progress_with_their_reason() -> None:
    prof = profile(maxConcurrent=2, maxFailures=2)
    all_pods = pods(4)
    first = plan("blue", snapshot([prof], all_pods))
    for i in (0, 1):
        started = patched(all_pods[i], start_patch(first.starts[i], "blue", STAMP))
        all_pods[i] = reported(started, DEGRADED)
    status = build_status(plan("blue", snapshot([prof], all_pods)), 1, None, T0)
    assert cond(status, PROGRESSING) == ("False", "FailureThresholdReached")
    assert "rollout.maxFailures (2)" in condition_of(status, PROGRESSING)["message"]


def test_only_failures_left_say_which_pods_failed() -> None:
    status = build_status(finished_plan(3, fail=1), 1, None, T0)
    assert cond(status, COMPLETE) == ("False", PODS_FAILED)
    assert "ns1/p00 (plugin said no)" in condition_of(status, COMPLETE)["message"]


def test_paused_and_ignore_say_why_nothing_moves() -> None:
    paused = build_status(plan("blue", snapshot([profile(paused=True)], pods(2))), 1, None, T0)
    assert cond(paused, PROGRESSING) == ("False", "Paused")
    ignore = build_status(
        plan("blue", snapshot([profile(existingPods="Ignore")], pods(2))), 1, None, T0
    )
    assert cond(ignore, PROGRESSING) == ("False", "ExistingPodsIgnored")


def test_missing_networks_are_named() -> None:
    prof = profile(networks=[{"name": "side"}])
    status = build_status(plan("blue", snapshot([prof], pods(1), nads={"ns1/net-b"})), 1, None, T0)
    assert cond(status, PROGRESSING) == ("False", MISSING_NETWORKS)
    assert "ns1/side" in condition_of(status, PROGRESSING)["message"]


def test_conflict_names_the_winning_profile_and_why() -> None:
    snap = snapshot([profile("low", priority=1), profile("high", priority=5)], [])
    status = build_status(plan("low", snap), 1, None, T0)
    assert cond(status, CONFLICT) == ("True", "NamespaceGovernedByOtherProfile")
    message = condition_of(status, CONFLICT)["message"]
    assert 'namespace ns1 is governed by NetworkProfile "high" (priority 5 > 1)' in message
    tie = snapshot([profile("b", priority=1), profile("a", priority=1)], [])
    tie_message = condition_of(build_status(plan("b", tie), 1, None, T0), CONFLICT)["message"]
    assert "ties go to the first name" in tie_message


def test_last_transition_time_is_kept_while_the_status_stays_the_same() -> None:
    rollout = plan("blue", snapshot([profile()], pods(5)))
    first = build_status(rollout, 1, None, T0)
    again = build_status(rollout, 1, first, T1)
    assert again == first  # nothing to write
    done = build_status(finished_plan(3), 1, first, T1)
    assert condition_of(done, COMPLETE)["lastTransitionTime"] == T1
    assert condition_of(done, CONFLICT)["lastTransitionTime"] == T0


def test_events_follow_condition_changes_only() -> None:
    rollout = plan("blue", snapshot([profile()], pods(5)))
    first = build_status(rollout, 1, None, T0)
    started = transition_events(rollout, None, first, started=3)
    assert [e.reason for e in started] == ["RolloutStarted"]
    assert transition_events(rollout, first, first, started=3) == []
    done_plan = finished_plan(3)
    done = build_status(done_plan, 1, first, T1)
    assert [e.reason for e in transition_events(done_plan, first, done)] == ["RolloutComplete"]
    snap = snapshot([profile("low", priority=1), profile("high", priority=5)], [])
    lost = build_status(plan("low", snap), 1, None, T0)
    events = transition_events(plan("low", snap), None, lost)
    assert [(e.reason, e.type) for e in events] == [("Conflict", "Warning")]


def test_remove_onto_a_network_that_cannot_carry_the_pod_ip_is_a_false_remove_safe() -> None:
    from controller.status import POD_IPS_CARRIED, REMOVE_REFUSED, REMOVE_SAFE

    prof = profile(oldDefault="Remove", drainSeconds=5)
    plugins = {"ns1/net-b": "macvlan", "ns2/net-b": "bridge"}
    refused = build_status(
        plan("blue", snapshot([prof], pods(1), nad_plugins=plugins)), 1, None, T0
    )
    assert cond(refused, REMOVE_SAFE) == ("False", REMOVE_REFUSED)
    message = str(condition_of(refused, REMOVE_SAFE)["message"])
    assert "ns1/net-b: its network's plugin 'macvlan'" in message and "ns2" not in message
    carried = {"ns1/net-b": "ptp", "ns2/net-b": "bridge"}
    safe = build_status(plan("blue", snapshot([prof], pods(1), nad_plugins=carried)), 1, None, T0)
    assert cond(safe, REMOVE_SAFE) == ("True", POD_IPS_CARRIED)
    # Keep: no such condition at all.
    kept = build_status(
        plan("blue", snapshot([profile()], pods(1), nad_plugins=plugins)), 1, None, T0
    )
    assert condition_of(kept, REMOVE_SAFE) == {}
