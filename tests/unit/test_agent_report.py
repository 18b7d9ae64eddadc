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


def test_a_retired_default_leaves_the_status_lists_and_is_named_as_retained() -> None:
    from dataclasses import replace

    from agent.outcomes import Refused, Retired
    from agent.plan import Current, Retire
    from netshift.annotations import NetworkRef, NetworkStatusEntry
    from netshift.keys import ATTACHED, DEFAULT, RETIRED_DEFAULT
    from netshift.podstatus import parse_status

    def result(ip: str, ifname: str) -> dict[str, object]:
        return {
            "interfaces": [{"name": ifname, "sandbox": "/n"}],
            "ips": [{"address": ip, "interface": 0}],
        }

    old = replace(
        record("eth0", "cluster"),
        state=ATTACHED,
        role=RETIRED_DEFAULT,
        result=result("10.244.0.7/24", "eth0"),
    )
    new = replace(
        record("net1", "ns/new"),
        state=ATTACHED,
        role=DEFAULT,
        result=result("10.250.0.3/24", "net1"),
    )
    multus = NetworkStatusEntry(name="cluster", interface="eth0", ips=["10.244.0.7"], default=True)
    action = Retire(Current(NetworkRef("", "cluster"), "eth0", ATTACHED), "net1", ("10.244.0.7",))
    report = build_report(
        {DEFAULT_NETWORK_KEY: "ns/new"},
        [multus],
        [old, new],
        [Retired(action, old), Refused("net2", "ns/x", "its plugin 'macvlan' cannot")],
        (),
        NOW,
    )
    status = parse_status(dict(report.changes))  # type: ignore[arg-type]
    assert status is not None
    assert [a.interface for a in status.attachments] == ["net1"]
    assert status.retained == ["10.244.0.7/24"]
    assert '"eth0"' not in str(report.changes.get("k8s.v1.cni.cncf.io/network-status"))
    assert [(e.reason, e.type) for e in report.events] == [
        ("OldDefaultRetired", "Normal"),
        ("RemoveRefused", "Warning"),
    ]
    assert "10.244.0.7" in report.events[0].message and "macvlan" in report.events[1].message
