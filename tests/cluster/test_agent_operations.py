"""Operating the agent: its /metrics move with the work, and the cluster's NAD policy holds at attach.

Real apiserver, real agent process, real CNI plugins and namespaces on the node
simulator (the stand-in for kubelet + runtime; nothing here depends on a kubelet).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from netshift import keys
from netshift.kube import ApiError, Kube, wait_for
from netshift.nadpolicy import POLICY_CONFIGMAP, POLICY_KEY
from support.agent import (
    NETWORKS,
    AgentProcess,
    Networks,
    agent_status,
    annotate,
    attachment,
    create_running_pod,
    has_event,
    interfaces,
    netns_of,
    next_subnet,
    pod_events,
    wait_settled,
)
from support.builders import bridge_config

POLICY_PATH = f"/api/v1/namespaces/{keys.NETSHIFT_NAMESPACE}/configmaps"


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return 0.0


@contextlib.contextmanager
def nad_policy(kube: Kube, text: str) -> Iterator[None]:
    kube.create(POLICY_PATH, {"metadata": {"name": POLICY_CONFIGMAP}, "data": {POLICY_KEY: text}})
    try:
        yield
    finally:
        with contextlib.suppress(ApiError):
            kube.delete(f"{POLICY_PATH}/{POLICY_CONFIGMAP}")


def test_the_attach_histogram_counts_each_hot_plug_and_failures_count_by_reason(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    create_running_pod(kube, namespace, "web")
    before = agent.metrics()
    count = "netshift_agent_attach_duration_seconds_count"
    nets.bridge("blue")

    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    after = agent.metrics()
    assert sample(after, count, result="success") == sample(before, count, result="success") + 1
    assert sample(after, "netshift_agent_records") >= 1

    annotate(kube, namespace, "web", {NETWORKS: "blue@data0, nowhere@gone0"})
    wait_settled(kube, namespace, "web", keys.DEGRADED)
    failed = agent.metrics()
    missing = sample(
        failed, "netshift_agent_failures_total", operation="attach", reason="nad_missing"
    )
    assert missing >= 1
    assert sample(failed, count, result="success") == sample(after, count, result="success")


def test_a_nad_the_policy_forbids_fails_to_attach_with_a_warning_and_the_pod_keeps_the_rest(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess, tmp_path: Path
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    # Written before the policy exists (the test cluster has no admission webhook, as a
    # NAD that predates the policy had none): host-local keeps its state outside the
    # prefix the policy will allow.
    outside = tmp_path / "outside-the-allowed-prefix"
    outside.mkdir()
    legacy = bridge_config("legacy", nets.links.bridge(), next_subnet(), outside)
    nets.raw("legacy", legacy)
    before = interfaces(path)
    allowed = str(nets.workdir / "ipam")
    policy = json.dumps({"enabled": True, "ipamDataDirPrefixes": [allowed]})

    with nad_policy(kube, policy):
        wait_for(
            lambda: sample(agent.metrics(), "netshift_agent_nad_policy_enabled") == 1,
            30,
            what="the agent to see the NAD policy",
        )
        annotate(kube, namespace, "web", {NETWORKS: "blue@data0, legacy@old0"})
        pod = wait_settled(kube, namespace, "web", keys.DEGRADED)

        report = agent_status(pod)
        assert report is not None
        refused = attachment(report, "old0")
        assert refused.state == keys.FAILED
        assert "forbidden by the cluster's NAD policy" in refused.message, refused.message
        assert "dataDir" in refused.message, refused.message
        assert has_event(kube, namespace, "web", "AttachFailed", "Warning")
        warnings = [
            e["message"]
            for e in pod_events(kube, namespace, "web")
            if e["reason"] == "AttachFailed" and e["type"] == "Warning"
        ]
        assert any("forbidden by the cluster's NAD policy" in m for m in warnings), warnings
        assert attachment(report, "data0").state == keys.ATTACHED
        after = interfaces(path)
        assert set(after) == {"eth0", "data0"}
        for name in ("eth0", "data0"):
            assert after[name].index == before[name].index
            assert after[name].addresses == before[name].addresses
        assert not list(outside.iterdir()), "host-local ran for a NAD the policy forbids"
        metrics = agent.metrics()
        assert (
            sample(
                metrics, "netshift_agent_failures_total", operation="attach", reason="nad_policy"
            )
            >= 1
        )
