"""A NAD added or mended after a pod asked for it: the agent attaches it at the NAD's event.

The agent of this module waits an hour before it tries a failed attachment again
(`--retry-base-seconds`), so within a test only the NAD's event (or the agent's
start-up) can explain a second attempt: each test asserts on the agent's records
and report (attempt 2, attached), never on how long it took.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from localcluster.cluster import LocalCluster
from netshift import keys
from netshift.kube import Kube, nad_path
from support.agent import (
    DEFAULT_NETWORK,
    NETWORKS,
    AgentProcess,
    Networks,
    agent_status,
    annotate,
    attachment,
    create_running_pod,
    default_route_ifnames,
    interfaces,
    netns_of,
    wait_settled,
)

HOUR = 3600.0
UNKNOWN_PLUGIN = json.dumps({"cniVersion": "1.0.0", "name": "blue", "type": "no-such-plugin-here"})


@pytest.fixture(scope="module")
def agent(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    proc = AgentProcess(
        cluster,
        tmp_path_factory.mktemp("agent-nad-events"),
        extra_args=(f"--retry-base-seconds={HOUR}", f"--retry-max-seconds={HOUR}"),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def failed_first(
    kube: Kube, namespace: str, agent: AgentProcess, uid: str, interface: str, reason: str
) -> None:
    """The pod's first attempt at `interface` failed for `reason` and waits an hour."""
    pod = wait_settled(kube, namespace, "web", keys.DEGRADED)
    report = agent_status(pod)
    assert report is not None and reason in report.message, report
    record = agent.records(uid)[interface]
    assert record["state"] == keys.FAILED and reason in record["message"], record
    assert record["attempts"] == 1 and record["retry_at"] - record["updated_at"] >= HOUR - 1


def test_a_nad_created_after_the_annotation_is_attached_at_its_creation(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    failed_first(kube, namespace, agent, uid, "data0", "does not exist")

    nets.bridge("blue")
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    report = agent_status(pod)
    assert report is not None and attachment(report, "data0").state == keys.ATTACHED
    assert agent.records(uid)["data0"]["attempts"] == 2  # the NAD's event, not the backoff
    data0 = interfaces(path)["data0"]
    assert data0.up and any(nets.in_subnet("blue", a) for a in data0.addresses), data0


def test_a_nad_mended_after_a_failed_attachment_is_attached_at_its_change(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    nets.raw("blue", UNKNOWN_PLUGIN)
    nets.bridge("good")  # a working config to mend blue with
    good = kube.get(nad_path(namespace, "good"))["spec"]["config"]
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    failed_first(kube, namespace, agent, uid, "data0", "'no-such-plugin-here' not found")

    kube.patch_merge(nad_path(namespace, "blue"), {"spec": {"config": good}})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    assert agent.records(uid)["data0"]["attempts"] == 2
    assert any(nets.in_subnet("good", a) for a in interfaces(path)["data0"].addresses)


def test_a_default_network_created_after_the_annotation_is_switched_to_at_its_creation(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    annotate(kube, namespace, "web", {DEFAULT_NETWORK: f"{namespace}/fast"})
    failed_first(kube, namespace, agent, uid, "net1", "does not exist")
    assert default_route_ifnames(path) == ["eth0"]

    nets.bridge("fast", is_gateway=True, default_route=True)  # a default network gives one
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    report = agent_status(pod)
    assert report is not None and report.default_network == f"{namespace}/fast"
    assert agent.records(uid)["net1"]["attempts"] == 2
    assert default_route_ifnames(path) == ["net1"]


def test_a_nad_created_while_the_agent_was_down_is_attached_when_it_starts(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    failed_first(kube, namespace, agent, uid, "data0", "does not exist")

    agent.stop()
    try:
        nets.bridge("blue")
    finally:
        agent.start()
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    assert agent.records(uid)["data0"]["attempts"] == 2  # at start-up, not after the hour
    assert "data0" in interfaces(path)
