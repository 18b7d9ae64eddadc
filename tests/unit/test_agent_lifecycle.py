"""What the agent decides before a pod's networks: release it, leave it, or converge it (pure).

The table of `plan_lifecycle` (from the pod object and what was found of its
netns), of `plan_release` (what a released pod's records get) and of
`after_release` (when to look again at what could not be released).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agent.plan import (
    NETNS_RETRY,
    RELEASE_RETRY,
    SANDBOX_RECHECK,
    TERMINATING_RECHECK,
    Current,
    Netns,
    Seen,
    Step,
    Wish,
    after_release,
    needs_netns,
    plan_lifecycle,
    plan_pod,
    plan_release,
    selection_key,
)
from netshift import keys
from netshift.annotations import NetworkRef, NetworkSelection
from netshift.keys import ATTACHED, ATTACHING, DEFAULT, DETACHING, FAILED, SECONDARY
from netshift.pod import Pod

NS = "team"


def pod(phase: str = "Running", *, terminating: bool = False, host_network: bool = False) -> Pod:
    return Pod(NS, "web", "uid-1", phase=phase, terminating=terminating, host_network=host_network)


def record(interface: str, state: str, message: str = "") -> Current:
    return Current(NetworkRef(NS, "blue"), interface, state, SECONDARY, message=message)


@dataclass(frozen=True)
class Case:
    pod: Pod | None
    netns: Netns
    step: Step
    requeue_after: float | None = None


LIFECYCLE = {
    "pod gone": Case(None, Netns.UNKNOWN, Step.RELEASE),
    "pod Succeeded": Case(pod("Succeeded"), Netns.UNKNOWN, Step.RELEASE),
    "pod Failed": Case(pod("Failed"), Netns.UNKNOWN, Step.RELEASE),
    "Failed, even while terminating": Case(
        pod("Failed", terminating=True), Netns.UNKNOWN, Step.RELEASE
    ),
    "terminating with its netns: keeps its networks through its graceful shutdown": Case(
        pod(terminating=True), Netns.FOUND, Step.KEEP, TERMINATING_RECHECK
    ),
    "terminating, netns unreadable: kept, as if still there": Case(
        pod(terminating=True), Netns.UNREADABLE, Step.KEEP, TERMINATING_RECHECK
    ),
    "terminating without its netns": Case(pod(terminating=True), Netns.ABSENT, Step.RELEASE),
    "terminating host-network pod without a netns": Case(
        pod(terminating=True, host_network=True), Netns.ABSENT, Step.RELEASE
    ),
    "host network: nothing to plug into": Case(
        pod(host_network=True), Netns.UNKNOWN, Step.KEEP, None
    ),
    "Pending: its update to Running queues it": Case(pod("Pending"), Netns.UNKNOWN, Step.KEEP),
    "running with its netns": Case(pod(), Netns.FOUND, Step.CONVERGE),
    "running, no sandbox yet": Case(pod(), Netns.ABSENT, Step.KEEP, SANDBOX_RECHECK),
    "running, the resolver fails": Case(pod(), Netns.UNREADABLE, Step.KEEP, NETNS_RETRY),
}


@pytest.mark.parametrize("case", LIFECYCLE.values(), ids=LIFECYCLE.keys())
def test_lifecycle(case: Case) -> None:
    life = plan_lifecycle(case.pod, case.netns)
    assert (life.step, life.requeue_after) == (case.step, case.requeue_after), life.why


NEEDS_NETNS = {
    "pod gone": (None, False),
    "pod Succeeded": (pod("Succeeded"), False),
    "pod Failed and terminating": (pod("Failed", terminating=True), False),
    "terminating": (pod(terminating=True), True),
    "terminating on the host network": (pod(terminating=True, host_network=True), True),
    "running": (pod(), True),
    "running on the host network": (pod(host_network=True), False),
    "Pending": (pod("Pending"), False),
}


@pytest.mark.parametrize(("the_pod", "needed"), NEEDS_NETNS.values(), ids=NEEDS_NETNS.keys())
def test_the_netns_is_looked_up_only_when_the_decision_depends_on_it(
    the_pod: Pod | None, needed: bool
) -> None:
    assert needs_netns(the_pod) is needed
    if not needed:  # whatever would have been found, the decision is the same
        steps = {plan_lifecycle(the_pod, netns).step for netns in Netns}
        assert len(steps) == 1


RELEASE = {
    "an attached record is DEL'd and kept until its DEL succeeds": (
        record("net1", ATTACHED),
        False,
    ),
    "a record cut short by a crash (Attaching) likewise": (record("net1", ATTACHING), False),
    "a record whose DEL failed before (Detaching) likewise": (
        record("net1", DETACHING, "detach failed: no"),
        False,
    ),
    "a failed DEL of a Failed record does not keep it": (record("net1", FAILED, "no plugin"), True),
    "the default network adopted at creation likewise is DEL'd": (
        Current(NetworkRef("", "netshift-cluster"), "eth0", ATTACHED, DEFAULT, adopted=True),
        False,
    ),
}


@pytest.mark.parametrize(("held", "best_effort"), RELEASE.values(), ids=RELEASE.keys())
def test_release(held: Current, best_effort: bool) -> None:
    (d,) = plan_release([held])
    assert (d.current, d.why, d.best_effort) == (held, "released", best_effort)
    assert d.retry_in == RELEASE_RETRY


def test_a_released_pod_with_nothing_held_is_done() -> None:
    assert plan_release([]) == []
    assert after_release([]) is None


def test_a_record_whose_del_keeps_failing_is_tried_again_and_never_forgotten() -> None:
    stuck = record("net1", ATTACHED)
    for _ in range(100):  # no give-up: its address stays reserved until a DEL succeeds
        (d,) = plan_release([stuck])
        assert not d.best_effort
        assert after_release([stuck]) == RELEASE_RETRY


@pytest.mark.parametrize(
    ("state", "best_effort"),
    [(ATTACHED, False), (FAILED, True)],
    ids=["an attached network is kept until its DEL succeeds", "a Failed one is swept"],
)
def test_an_unwanted_network_is_detached_best_effort_only_when_its_add_failed(
    state: str, best_effort: bool
) -> None:
    held = Current(
        NetworkRef(NS, "blue"),
        "data0",
        state,
        SECONDARY,
        key=selection_key(NetworkSelection(name="blue")),
    )
    eth0 = Current(NetworkRef("", "netshift-cluster"), "eth0", ATTACHED, DEFAULT)
    p = plan_pod(
        Wish(NS, {keys.NETWORKS_KEY: ""}, "netshift-cluster"),
        Seen([eth0, held], links=["eth0", "data0"]),
        1_000.0,
    )
    assert [(d.current.interface, d.why, d.best_effort) for d in p.detach] == [
        ("data0", "unwanted", best_effort)
    ]
