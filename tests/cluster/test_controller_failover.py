"""One active controller through a Lease; a killed or stopped controller is succeeded cleanly.

Controllers run as child processes (`python -m cli.main controller`) against the
test cluster, with a short lease (4 s) so that takeovers after a crash are quick.
There is no agent in the test cluster yet, so `StandInAgent` plays its part: it
writes the netshift.io/status report the agent would write once the controller
has patched a pod (observed = desired_hash of the annotations, phase Converged).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from netshift.keys import ROLLOUT_STARTED_KEY
from netshift.kube import Kube, lease_path, now_rfc3339, wait_for
from netshift.leader import LeaderElector
from netshift.podstatus import is_settled
from support.controller import (
    ControllerProcess,
    StandInAgent,
    annotations_of,
    audit_max_in_flight,
    condition,
    create_profile,
    delete_profile,
    lease_holder,
    max_overlap,
    profile_status,
    read_audit,
    rollout_setup,
    running_pods,
)


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def electors() -> Iterator[list[LeaderElector]]:
    made: list[LeaderElector] = []
    yield made
    for e in made:
        e.stop(release=False)


def elector(
    kube: Kube, namespace: str, identity: str, made: list[LeaderElector], **kw: Any
) -> LeaderElector:
    options: dict[str, Any] = {
        "lease_duration": 3.0,
        "renew_interval": 0.5,
        "retry_interval": 0.2,
    }
    options.update(kw)
    e = LeaderElector(kube, namespace, "test-lease", identity, **options)
    made.append(e)
    return e


def leader_of(*candidates: LeaderElector) -> list[str]:
    return [c.identity for c in candidates if c.is_leader()]


# --- the Lease ------------------------------------------------------------------------


def test_one_of_two_candidates_leads_and_the_other_stands_by(
    kube: Kube, namespace: str, electors: list[LeaderElector]
) -> None:
    a = elector(kube, namespace, "a", electors)
    b = elector(kube, namespace, "b", electors)
    a.start()
    wait_for(a.is_leader, 10, what="a leads")
    b.start()
    deadline = time.monotonic() + 4  # longer than the lease: a keeps renewing it
    while time.monotonic() < deadline:
        assert leader_of(a, b) == ["a"]
        time.sleep(0.1)
    lease = kube.get(lease_path(namespace, "test-lease"))["spec"]
    assert lease["holderIdentity"] == "a" and lease["leaseDurationSeconds"] == 3


def test_a_leader_that_stops_gives_the_lease_to_the_standby_at_once(
    kube: Kube, namespace: str, electors: list[LeaderElector]
) -> None:
    a = elector(kube, namespace, "a", electors, lease_duration=20.0, renew_interval=1.0)
    b = elector(kube, namespace, "b", electors, lease_duration=20.0, renew_interval=1.0)
    a.start()
    wait_for(a.is_leader, 10, what="a leads")
    b.start()
    time.sleep(0.5)
    stopped = time.monotonic()
    a.stop(release=True)
    wait_for(b.is_leader, 5, what="b leads")
    assert time.monotonic() - stopped < 5  # not the 20 s of the lease
    assert not a.is_leader()
    spec = kube.get(lease_path(namespace, "test-lease"))["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


def test_a_crashed_leader_is_replaced_only_after_the_lease_expires(
    kube: Kube, namespace: str, electors: list[LeaderElector]
) -> None:
    a = elector(kube, namespace, "a", electors)
    b = elector(kube, namespace, "b", electors)
    a.start()
    wait_for(a.is_leader, 10, what="a leads")
    b.start()
    time.sleep(0.5)
    crashed = time.monotonic()
    a.stop(release=False)  # as if killed: the Lease is left as it was
    wait_for(b.is_leader, 10, what="b leads")
    assert time.monotonic() - crashed >= 2.5  # ~ the 3 s lease, counted on b's own clock


def test_a_leader_whose_lease_is_taken_stops_leading_at_its_next_renewal(
    kube: Kube, namespace: str, electors: list[LeaderElector]
) -> None:
    stopped = threading.Event()
    a = elector(kube, namespace, "a", electors, on_stopped=stopped.set)
    a.start()
    wait_for(a.is_leader, 10, what="a leads")
    path = lease_path(namespace, "test-lease")
    lease = kube.get(path)
    lease["spec"]["holderIdentity"] = "intruder"
    lease["spec"]["renewTime"] = now_rfc3339()
    kube.put(path, lease)
    assert stopped.wait(3), "a did not notice that it lost the Lease"
    assert not a.is_leader()


def test_a_leader_that_cannot_renew_in_time_stops_leading_by_itself(
    kube: Kube, namespace: str, electors: list[LeaderElector]
) -> None:
    clock = FakeClock()
    a = elector(kube, namespace, "a", electors, renew_interval=1.0, clock=clock)
    a.start()
    wait_for(a.is_leader, 10, what="a leads")
    clock.offset += a.renew_deadline + 0.1  # as if every renewal had failed meanwhile
    assert not a.is_leader()


# --- controllers as processes ------------------------------------------------------------


@pytest.fixture
def profiles(kube: Kube) -> Iterator[list[str]]:
    """Profiles to delete after the test, once its controllers are gone (listed before
    `procs`, so torn down after it): deleting a profile makes a controller hand its
    pods back, which must not happen while the test still looks at them."""
    names: list[str] = []
    yield names
    for name in names:
        delete_profile(kube, name)


@pytest.fixture
def procs() -> Iterator[list[ControllerProcess]]:
    started: list[ControllerProcess] = []
    yield started
    for p in started:
        p.stop()


def converged(annotations: dict[str, str]) -> bool:
    settled, failed = is_settled(annotations)
    return settled and not failed and ROLLOUT_STARTED_KEY in annotations


def wait_converged(kube: Kube, namespace: str, n: int) -> None:
    """Until at least `n` pods of the namespace were started by a rollout and converged."""
    wait_for(
        lambda: sum(converged(a) for a in annotations_of(kube, namespace).values()) >= n,
        60,
        what=f"{n} pods converged",
    )


def starts_in(path: Path, profile: str) -> list[str]:
    return [r["pod"] for r in read_audit(path) if r["event"] == "start" and r["profile"] == profile]


def wait_complete(
    kube: Kube, namespace: str, name: str, stand_in: StandInAgent, timeout: float = 90
) -> dict[str, Any]:
    def complete() -> dict[str, Any] | None:
        status = profile_status(kube, name)
        return status if condition(status, "Complete").get("status") == "True" else None

    try:
        result: dict[str, Any] = wait_for(complete, timeout, what=f"{name} complete")
    except TimeoutError as err:
        pods = {
            n: (
                a.get(ROLLOUT_STARTED_KEY),
                is_settled(a),
                a.get("netshift.io/status", "")[:80],
            )
            for n, a in annotations_of(kube, namespace).items()
        }
        raise AssertionError(
            f"{err}; status {profile_status(kube, name)}; pods {pods}; "
            f"stand-in agent errors {stand_in.errors}"
        ) from None
    return result


def test_a_controller_killed_mid_rollout_is_succeeded_without_repeating_converged_pods(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    profiles: list[str],
    procs: list[ControllerProcess],
) -> None:
    names = rollout_setup(kube, namespace, 15, label="failover")
    first = ControllerProcess(cluster, tmp_path, "first", namespace)
    procs.append(first)
    wait_for(lambda: lease_holder(kube, namespace) == "first", 30, what="first leads")
    stand_in = StandInAgent(kube, [namespace], delay=0.5).start()
    name = f"kill-{namespace}"
    profiles.append(name)
    try:
        create_profile(kube, name, labels={"failover": namespace}, maxConcurrent=3)
        wait_converged(kube, namespace, 5)
        first.signal(signal.SIGKILL)
        first.wait()
        # The last reports of pods started by the dead controller may still be under way.
        time.sleep(1.0)
        at_kill = {p["metadata"]["name"]: p for p in running_pods(kube, namespace)}
        done = {
            n: (p["metadata"]["resourceVersion"], p["metadata"]["annotations"][ROLLOUT_STARTED_KEY])
            for n, p in at_kill.items()
            if converged(p["metadata"].get("annotations") or {})
        }
        not_started = [
            n
            for n, p in at_kill.items()
            if ROLLOUT_STARTED_KEY not in (p["metadata"].get("annotations") or {})
        ]
        assert not_started, "the rollout finished before the kill; nothing left to prove"

        second = ControllerProcess(cluster, tmp_path, "second", namespace)
        procs.append(second)
        status = wait_complete(kube, namespace, name, stand_in)
    finally:
        stand_in.stop()

    assert status["pods"]["converged"] == 15
    after = {p["metadata"]["name"]: p for p in running_pods(kube, namespace)}
    for n, (rv, started) in done.items():
        meta = after[n]["metadata"]
        assert meta["resourceVersion"] == rv, f"converged pod {n} was written again"
        assert meta["annotations"][ROLLOUT_STARTED_KEY] == started
    a_starts = starts_in(first.audit, name)
    b_starts = starts_in(second.audit, name)
    assert not set(a_starts) & set(b_starts)
    assert not {f"{namespace}/{n}" for n in done} & set(b_starts)
    assert set(a_starts) | set(b_starts) <= {f"{namespace}/{n}" for n in names}
    assert all(ROLLOUT_STARTED_KEY in a for a in annotations_of(kube, namespace).values())
    # Across the kill, never more than maxConcurrent in flight.
    assert max_overlap(stand_in.in_flight_intervals()) <= 3
    assert audit_max_in_flight(read_audit(first.audit), name) <= 3
    assert audit_max_in_flight(read_audit(second.audit), name) <= 3


def test_only_the_leader_patches_and_a_standby_takes_over_when_it_dies(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    profiles: list[str],
    procs: list[ControllerProcess],
) -> None:
    rollout_setup(kube, namespace, 6, label="failover")
    a = ControllerProcess(cluster, tmp_path, "a", namespace)
    procs.append(a)
    wait_for(lambda: lease_holder(kube, namespace) == "a", 30, what="a leads")
    b = ControllerProcess(cluster, tmp_path, "b", namespace)
    procs.append(b)
    wait_for(lambda: "campaigning" in b.log_text(), 30, what="b is a candidate")
    stand_in = StandInAgent(kube, [namespace], delay=0.6).start()
    name = f"standby-{namespace}"
    profiles.append(name)
    try:
        create_profile(kube, name, labels={"failover": namespace}, maxConcurrent=1)
        wait_converged(kube, namespace, 2)
        assert starts_in(a.audit, name) and not starts_in(b.audit, name)
        assert lease_holder(kube, namespace) == "a"
        a.signal(signal.SIGKILL)
        a.wait()
        wait_for(lambda: lease_holder(kube, namespace) == "b", 30, what="b leads")
        status = wait_complete(kube, namespace, name, stand_in)
    finally:
        stand_in.stop()
    assert status["pods"]["converged"] == 6
    assert starts_in(b.audit, name)
    assert not set(starts_in(a.audit, name)) & set(starts_in(b.audit, name))
    assert max_overlap(stand_in.in_flight_intervals()) <= 1


def test_a_stopping_controller_stops_patching_and_hands_the_lease_over_at_once(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    profiles: list[str],
    procs: list[ControllerProcess],
) -> None:
    slow = ("--lease-duration=20", "--renew-interval=2")
    a = ControllerProcess(cluster, tmp_path, "a", namespace, *slow)
    procs.append(a)
    wait_for(lambda: lease_holder(kube, namespace) == "a", 30, what="a leads")
    b = ControllerProcess(cluster, tmp_path, "b", namespace, *slow)
    procs.append(b)
    wait_for(lambda: "campaigning" in b.log_text(), 30, what="b is a candidate")
    stopped = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.wait(15) == 0
    wait_for(lambda: lease_holder(kube, namespace) == "b", 10, what="b leads")
    assert time.monotonic() - stopped < 10  # well within the 20 s lease
    assert "released Lease" in a.log_text()
