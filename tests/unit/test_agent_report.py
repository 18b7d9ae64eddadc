"""Which Events the agent's report carries for a default switch: per pod, or the rollout's.

A switch that a controller rollout drove is told once, on the NetworkProfile
(the controller's RolloutStarted / RolloutComplete); the pod itself gets no
Normal Event for it. A switch someone made by hand keeps its Event on the pod,
and failures are Warnings on the pod whoever asked.
"""

from __future__ import annotations

from agent.outcomes import Detached, Outcome, Switched
from agent.report import build_report
from controller.rollout import PENDING, PodPlan, start_patch
from netshift.keys import DEFAULT_NETWORK_KEY, ROLLOUT_DESIRED_KEY
from netshift.pod import Pod
from netshift.podstatus import rollout_driven
from netshift.records import AttachmentRecord

NOW = "2026-01-01T00:00:00Z"


def rolled_out(annotations: dict[str, str], new_default: str) -> dict[str, str]:
    """The pod's annotations after the controller's start patch moved it to `new_default`."""
    pod = Pod.from_object(
        {"metadata": {"namespace": "ns", "name": "web", "uid": "u1", "annotations": annotations}}
    )
    patch = start_patch(PodPlan(pod, PENDING, {DEFAULT_NETWORK_KEY: new_default}), "blue", NOW)
    return {**annotations, **{k: v for k, v in patch.items() if v is not None}}


def record(interface: str, network: str) -> AttachmentRecord:
    return AttachmentRecord(
        pod_uid="u1", pod_namespace="ns", pod_name="web", network=network, interface=interface
    )


def switched() -> Switched:
    return Switched("ns/new", "net1", record("eth0", "ns/old"), "Keep", NOW)


def reasons(annotations: dict[str, str], outcomes: list[Outcome]) -> list[tuple[str, str]]:
    report = build_report(annotations, [], [], outcomes, (), NOW)
    return [(e.reason, e.type) for e in report.events]


def test_a_switch_a_rollout_drove_has_no_event_on_the_pod() -> None:
    annotations = rolled_out({DEFAULT_NETWORK_KEY: "ns/old"}, "ns/new")
    assert rollout_driven(annotations)
    assert reasons(annotations, [switched()]) == []


def test_a_switch_made_by_hand_has_its_event_on_the_pod() -> None:
    assert reasons({DEFAULT_NETWORK_KEY: "ns/new"}, [switched()]) == [
        ("DefaultNetworkSwitched", "Normal")
    ]


def test_a_hand_edit_after_a_rollout_has_its_event_on_the_pod() -> None:
    """`kubectl annotate` after the rollout: the wish no longer hashes to the rollout's mark."""
    annotations = {**rolled_out({DEFAULT_NETWORK_KEY: "ns/old"}, "ns/new")}
    annotations[DEFAULT_NETWORK_KEY] = "ns/other"
    assert ROLLOUT_DESIRED_KEY in annotations and not rollout_driven(annotations)
    assert reasons(annotations, [switched()]) == [("DefaultNetworkSwitched", "Normal")]


def test_a_failure_in_a_rollout_is_still_a_warning_on_the_pod() -> None:
    annotations = rolled_out({DEFAULT_NETWORK_KEY: "ns/old"}, "ns/new")
    failed = Detached(record("eth0", "ns/old"), attempt=2, retry_in=2.0, error="plugin failed")
    assert reasons(annotations, [failed]) == [("DetachFailed", "Warning")]
