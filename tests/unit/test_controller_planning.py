"""Rollout planning, pure: which pods a profile's rollout patches, and when (no cluster)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.reconcile import ChangesMemo
from controller.rollout import (
    BLOCKED_FAILURES,
    BLOCKED_IGNORE,
    BLOCKED_INVALID,
    BLOCKED_PAUSED,
    IN_FLIGHT,
    INVALID,
    WAITING,
    RolloutPlan,
    plan_rollout,
    start_patch,
)
from netshift.keys import (
    CONVERGED,
    DEFAULT_NETWORK_KEY,
    DEGRADED,
    FAILED,
    INJECT_LABEL,
    INJECTED_KEY,
    NETWORKS_KEY,
    PENDING,
    PROFILE_KEY,
    ROLLOUT_PROFILE_KEY,
    ROLLOUT_STARTED_KEY,
    STATUS_KEY,
    SWITCH_POLICY_KEY,
)
from netshift.pod import Pod
from netshift.podstatus import parse_switch_policy
from netshift.policy import Profile
from support.controller import (
    NOW,
    STAMP,
    patched,
    plan,
    pod,
    pods,
    profile,
    reported,
    snapshot,
    start,
    states,
)

# --- starting pods -------------------------------------------------------------


def test_a_live_profile_starts_at_most_max_concurrent_pods_in_name_order() -> None:
    p = plan("blue", snapshot([profile(maxConcurrent=3)], pods(10)))
    assert [s.pod.name for s in p.starts] == ["p00", "p01", "p02"]
    assert p.counts.desired == 10 and p.counts.pending == 10 and p.counts.updated == 0
    assert p.blocked is None


def test_the_start_patch_carries_networks_switch_policy_and_rollout_marks() -> None:
    prof = profile(
        networks=[{"name": "side", "interface": "side0"}], oldDefault="Remove", drainSeconds=30
    )
    p = plan("blue", snapshot([prof], pods(1)))
    patch = start_patch(p.starts[0], "blue", STAMP)
    assert patch[DEFAULT_NETWORK_KEY] == "ns1/net-b"
    assert patch[NETWORKS_KEY] == "ns1/side@side0"
    assert patch[PROFILE_KEY] == "blue"
    assert INJECTED_KEY in patch
    policy = parse_switch_policy({SWITCH_POLICY_KEY: str(patch[SWITCH_POLICY_KEY])})
    assert (policy.old_default, policy.drain_seconds) == ("Remove", 30.0)
    assert patch[ROLLOUT_STARTED_KEY] == STAMP
    assert patch[ROLLOUT_PROFILE_KEY] == "blue"


def test_pods_in_flight_use_up_the_budget() -> None:
    prof = profile(maxConcurrent=3)
    all_pods = pods(10)
    first = plan("blue", snapshot([prof], all_pods))
    after = [start(p, first) if p.name in ("p00", "p01", "p02") else p for p in all_pods]
    second = plan("blue", snapshot([prof], after))
    assert second.starts == ()
    assert second.counts.in_flight == 3
    assert states(second)["ns1/p00"] == IN_FLIGHT
    assert second.counts.updated == 3


def test_a_settled_pod_frees_its_slot_and_counts_as_converged() -> None:
    prof = profile(maxConcurrent=3)
    all_pods = pods(10)
    first = plan("blue", snapshot([prof], all_pods))
    after = [start(p, first) if p.name in ("p00", "p01", "p02") else p for p in all_pods]
    after[0] = reported(after[0])
    third = plan("blue", snapshot([prof], after))
    assert [s.pod.name for s in third.starts] == ["p03"]
    assert third.counts.converged == 1 and third.counts.in_flight == 2


def test_a_converged_pod_is_never_patched_again() -> None:
    prof = profile()
    p0 = pod("ns1", "p00")
    p0 = reported(start(p0, plan("blue", snapshot([prof], [p0]))))
    again = plan("blue", snapshot([prof], [p0]))
    assert again.starts == ()
    assert states(again) == {"ns1/p00": CONVERGED}


def test_a_pod_that_already_carries_the_profile_waits_for_the_agent_without_a_slot() -> None:
    """E.g. a pod the webhook gave the profile at creation: nothing to patch, not ours."""
    prof = profile(maxConcurrent=1)
    injected = start(pod("ns1", "new"), plan("blue", snapshot([prof], [pod("ns1", "new")])))
    injected = patched(injected, {ROLLOUT_STARTED_KEY: None, ROLLOUT_PROFILE_KEY: None})
    p = plan("blue", snapshot([prof], [injected, pod("ns1", "old")]))
    assert states(p) == {"ns1/new": WAITING, "ns1/old": PENDING}
    assert [s.pod.name for s in p.starts] == ["old"]


def test_a_pod_in_flight_gets_a_newer_wish_without_taking_a_new_slot() -> None:
    old = profile(maxConcurrent=1)
    p0, p1 = pods(2)
    p0 = start(p0, plan("blue", snapshot([old], [p0, p1])))
    new = profile(default="net-c", maxConcurrent=1)
    p = plan("blue", snapshot([new], [p0, p1]))
    assert [s.pod.name for s in p.starts] == ["p00"]
    assert p.starts[0].changes[DEFAULT_NETWORK_KEY] == "ns1/net-c"


# --- what stops a rollout -------------------------------------------------------


def test_paused_starts_nothing() -> None:
    p = plan("blue", snapshot([profile(paused=True)], pods(4)))
    assert p.starts == () and p.blocked == BLOCKED_PAUSED
    assert p.counts.pending == 4


def test_existing_pods_ignore_patches_nothing_but_still_counts() -> None:
    p = plan("blue", snapshot([profile(existingPods="Ignore")], pods(4)))
    assert p.starts == () and p.blocked == BLOCKED_IGNORE
    assert p.counts.desired == 4 and p.counts.updated == 0


def test_failures_reaching_max_failures_stop_new_starts() -> None:
    prof = profile(maxConcurrent=2, maxFailures=2)
    all_pods = pods(6)
    first = plan("blue", snapshot([prof], all_pods))
    for i in (0, 1):
        all_pods[i] = reported(start(all_pods[i], first), DEGRADED, "bridge plugin failed")
    p = plan("blue", snapshot([prof], all_pods))
    assert p.blocked == BLOCKED_FAILURES and p.starts == ()
    assert p.counts.failed == 2
    assert next(t for t in p.targets if t.pod.name == "p00").message == "bridge plugin failed"


def test_max_failures_zero_means_no_limit() -> None:
    prof = profile(maxConcurrent=2, maxFailures=0)
    all_pods = pods(6)
    first = plan("blue", snapshot([prof], all_pods))
    for i in (0, 1):
        all_pods[i] = reported(start(all_pods[i], first), DEGRADED)
    p = plan("blue", snapshot([prof], all_pods))
    assert p.blocked is None and [s.pod.name for s in p.starts] == ["p02", "p03"]


def test_a_started_pod_without_a_report_times_out_as_failed_and_frees_its_slot() -> None:
    prof = profile(maxConcurrent=1)
    p0, p1 = pods(2)
    p0 = start(p0, plan("blue", snapshot([prof], [p0, p1])))
    early = plan(
        "blue", snapshot([prof], [p0, p1]), now=NOW + timedelta(seconds=59), pod_timeout=60
    )
    assert early.starts == () and states(early)["ns1/p00"] == IN_FLIGHT
    late = plan("blue", snapshot([prof], [p0, p1]), now=NOW + timedelta(seconds=61), pod_timeout=60)
    assert states(late)["ns1/p00"] == FAILED
    assert [s.pod.name for s in late.starts] == ["p01"]


def test_a_pod_with_unreadable_annotations_is_never_patched_and_counts_as_failed() -> None:
    bad = pod("ns1", "bad", {NETWORKS_KEY: '[{"name": '})
    p = plan("blue", snapshot([profile()], [bad]))
    assert states(p) == {"ns1/bad": INVALID}
    assert p.starts == () and p.counts.failed == 1


def test_missing_nads_hold_a_pod_back() -> None:
    prof = profile(networks=[{"name": "side"}])
    snap = snapshot([prof], pods(2), nads={"ns1/net-b"})
    p = plan("blue", snap)
    assert p.starts == ()
    assert p.targets[0].missing_networks == ("ns1/side",)
    assert p.counts.missing == 2
    ok = plan("blue", snapshot([prof], pods(2), nads={"ns1/net-b", "ns1/side"}))
    assert len(ok.starts) == 2


# --- which pods are targets -------------------------------------------------------


def test_only_running_staying_pod_network_pods_that_did_not_opt_out_are_targets() -> None:
    candidates = [
        pod("ns1", "ok"),
        pod("ns1", "optout", labels={INJECT_LABEL: "disabled"}),
        pod("ns1", "hostnet", host_network=True),
        pod("ns1", "pending", phase="Pending"),
        pod("ns1", "leaving", terminating=True),
        pod("elsewhere", "other"),
    ]
    namespaces = {"ns1": {"team": "a"}, "elsewhere": {}}
    p = plan("blue", snapshot([profile()], candidates, namespaces))
    assert [t.pod.name for t in p.targets] == ["ok"]
    assert p.namespaces == ("ns1",)


def test_system_namespaces_are_never_governed() -> None:
    everything = profile(labels={})
    namespaces: dict[str, dict[str, str]] = {"kube-system": {}, "netshift-system": {}, "apps": {}}
    p = plan(
        "blue", snapshot([everything], [pod("kube-system", "dns"), pod("apps", "web")], namespaces)
    )
    assert p.namespaces == ("apps",)
    assert [t.pod.key for t in p.targets] == ["apps/web"]


def test_a_losing_profile_names_the_winner_in_its_conflicts() -> None:
    low = profile("low", priority=1)
    high = profile("high", priority=5)
    tie = profile("a-tie", priority=1)
    snap = snapshot([low, high, tie], pods(1))
    p = plan("low", snap)
    assert p.namespaces == ()
    assert {(c.namespace, c.winner) for c in p.conflicts} == {("ns1", "high"), ("ns2", "high")}
    assert p.targets == ()
    assert plan("high", snap).conflicts == ()


# --- namespaces changing hands ---------------------------------------------------


def converged_under(prof: Profile, p: Pod) -> Pod:
    return reported(start(p, plan(prof.name, snapshot([prof], [p]))))


def test_a_new_winner_takes_the_pods_over_from_the_old_profile() -> None:
    old = profile("old", default="net-a")
    p0 = converged_under(old, pod("ns1", "p00"))
    new = profile("new", default="net-b", priority=10)
    p = plan("new", snapshot([old, new], [p0]))
    assert [s.pod.name for s in p.starts] == ["p00"]
    changes = p.starts[0].changes
    assert changes[DEFAULT_NETWORK_KEY] == "ns1/net-b" and changes[PROFILE_KEY] == "new"
    # The old profile does not touch it: the namespace has a winner.
    assert plan("old", snapshot([old, new], [p0])).starts == ()


def test_a_deleted_profile_hands_its_pods_back_a_few_at_a_time() -> None:
    prof = profile("gone", maxConcurrent=10)
    mine = [converged_under(prof, p) for p in pods(4)]
    p = plan("gone", snapshot([], mine), orphan_max_concurrent=2)
    assert p.profile is None
    assert [s.pod.name for s in p.starts] == ["p00", "p01"]
    changes = p.starts[0].changes
    assert changes[DEFAULT_NETWORK_KEY] is None and changes[PROFILE_KEY] is None
    assert changes[INJECTED_KEY] is None
    assert p.counts.leaving == 4 and p.counts.desired == 0


def test_handed_back_pods_in_flight_hold_their_slots_until_the_agent_reports() -> None:
    prof = profile("gone")
    mine = [converged_under(prof, p) for p in pods(3)]
    first = plan("gone", snapshot([], mine), orphan_max_concurrent=1)
    mine[0] = start(mine[0], first)
    second = plan("gone", snapshot([], mine), orphan_max_concurrent=1)
    assert second.starts == () and second.counts.in_flight == 1
    mine[0] = reported(mine[0])
    third = plan("gone", snapshot([], mine), orphan_max_concurrent=1)
    assert [s.pod.name for s in third.starts] == ["p01"] and third.counts.in_flight == 0


def test_an_unselected_live_profile_hands_its_pods_back() -> None:
    prof = profile("blue")
    p0 = converged_under(prof, pod("ns1", "p00"))
    p = plan("blue", snapshot([prof], [p0], {"ns1": {}}))
    assert [s.pod.name for s in p.starts] == ["p00"] and p.namespaces == ()


def test_an_unselected_ignore_profile_leaves_its_pods_alone() -> None:
    live = profile("blue")
    p0 = converged_under(live, pod("ns1", "p00"))
    ignore = profile("blue", existingPods="Ignore")
    p = plan("blue", snapshot([ignore], [p0], {"ns1": {}}))
    assert p.starts == () and p.leaving == ()


def test_an_unreadable_profile_hands_nothing_back() -> None:
    p0 = converged_under(profile("blue"), pod("ns1", "p00"))
    snap = snapshot([], [p0], invalid_profiles={"blue": 'spec.mode: "x" is not supported'})
    p = plan("blue", snap)
    assert p.starts == () and p.blocked == BLOCKED_INVALID


# --- a whole rollout, simulated --------------------------------------------------


def simulate(
    n: int, max_concurrent: int, settle_order: list[int], fail: set[int]
) -> tuple[int, dict[str, int], RolloutPlan]:
    """Run plan → patch → agent rounds until nothing changes; the agent settles pods in the
    given order of preference. Returns the highest in-flight count, starts per pod, final plan."""
    prof = profile(maxConcurrent=max_concurrent)
    state = {p.key: p for p in pods(n)}
    starts: dict[str, int] = {}
    highest = 0
    for _round in range(4 * n + 10):
        p = plan("blue", snapshot([prof], list(state.values())))
        for s in p.starts:
            state[s.pod.key] = start(state[s.pod.key], p)
            starts[s.pod.key] = starts.get(s.pod.key, 0) + 1
        in_flight = [
            k
            for k, v in state.items()
            if v.annotations.get(ROLLOUT_STARTED_KEY) and not v.annotations.get(STATUS_KEY)
        ]
        highest = max(highest, len(in_flight))
        if not in_flight and not p.starts:
            return highest, starts, p
        # The agent finishes one in-flight pod per round, chosen by the order.
        index = settle_order[_round % len(settle_order)] % len(in_flight)
        key = sorted(in_flight)[index]
        number = int(key.rsplit("p", 1)[1])
        state[key] = reported(state[key], DEGRADED if number in fail else CONVERGED)
    raise AssertionError("the rollout did not finish")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 25),
    max_concurrent=st.integers(1, 6),
    settle_order=st.lists(st.integers(0, 10), min_size=1, max_size=10),
    fail=st.sets(st.integers(0, 24), max_size=4),
)
def test_a_rollout_never_exceeds_max_concurrent_and_starts_every_pod_once(
    n: int, max_concurrent: int, settle_order: list[int], fail: set[int]
) -> None:
    highest, starts, final = simulate(n, max_concurrent, settle_order, fail)
    assert highest <= max_concurrent
    assert sorted(starts) == [f"ns1/p{i:02d}" for i in range(n)]
    assert set(starts.values()) == {1}
    failed = {i for i in fail if i < n}
    assert final.counts.failed == len(failed)
    assert final.counts.converged == n - len(failed)
    assert final.counts.in_flight == 0 and final.starts == ()


def test_the_plan_depends_only_on_the_cluster_so_a_restart_plans_the_same() -> None:
    prof = profile(maxConcurrent=2)
    all_pods = pods(5)
    first = plan("blue", snapshot([prof], all_pods))
    all_pods[0] = reported(start(all_pods[0], first))
    all_pods[1] = start(all_pods[1], first)
    a = plan("blue", snapshot([prof], all_pods))
    b = plan("blue", snapshot([prof], list(reversed(all_pods))))
    assert a == b
    assert [s.pod.name for s in a.starts] == ["p02"]
    assert json.loads(json.dumps(states(a))) == {
        "ns1/p00": CONVERGED,
        "ns1/p01": IN_FLIGHT,
        "ns1/p02": PENDING,
        "ns1/p03": PENDING,
        "ns1/p04": PENDING,
    }


def test_the_controllers_changes_memo_plans_as_without_it_and_follows_pod_versions() -> None:
    """ChangesMemo remembers per pod version and profile object; a new version is computed."""
    memo = ChangesMemo()
    prof = profile(maxConcurrent=10)
    v1 = [replace(p, resource_version="1") for p in pods(3)]
    snap = snapshot([prof], v1)
    assert plan_rollout("blue", snap, NOW, None, memo) == plan("blue", snap)
    # The same pods, now on the profile by hand, at a new version: nothing left to patch.
    on_profile = [replace(start(p, plan("blue", snap)), resource_version="2") for p in v1]
    again = snapshot([prof], on_profile)
    assert plan_rollout("blue", again, NOW, None, memo) == plan("blue", again)
    assert plan_rollout("blue", again, NOW, None, memo).starts == ()
    # A new profile object (any profile changed) is never answered from the old one's entries.
    moved = profile(default="net-c", maxConcurrent=10)
    assert plan_rollout("blue", snapshot([moved], on_profile), NOW, None, memo).starts != ()
