"""End to end: a NetworkProfile change moves running pods to a new default network, live.

The real controller (leader-elected, as a process) and the real agent (as a
process) against the real apiserver; pods made Running by the node simulator.
There is no webhook in the test cluster, so the pods are created with the
annotations the webhook would give them: `policy.apply_profile` of the old
profile, the very function the webhook calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from localcluster.cluster import LocalCluster
from localcluster.probe import ClientNetns, Ping, Stream
from netshift import podstatus
from netshift.kube import Kube, patch_annotations, pod_path, wait_for
from support import liveswitch
from support.agent import AgentProcess, has_event, ipam_ips, next_subnet
from support.builders import PROFILES, bridge_config, create_nad, namespace_profile, unique
from support.controller import ControllerProcess, max_overlap, read_audit
from support.liveswitch import create_pods_as_admitted, on_default, pods

# The fixtures of this module: the real agent and controller, as processes.
agent = liveswitch.agent
controller = liveswitch.controller


class Networks:
    """An old and a new network (own bridge, subnet and IPAM store) and a client namespace on both."""

    def __init__(self, kube: Kube, namespace: str, tmp: Path) -> None:
        self.bridges = [unique("nsold"), unique("nsnew")]
        self.subnets = [next_subnet(), next_subnet()]
        self.ipam = tmp / "ipam"
        for name, bridge, subnet in zip(("old", "new"), self.bridges, self.subnets, strict=True):
            create_nad(
                kube,
                namespace,
                name,
                bridge_config(name, bridge, subnet, self.ipam, default_route=True, is_gateway=True),
            )
        legs = [
            (bridge, subnet.replace(".0/24", ".250/24"))
            for bridge, subnet in zip(self.bridges, self.subnets, strict=True)
        ]
        self.client = ClientNetns(unique("nscli"), legs)

    def cleanup(self) -> None:
        self.client.delete()
        for bridge in self.bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def intervals(items: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(started, settled, pod) from the controller's start stamp and the agent's report time."""
    out = []
    for p in items:
        ann = p["metadata"]["annotations"]
        st = podstatus.parse_status(ann)
        assert st is not None
        out.append(
            (
                _epoch(ann["netshift.io/rollout-started"]),
                _epoch(st.updated_at),
                p["metadata"]["name"],
            )
        )
    return out


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def profile_events(kube: Kube, name: str) -> dict[str, str]:
    """Event uid -> reason of the Events on a NetworkProfile (cluster-scoped: in default)."""
    items = kube.get(
        "/api/v1/namespaces/default/events",
        fieldSelector=f"involvedObject.name={name},involvedObject.kind=NetworkProfile",
    )["items"]
    return {e["metadata"]["uid"]: e["reason"] for e in items}


def default_route(uid: str) -> str:
    return subprocess.run(
        ["ip", "-n", f"netshift-{uid}", "-4", "route", "show", "default"],
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_a_profile_change_moves_20_running_pods_without_losing_a_probe(
    kube: Kube, namespace: str, agent: AgentProcess, controller: ControllerProcess, tmp_path: Path
) -> None:
    nets = Networks(kube, namespace, tmp_path)
    name = f"switch-{namespace}"
    prof = namespace_profile(name, namespace, "old", maxConcurrent=5)
    try:
        kube.create(PROFILES, prof)
        create_pods_as_admitted(kube, namespace, prof, 20)
        before = {
            p["metadata"]["uid"]: p
            for p in wait_for(
                lambda: on_default(kube, namespace, f"{namespace}/old", 20),
                120,
                what="20 pods on old",
            )
        }
        inodes = {uid: os.stat(f"/var/run/netns/netshift-{uid}").st_ino for uid in before}
        nets.client.create()
        pings = {uid: Ping(nets.client.name, p["status"]["podIP"]) for uid, p in before.items()}
        streams = {
            uid: Stream(f"netshift-{uid}", nets.client.name, p["status"]["podIP"], timeout=2.0)
            for uid, p in list(before.items())[:3]
        }
        # The probes run before the switch too: a 20-pod switch can take well under a
        # second, and each ping must be up (and answered) before the first pod moves.
        time.sleep(1.0)

        told_before = profile_events(kube, name)
        kube.patch_merge(f"{PROFILES}/{name}", {"spec": {"defaultNetwork": f"{namespace}/new"}})
        after = {
            p["metadata"]["uid"]: p
            for p in wait_for(
                lambda: on_default(kube, namespace, f"{namespace}/new", 20),
                120,
                what="20 pods on new",
            )
        }
        lost = {uid: ping.stop() for uid, ping in pings.items()}
        tcp = {uid: s.stop() for uid, s in streams.items()}

        assert set(after) == set(before), "pods were recreated"
        for uid, pod in after.items():
            assert os.stat(f"/var/run/netns/netshift-{uid}").st_ino == inodes[uid]
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
            assert pod["status"]["podIP"] == before[uid]["status"]["podIP"]
            st = podstatus.parse_status(pod["metadata"]["annotations"])
            assert st is not None and st.switched_at
            assert f"dev {st.default_interface}" in default_route(uid)
            assert st.default_interface != "eth0"
            status = json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
            defaults = [e for e in status if e.get("default")]
            assert [e["name"] for e in defaults] == [f"{namespace}/new"]
        for uid, (sent, dropped) in lost.items():
            assert sent > 50, f"ping to {uid} barely ran"
            assert dropped == 0, f"{dropped} of {sent} probes lost to pod {uid}"
        for uid, verdict in tcp.items():
            assert verdict["alive"], f"TCP stream to {uid} died: {verdict}"

        # Told once, on the profile (started, complete); no pod has a Normal Event of its own.
        def rollout_events() -> list[str]:
            now = profile_events(kube, name)
            return sorted(reason for uid, reason in now.items() if uid not in told_before)

        wait_for(lambda: "RolloutComplete" in rollout_events(), 30, what="RolloutComplete")
        assert rollout_events() == ["RolloutComplete", "RolloutStarted"]
        per_pod = kube.get(
            f"/api/v1/namespaces/{namespace}/events", fieldSelector="reason=DefaultNetworkSwitched"
        )["items"]
        assert per_pod == []
    finally:
        nets.cleanup()
        kube.delete(f"{PROFILES}/{name}")


def test_with_old_default_remove_the_old_interface_goes_and_its_ip_is_held_until_the_pod_goes(
    kube: Kube, namespace: str, agent: AgentProcess, controller: ControllerProcess, tmp_path: Path
) -> None:
    nets = Networks(kube, namespace, tmp_path)
    name = f"remove-{namespace}"
    prof = namespace_profile(
        name, namespace, "old", maxConcurrent=3, oldDefault="Remove", drainSeconds=1
    )
    try:
        kube.create(PROFILES, prof)
        create_pods_as_admitted(kube, namespace, prof, 3)
        wait_for(lambda: on_default(kube, namespace, f"{namespace}/old", 3), 90, what="pods on old")
        assert len(ipam_ips(nets.ipam, "old")) == 3
        kube.patch_merge(f"{PROFILES}/{name}", {"spec": {"defaultNetwork": f"{namespace}/new"}})
        moved = wait_for(
            lambda: on_default(kube, namespace, f"{namespace}/new", 3), 90, what="pods on new"
        )

        reported = {p["status"]["podIP"] for p in moved}
        assert set(ipam_ips(nets.ipam, "old")) == reported

        def drained() -> bool:
            return all(
                "eth0"
                not in subprocess.run(
                    ["ip", "-n", f"netshift-{p['metadata']['uid']}", "-br", "link"],
                    capture_output=True,
                    text=True,
                ).stdout
                for p in moved
            )

        wait_for(drained, 30, what="old interfaces removed")
        assert len(ipam_ips(nets.ipam, "new")) == 3
        # The pod IPs the node reports stay reserved in the old pool until the pods go.
        assert set(ipam_ips(nets.ipam, "old")) == reported
        for p in moved:
            kube.delete(f"/api/v1/namespaces/{namespace}/pods/{p['metadata']['name']}")
        wait_for(lambda: not ipam_ips(nets.ipam, "old"), 60, what="old IPs released")
    finally:
        nets.cleanup()
        kube.delete(f"{PROFILES}/{name}")


def test_a_100_pod_rollout_keeps_10_in_flight_and_survives_a_controller_kill(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    agent: AgentProcess,
    controller: ControllerProcess,
    tmp_path: Path,
) -> None:
    nets = Networks(kube, namespace, tmp_path)
    name = f"big-{namespace}"
    prof = namespace_profile(name, namespace, "old", maxConcurrent=10)
    successor: ControllerProcess | None = None
    try:
        kube.create(PROFILES, prof)
        create_pods_as_admitted(kube, namespace, prof, 100)
        wait_for(lambda: on_default(kube, namespace, f"{namespace}/old", 100), 240, what="100 pods")
        kube.patch_merge(f"{PROFILES}/{name}", {"spec": {"defaultNetwork": f"{namespace}/new"}})

        def started(n: int) -> bool:
            return len([r for r in read_audit(controller.audit) if r["event"] == "start"]) >= n

        wait_for(lambda: started(30), 120, what="30 pods started")
        controller.stop()  # SIGKILL, mid-rollout
        at_kill = pods(kube, namespace)
        stamps = {
            p["metadata"]["name"]: p["metadata"]["annotations"].get("netshift.io/rollout-started")
            for p in at_kill
        }
        # Pods already on the new network when the controller died: never to be redone.
        done_at_kill = {
            f"{namespace}/{p['metadata']['name']}"
            for p in at_kill
            if (st := podstatus.parse_status(p["metadata"]["annotations"]))
            and st.default_network == f"{namespace}/new"
            and podstatus.is_settled(p["metadata"]["annotations"]) == (True, False)
        }
        assert done_at_kill, "the kill came after the rollout, not in the middle"
        successor = ControllerProcess(
            cluster, tmp_path, f"succ-{uuid.uuid4().hex[:6]}", "netshift-system"
        )
        wait_for(
            lambda: on_default(kube, namespace, f"{namespace}/new", 100),
            300,
            what="100 pods on new",
        )
        audit = read_audit(controller.audit) + read_audit(successor.audit)
        # Each controller's own count when it started a pod...
        assert max(r["inflight"] for r in audit if r["event"] == "start") <= 10
        # ...and the cluster's record: from each pod's start stamp to its agent's report.
        assert max_overlap(intervals(pods(kube, namespace))) <= 10
        starts = [r["pod"] for r in audit if r["event"] == "start"]
        # Every pod was started: its start stamp is on it (a controller killed between its
        # patch and its audit line leaves the stamp but no line, rightly not redone).
        assert all(
            p["metadata"]["annotations"].get("netshift.io/rollout-started")
            for p in pods(kube, namespace)
        ), "a pod was never started"
        twice = {p for p in starts if starts.count(p) > 1}
        assert not twice & done_at_kill, [r for r in audit if r["pod"] in twice]
        for p in pods(kube, namespace):
            if f"{namespace}/{p['metadata']['name']}" in done_at_kill:
                # Converged before the kill: the successor left it alone.
                first = stamps[p["metadata"]["name"]]
                assert p["metadata"]["annotations"]["netshift.io/rollout-started"] == first
    finally:
        if successor is not None:
            successor.stop()
        nets.cleanup()
        kube.delete(f"{PROFILES}/{name}")


def test_kubectl_annotate_by_hand_switches_one_pod_without_the_controller(
    cluster: LocalCluster, kube: Kube, namespace: str, agent: AgentProcess, tmp_path: Path
) -> None:
    nets = Networks(kube, namespace, tmp_path)
    try:
        kube.create(
            pod_path(namespace),
            {
                "metadata": {"name": "solo"},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/c"}]},
            },
        )
        wait_for(
            lambda: on_default(kube, namespace, "netshift-cluster", 1),
            60,
            what="pod on the cluster network",
        )
        cluster.kubectl(
            "-n",
            namespace,
            "annotate",
            "pod",
            "solo",
            f"v1.multus-cni.io/default-network={namespace}/new",
        )
        (pod,) = wait_for(
            lambda: on_default(kube, namespace, f"{namespace}/new", 1), 60, what="pod on new"
        )
        assert "dev net1" in default_route(pod["metadata"]["uid"])
        assert has_event(kube, namespace, "solo", "DefaultNetworkSwitched", "Normal")
        patch_annotations(
            kube, pod_path(namespace, "solo"), {"v1.multus-cni.io/default-network": None}
        )
        wait_for(
            lambda: on_default(kube, namespace, "netshift-cluster", 1),
            60,
            what="back on the cluster network",
        )
        assert "dev eth0" in default_route(pod["metadata"]["uid"])
    finally:
        nets.cleanup()
