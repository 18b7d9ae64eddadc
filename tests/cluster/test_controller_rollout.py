"""The rollout controller against the real apiserver: pods patched N at a time, status, Events.

There is no agent in the test cluster yet, so `StandInAgent` (tests/support/controller.py)
plays its part: after the controller patches a pod it writes the netshift.io/status
report the agent would write (observed = desired_hash of the annotations, phase
Converged, or Degraded for pods it is told to fail). End-to-end tests with the
real agent live elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.audit import AuditLog
from controller.reconcile import Controller, ControllerOptions
from controller.rollout import Settings
from localcluster.cluster import LocalCluster
from netshift.keys import (
    DEFAULT_NETWORK_KEY,
    INJECT_LABEL,
    INJECTED_KEY,
    NETWORKS_KEY,
    PROFILE_KEY,
    ROLLOUT_PROFILE_KEY,
    ROLLOUT_STARTED_KEY,
    SWITCH_POLICY_KEY,
)
from netshift.kube import Kube, pod_path, wait_for
from netshift.podstatus import is_settled
from support.builders import create_nad
from support.controller import (
    StandInAgent,
    annotations_of,
    audit_max_in_flight,
    condition,
    create_pods,
    create_profile,
    delete_profile,
    label_namespace,
    max_overlap,
    patch_profile,
    profile_status,
    read_audit,
    rollout_setup,
    wait_running,
)


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def controller(kube: Kube, audit_path: Path) -> Iterator[Controller]:
    audit = AuditLog(audit_path)
    c = Controller(
        kube,
        ControllerOptions(
            resync_seconds=2, settings=Settings(pod_timeout=120, orphan_max_concurrent=2)
        ),
        audit=audit,
    )
    c.start()
    assert c.wait_synced(30)
    c.enqueue_all()
    try:
        yield c
    finally:
        c.stop()
        audit.close()


@pytest.fixture
def profiles(kube: Kube) -> Iterator[list[str]]:
    """Names of the profiles a test creates; deleted afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        delete_profile(kube, name)


def make_profile(kube: Kube, profiles: list[str], name: str, **kw: Any) -> str:
    create_profile(kube, name, **kw)
    profiles.append(name)
    return name


def wait_condition(
    kube: Kube, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = profile_status(kube, name)
        c = condition(st, type_)
        if c.get("status") == status and (reason is None or c.get("reason") == reason):
            return st
        return None

    result: dict[str, Any] = wait_for(
        check, timeout, what=f"{name}: condition {type_}={status} {reason or ''}"
    )
    return result


def profile_events(kube: Kube, name: str) -> list[str]:
    items = kube.get(
        "/api/v1/namespaces/default/events", fieldSelector=f"involvedObject.name={name}"
    )["items"]
    return [e["reason"] for e in items]


def started_pods(kube: Kube, namespace: str) -> set[str]:
    return {n for n, a in annotations_of(kube, namespace).items() if ROLLOUT_STARTED_KEY in a}


def settled_ok(annotations: dict[str, str]) -> bool:
    settled, failed = is_settled(annotations)
    return settled and not failed


@contextlib.contextmanager
def agent(kube: Kube, *namespaces: str, **kw: Any) -> Iterator[StandInAgent]:
    a = StandInAgent(kube, list(namespaces), **kw).start()
    try:
        yield a
    finally:
        a.stop()


# --- a rollout -------------------------------------------------------------------


def test_a_live_rollout_keeps_at_most_max_concurrent_in_flight_and_completes(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str], audit_path: Path
) -> None:
    label_namespace(kube, namespace, {"rollout": namespace})
    create_nad(kube, namespace, "net-b")
    names = create_pods(kube, namespace, 12)
    kube.create(
        pod_path(namespace),
        {
            "metadata": {"name": "optout", "labels": {INJECT_LABEL: "disabled"}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
        },
    )
    wait_running(kube, namespace, 13)
    with agent(kube, namespace, delay=0.4) as stand_in:
        name = make_profile(
            kube,
            profiles,
            f"live-{namespace}",
            labels={"rollout": namespace},
            maxConcurrent=3,
            oldDefault="Remove",
            drainSeconds=5,
        )
        status = wait_condition(kube, name, "Complete", "True", timeout=90)

    assert status["pods"] == {
        "desired": 12,
        "updated": 12,
        "converged": 12,
        "failed": 0,
        "inFlight": 0,
    }
    assert status["selectedNamespaces"] == [namespace] and status["namespaceCount"] == 1
    assert (
        status["observedGeneration"]
        == kube.get(f"/apis/netshift.io/v1alpha1/networkprofiles/{name}")["metadata"]["generation"]
    )
    assert condition(status, "Progressing")["status"] == "False"
    assert condition(status, "Conflict")["status"] == "False"

    pods = annotations_of(kube, namespace)
    for pod_name in names:
        a = pods[pod_name]
        assert a[DEFAULT_NETWORK_KEY] == f"{namespace}/net-b"
        assert a[PROFILE_KEY] == name and a[ROLLOUT_PROFILE_KEY] == name
        assert a[SWITCH_POLICY_KEY] == '{"drainSeconds":5.0,"oldDefault":"Remove"}'
        assert settled_ok(a)
    assert DEFAULT_NETWORK_KEY not in pods["optout"] and ROLLOUT_STARTED_KEY not in pods["optout"]

    # Never more than 3 in flight: from the timestamps (patch time → agent report) ...
    intervals = stand_in.in_flight_intervals()
    assert len(intervals) == 12
    assert 2 <= max_overlap(intervals) <= 3
    # ... and from the controller's audit log, where every pod starts exactly once.
    records = read_audit(audit_path)
    assert audit_max_in_flight(records, name) <= 3
    starts = [r["pod"] for r in records if r["profile"] == name and r["event"] == "start"]
    assert sorted(starts) == sorted(f"{namespace}/{n}" for n in names)
    events = profile_events(kube, name)
    assert "RolloutStarted" in events and "RolloutComplete" in events


def test_status_is_written_only_when_it_changes(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str]
) -> None:
    rollout_setup(kube, namespace, 2)
    with agent(kube, namespace, delay=0.1):
        name = make_profile(kube, profiles, f"quiet-{namespace}", labels={"rollout": namespace})
        wait_condition(kube, name, "Complete", "True")
        path = f"/apis/netshift.io/v1alpha1/networkprofiles/{name}"
        before = kube.get(path)["metadata"]["resourceVersion"]
        pods_before = {
            n: p["metadata"]["resourceVersion"]
            for n, p in ((p["metadata"]["name"], p) for p in kube.get(pod_path(namespace))["items"])
        }
        time.sleep(5)  # more than two resync periods of the test controller
        assert kube.get(path)["metadata"]["resourceVersion"] == before
        after = {
            p["metadata"]["name"]: p["metadata"]["resourceVersion"]
            for p in kube.get(pod_path(namespace))["items"]
        }
        assert after == pods_before


# --- what stops a rollout -------------------------------------------------------------


def test_pausing_stops_new_starts_and_resuming_carries_on(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str]
) -> None:
    names = rollout_setup(kube, namespace, 6)
    keys = {f"{namespace}/{n}" for n in names}
    with agent(kube, namespace, delay=0.1, hold=set(keys)) as stand_in:
        name = make_profile(
            kube, profiles, f"pause-{namespace}", labels={"rollout": namespace}, maxConcurrent=2
        )
        wait_for(lambda: len(started_pods(kube, namespace)) == 2, 30, what="2 pods started")
        patch_profile(kube, name, {"rollout": {"paused": True}})
        wait_condition(kube, name, "Progressing", "False", "Paused")
        first = started_pods(kube, namespace)
        stand_in.hold.clear()  # the two in flight finish while paused
        wait_for(
            lambda: profile_status(kube, name).get("pods", {}).get("converged") == 2,
            30,
            what="the two started pods converged",
        )
        time.sleep(2)
        assert started_pods(kube, namespace) == first
        assert condition(profile_status(kube, name), "Progressing")["reason"] == "Paused"

        patch_profile(kube, name, {"rollout": {"paused": False}})
        status = wait_condition(kube, name, "Complete", "True")
    assert status["pods"]["converged"] == 6
    assert started_pods(kube, namespace) == set(names)


def test_failures_reaching_max_failures_halt_the_rollout(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str]
) -> None:
    names = rollout_setup(kube, namespace, 6)
    failing = {f"{namespace}/p00", f"{namespace}/p01"}
    with agent(kube, namespace, delay=0.2, fail=failing):
        name = make_profile(
            kube,
            profiles,
            f"fail-{namespace}",
            labels={"rollout": namespace},
            maxConcurrent=2,
            maxFailures=2,
        )
        status = wait_condition(kube, name, "Progressing", "False", "FailureThresholdReached")
        assert status["pods"]["failed"] == 2
        halted = started_pods(kube, namespace)
        # p02 may have started when p00's failure freed its slot, before p01 failed.
        assert {"p00", "p01"} <= halted <= {"p00", "p01", "p02"}
        time.sleep(2)
        assert started_pods(kube, namespace) == halted
        events = profile_events(kube, name)
        assert "RolloutHalted" in events and events.count("PodFailed") == 2

        # Lifting the limit lets the rest through; the two failures stay failures.
        patch_profile(kube, name, {"rollout": {"maxFailures": 0}})
        status = wait_condition(kube, name, "Complete", "False", "PodsFailed")
    assert status["pods"] == {
        "desired": 6,
        "updated": 6,
        "converged": 4,
        "failed": 2,
        "inFlight": 0,
    }
    assert started_pods(kube, namespace) == set(names)
    assert "p00" in condition(status, "Complete")["message"]


def test_a_missing_network_holds_the_rollout_until_its_nad_exists(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str]
) -> None:
    rollout_setup(kube, namespace, 2, nads=())
    with agent(kube, namespace, delay=0.1):
        name = make_profile(
            kube,
            profiles,
            f"nad-{namespace}",
            labels={"rollout": namespace},
            networks=[{"name": "side", "interface": "side0"}],
        )
        status = wait_condition(kube, name, "Progressing", "False", "MissingNetworks")
        message = condition(status, "Progressing")["message"]
        assert f"{namespace}/net-b" in message and f"{namespace}/side" in message
        assert started_pods(kube, namespace) == set()
        create_nad(kube, namespace, "net-b")
        create_nad(kube, namespace, "side")
        wait_condition(kube, name, "Complete", "True")
    for a in annotations_of(kube, namespace).values():
        assert a[NETWORKS_KEY] == f"{namespace}/side@side0"


# --- namespaces changing hands ----------------------------------------------------------


def test_the_losing_profile_reports_a_conflict_naming_the_winner(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str]
) -> None:
    label_namespace(kube, namespace, {"rollout": namespace})
    low = make_profile(
        kube, profiles, f"low-{namespace}", labels={"rollout": namespace}, priority=1
    )
    high = make_profile(
        kube, profiles, f"high-{namespace}", labels={"rollout": namespace}, priority=5
    )
    status = wait_condition(kube, low, "Conflict", "True")
    message = condition(status, "Conflict")["message"]
    assert f'namespace {namespace} is governed by NetworkProfile "{high}"' in message
    assert status["selectedNamespaces"] == [] and status["namespaceCount"] == 0
    winner = wait_condition(kube, high, "Conflict", "False")
    assert winner["selectedNamespaces"] == [namespace]
    wait_for(lambda: "Conflict" in profile_events(kube, low), 10, what="Conflict event")


def test_a_higher_priority_profile_takes_the_pods_over(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str]
) -> None:
    rollout_setup(kube, namespace, 3, nads=("net-b", "net-c"))
    with agent(kube, namespace, delay=0.1):
        first = make_profile(kube, profiles, f"first-{namespace}", labels={"rollout": namespace})
        wait_condition(kube, first, "Complete", "True")
        second = make_profile(
            kube,
            profiles,
            f"second-{namespace}",
            labels={"rollout": namespace},
            default="net-c",
            priority=10,
        )
        wait_condition(kube, second, "Complete", "True")
        wait_condition(kube, first, "Conflict", "True")
    for a in annotations_of(kube, namespace).values():
        assert a[DEFAULT_NETWORK_KEY] == f"{namespace}/net-c"
        assert a[PROFILE_KEY] == second and settled_ok(a)


def test_relabelling_the_namespace_hands_the_pods_back(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str]
) -> None:
    rollout_setup(kube, namespace, 3)
    with agent(kube, namespace, delay=0.1):
        name = make_profile(kube, profiles, f"relabel-{namespace}", labels={"rollout": namespace})
        wait_condition(kube, name, "Complete", "True")
        label_namespace(kube, namespace, {"rollout": None})

        def handed_back() -> bool:
            pods = annotations_of(kube, namespace).values()
            return all(PROFILE_KEY not in a and settled_ok(a) for a in pods)

        wait_for(handed_back, 60, what="pods handed back")
        status = wait_for(
            lambda: (s := profile_status(kube, name)).get("namespaceCount") == 0 and s, 30
        )
    assert status["pods"]["desired"] == 0
    for a in annotations_of(kube, namespace).values():
        assert DEFAULT_NETWORK_KEY not in a and INJECTED_KEY not in a


def test_deleting_a_profile_takes_its_networks_back(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str], audit_path: Path
) -> None:
    rollout_setup(kube, namespace, 4)
    with agent(kube, namespace, delay=0.3):
        name = make_profile(kube, profiles, f"gone-{namespace}", labels={"rollout": namespace})
        wait_condition(kube, name, "Complete", "True")
        delete_profile(kube, name)

        def handed_back() -> bool:
            pods = annotations_of(kube, namespace).values()
            return all(
                DEFAULT_NETWORK_KEY not in a and PROFILE_KEY not in a and settled_ok(a)
                for a in pods
            )

        wait_for(handed_back, 60, what="pods handed back")
    # The hand-back of a deleted profile runs --orphan-max-concurrent (2 here) at a time.
    records = [r for r in read_audit(audit_path) if r["profile"] == name]
    assert len([r for r in records if r["event"] == "start"]) == 8  # 4 rolled out, 4 back
    assert audit_max_in_flight(records, name) <= 3


def test_profiles_deleted_with_their_crd_are_not_handed_back(
    kube: Kube,
    cluster: LocalCluster,
    namespace: str,
    controller: Controller,
    profiles: list[str],
    audit_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deleting the NetworkProfile CRD (an uninstall, `kubectl delete -k manifests/`) deletes
    every profile while the controller may still run: it must not start detaching networks
    from running pods then, with the agents themselves going away. A reinstall of the CRD
    without the profile hands the pods back (the CI run that saw 4 starts here had counted
    after the reinstall, racing that documented hand-back)."""
    rollout_setup(kube, namespace, 2)
    with agent(kube, namespace, delay=0.3):
        name = make_profile(kube, profiles, f"crd-{namespace}", labels={"rollout": namespace})
        wait_condition(kube, name, "Complete", "True")
        before = annotations_of(kube, namespace)
        caplog.set_level(logging.INFO, logger="controller.reconcile")
        try:
            cluster.kubectl("delete", "crd", "networkprofiles.netshift.io", "--wait=true")
            wait_for(
                lambda: "CRD is being deleted; no hand-back" in caplog.text,
                30,
                what="the controller to hold the hand-back",
            )
            assert annotations_of(kube, namespace) == before
            starts = [r for r in read_audit(audit_path) if r["event"] == "start"]
            assert len(starts) == 2  # the two of the rollout; none back
        finally:
            cluster.plane.install_crds()
        # The CRD back without the profile is a reinstall (docs/controller.md): from then on
        # the pods of the profile that no longer exists are handed back, as after any delete.
        wait_for(
            lambda: len([r for r in read_audit(audit_path) if r["event"] == "start"]) == 4,
            90,
            what="the hand-back once the CRD is installed again",
        )


# --- the patch itself ------------------------------------------------------------------------


def test_a_pod_changed_since_it_was_read_is_not_overwritten(
    kube: Kube, namespace: str, controller: Controller, profiles: list[str], audit_path: Path
) -> None:
    """The patch carries the resourceVersion it was planned from: a stale plan gets 409."""
    rollout_setup(kube, namespace, 1)
    key = f"{namespace}/p00"
    wait_for(lambda: controller.pods.get(key), 30, what="the pod in the controller's cache")
    controller.pods.stop()  # the controller's view of the pods lags from here on
    user_edit = f"{namespace}/mine"
    kube.patch_merge(
        pod_path(namespace, "p00"), {"metadata": {"annotations": {NETWORKS_KEY: user_edit}}}
    )
    name = make_profile(kube, profiles, f"stale-{namespace}", labels={"rollout": namespace})
    # The status is written after the patch was tried: the stale view plans the pod, not updated.
    wait_for(
        lambda: profile_status(kube, name).get("pods", {}).get("desired") == 1,
        30,
        what="the controller to plan the pod",
    )
    assert profile_status(kube, name)["pods"]["updated"] == 0
    after = kube.get(pod_path(namespace, "p00"))["metadata"]["annotations"]
    assert after[NETWORKS_KEY] == user_edit
    assert DEFAULT_NETWORK_KEY not in after and ROLLOUT_STARTED_KEY not in after
    assert not [r for r in read_audit(audit_path) if r["profile"] == name]
