"""The agent against a real CRI runtime: sandbox identity and a recreated sandbox.

A private containerd (tests/support/cri.py) makes real sandboxes with real netns (its
CNI: bridge + host-local); the agent's own observe -> plan -> execute -> report run
in-process with the CRI resolver over the runtime's socket. The Kubernetes side is a
pod dict whose annotations take the report's patch: the cluster path (kubelet,
Multus, apiserver) is covered by the real-node tests of issue 9's node work; here
the point is CNI identity and the runtime's sandboxes, which need no API server.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import netlink
from agent.execute import Executor
from agent.netns import CriResolver, Sandbox
from agent.networks import NetworkConfigs
from agent.observe import observe
from agent.plan import Wish, plan_pod
from agent.report import build_report
from netshift import annotations as ann
from netshift import keys
from netshift.cni.config import load_conflist
from netshift.cni.executor import CniExecutor
from netshift.cni.nad import attachment_runtime
from netshift.kube import now_rfc3339
from netshift.pod import Pod
from netshift.records import RecordStore
from support.builders import bridge_config
from support.cri import Containerd, cluster_conflist, new_uid, private_containerd

NS = "team-a"


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with private_containerd() as c:
        yield c


class Node:
    """One agent's worth of state, driven by hand: one call of `reconcile` is one reconcile."""

    def __init__(self, c: Containerd, tmp: Path) -> None:
        self.c = c
        tag = secrets.token_hex(3)
        self.blue_ipam = tmp / "ipam-blue"
        self.blue_bridge = f"nsb{tag}"
        subnet = f"10.248.{os.getpid() % 250}.0/24"
        self.blue = bridge_config("blue", self.blue_bridge, subnet, self.blue_ipam)
        nads = {f"{NS}/blue": {"spec": {"config": json.dumps(self.blue)}}}
        self.resolver = CriResolver(c.endpoint)
        self.store = RecordStore(str(tmp / "records"))
        self.configs = NetworkConfigs(nads.get, load_conflist(json.dumps(cluster_conflist(c))))
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str]] = []
        self.executor = Executor(
            self.store,
            CniExecutor(["/usr/lib/cni"], timeout=30),
            self.configs,
            lambda uid: self.resolver.resolve(self.pods[uid]) if uid in self.pods else None,
        )

    def reconcile(self, uid: str) -> Sandbox:
        obj = self.pods[uid]
        pod = Pod.from_object(obj)
        sandbox = self.resolver.resolve(obj)
        assert sandbox is not None
        obs = observe(pod, sandbox, self.store)
        cluster = self.configs.cluster_net
        assert cluster is not None
        plan = plan_pod(Wish(NS, pod.annotations, cluster.name), obs.seen(), time.time())
        done = self.executor.run(obs, plan)
        report = build_report(
            pod.annotations,
            obs.network_status,
            done.records,
            done.outcomes,
            plan.forget,
            now_rfc3339(),
        )
        self.events = [(e.reason, e.message) for e in report.events]
        for k, v in report.changes.items():  # the status patch, applied to the pod
            annotations = obj["metadata"]["annotations"]
            if v is None:
                annotations.pop(k, None)
            else:
                annotations[k] = v
        return sandbox

    def reserved_blue(self) -> dict[str, str]:
        store = self.blue_ipam / "blue"
        if not store.is_dir():
            return {}
        return {
            e.name: e.read_text().splitlines()[0].strip()
            for e in store.iterdir()
            if e.name[0].isdigit()
        }

    def status(self, uid: str) -> dict[str, list[str]]:
        raw = self.pods[uid]["metadata"]["annotations"][keys.NETWORK_STATUS_KEY]
        return {e.interface or "": list(e.ips) for e in ann.parse_network_status(raw)}


@pytest.fixture
def node(containerd: Containerd, tmp_path: Path) -> Iterator[Node]:
    n = Node(containerd, tmp_path)
    yield n
    subprocess.run(["ip", "link", "del", n.blue_bridge], capture_output=True, check=False)


def live_ips(netns: str) -> dict[str, list[str]]:
    return {
        i.name: [a.split("/")[0] for a in i.addresses]
        for i in netlink.list_interfaces(netns)
        if i.name != "lo"
    }


def make_pod(c: Containerd, node: Node, uid: str, sandbox: str) -> dict[str, Any]:
    """The pod as it is after creation: the runtime's eth0 in network-status (as Multus writes)."""
    eth0 = live_ips(c.netns(sandbox))["eth0"]
    status = [{"name": c.network, "interface": "eth0", "ips": eth0, "default": True}]
    obj = {
        "metadata": {
            "uid": uid,
            "namespace": NS,
            "name": "web-0",
            "annotations": {
                keys.NETWORKS_KEY: "blue@data0",
                keys.NETWORK_STATUS_KEY: json.dumps(status),
            },
        },
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }
    node.pods[uid] = obj
    return obj


def test_attachments_carry_the_sandbox_id_and_a_recreated_sandbox_is_rebuilt(
    containerd: Containerd, node: Node
) -> None:
    c, uid = containerd, new_uid()
    a = c.runp(uid, "web-0")
    make_pod(c, node, uid, a)

    sb = node.reconcile(uid)
    assert sb.id == a
    blue = node.reserved_blue()
    assert list(blue.values()) == [a], "CNI_CONTAINERID is the sandbox id, as the runtime's"
    eth0 = node.store.get(uid, "eth0")
    assert eth0 is not None and eth0.adopted and eth0.container_id == a
    old_blue_ip = next(iter(blue))
    assert live_ips(sb.netns)["data0"] == [old_blue_ip]

    # The sandbox is replaced (as the kubelet does after `crictl stopp`: attempt 1).
    c.stopp(a)
    c.rmp(a)
    assert not os.path.exists(sb.netns)
    b = c.runp(uid, "web-0", attempt=1)

    # The agent may see B before the runtime's network-status for it (its watch cache lags):
    # it releases what A held at once, and waits for the runtime's entries before adopting.
    new = node.reconcile(uid)
    assert ("Detached", f"{NS}/blue from data0 of the replaced sandbox {a[:13]}") in node.events
    assert new.id == b and new.netns != sb.netns
    assert node.reserved_blue() == {} and node.store.list_pod(uid) == []
    live = live_ips(new.netns)
    assert "data0" not in live
    # Multus's network-status for B arrives: one reconcile rebuilds the view.
    multus = [{"name": c.network, "interface": "eth0", "ips": live["eth0"], "default": True}]
    node.pods[uid]["metadata"]["annotations"][keys.NETWORK_STATUS_KEY] = json.dumps(multus)
    node.reconcile(uid)
    live = live_ips(new.netns)
    blue = node.reserved_blue()
    assert list(blue.values()) == [b], f"the old sandbox's address is released: {blue}"
    assert live["data0"] == list(blue), "data0 is plugged again in the new sandbox"
    assert node.status(uid) == {"eth0": live["eth0"], "data0": live["data0"]}
    assert {r.interface: r.container_id for r in node.store.list_pod(uid)} == {
        "eth0": b,
        "data0": b,
    }
    meta = node.store.get_pod_meta(uid)
    assert meta is not None and (meta.container_id, meta.netns) == (b, new.netns)

    # Nothing more to do: a second reconcile changes nothing.
    before = dict(node.pods[uid]["metadata"]["annotations"])
    node.reconcile(uid)
    assert node.pods[uid]["metadata"]["annotations"] == before and node.reserved_blue() == blue

    # The pod goes: its hot-plugged address is released; the runtime releases eth0's.
    assert node.executor.cleanup(uid)
    assert node.reserved_blue() == {}
    c.stopp(b)
    c.rmp(b)
    assert c.reserved() == {}


def _blue_gives_a_default_route(node: Node, *, gateway: bool = False) -> None:
    """blue as a default network: its IPAM hands out a default route (a network whose CNI
    result has none is refused as a default, docs/agent.md); with `gateway` the node has an
    address on blue's bridge, so it routes blue (and can carry another address through it)."""
    node.blue["plugins"][0]["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}]
    if gateway:
        node.blue["plugins"][0]["isGateway"] = True
    node.configs = NetworkConfigs(
        {f"{NS}/blue": {"spec": {"config": json.dumps(node.blue)}}}.get, node.configs.cluster_net
    )
    node.executor.configs = node.configs


def _adopt_eth0_then_remove_it_for_blue(node: Node, uid: str, obj: dict[str, Any]) -> None:
    """The agent adopts Multus's eth0, then the pod asks for blue as its default with
    `oldDefault: Remove` and no drain: one reconcile switches, the next removes eth0."""
    annotations = obj["metadata"]["annotations"]
    del annotations[keys.NETWORKS_KEY]
    node.reconcile(uid)
    annotations[keys.DEFAULT_NETWORK_KEY] = f"{NS}/blue"
    annotations[keys.SWITCH_POLICY_KEY] = json.dumps({"oldDefault": "Remove", "drainSeconds": 0})
    node.reconcile(uid)
    node.reconcile(uid)


def test_removing_the_creation_time_default_releases_the_runtimes_reservation(
    containerd: Containerd, node: Node
) -> None:
    """`oldDefault: Remove` DELs the adopted eth0 under the runtime's container id (the sandbox
    id), so host-local finds the runtime's reservation and frees it at once."""
    c, uid = containerd, new_uid()
    _blue_gives_a_default_route(node)
    a = c.runp(uid, "web-0")
    obj = make_pod(c, node, uid, a)
    eth0_ip = live_ips(c.netns(a))["eth0"][0]
    assert c.reserved().get(eth0_ip) == a
    _adopt_eth0_then_remove_it_for_blue(node, uid, obj)  # eth0 DEL'd
    live = live_ips(c.netns(a))
    assert "eth0" not in live and "net1" in live
    assert eth0_ip not in c.reserved(), f"eth0's address is released: {c.reserved()}"
    assert node.status(uid) == {"net1": live["net1"]}
    assert node.executor.cleanup(uid) and node.reserved_blue() == {}
    c.stopp(a)  # the runtime's own DEL of eth0 (idempotent) succeeds after ours
    c.rmp(a)
    assert c.reserved() == {}


def test_removing_the_reported_default_defers_the_runtimes_release_to_the_pods_end(
    containerd: Containerd, node: Node
) -> None:
    """When the kubelet reports eth0's address as the pod IP, `oldDefault: Remove` takes eth0
    away but keeps the runtime's reservation (and the address answering through net1) until
    the agent's clean-up DELs it under the runtime's container id."""
    c, uid = containerd, new_uid()
    _blue_gives_a_default_route(node, gateway=True)  # the node routes blue: it carries eth0's IP
    a = c.runp(uid, "web-0")
    obj = make_pod(c, node, uid, a)
    eth0_ip = live_ips(c.netns(a))["eth0"][0]
    obj["status"]["podIP"] = eth0_ip
    obj["status"]["podIPs"] = [{"ip": eth0_ip}]
    _adopt_eth0_then_remove_it_for_blue(node, uid, obj)  # eth0 retired
    live = live_ips(c.netns(a))
    assert "eth0" not in live and eth0_ip in live["net1"], live
    assert c.reserved().get(eth0_ip) == a, f"eth0's address is held: {c.reserved()}"
    assert node.executor.cleanup(uid)
    assert eth0_ip not in {ip.split("/")[0] for ip in c.reserved()}, c.reserved()
    c.stopp(a)  # the runtime's own DEL of eth0 (idempotent) succeeds after ours
    c.rmp(a)
    assert c.reserved() == {}


def test_what_multus_recreated_in_the_new_sandbox_is_adopted_not_plugged_again(
    containerd: Containerd, node: Node
) -> None:
    """Multus attaches the pod's networks (data0 too) in the new sandbox and writes network-status;
    the agent releases data0 of the old sandbox and adopts Multus's, under its sandbox id."""
    c, uid = containerd, new_uid()
    a = c.runp(uid, "web-0")
    make_pod(c, node, uid, a)
    node.reconcile(uid)
    (old_ip,) = node.reserved_blue()
    c.stopp(a)
    c.rmp(a)
    b = c.runp(uid, "web-0", attempt=1)
    netns_b = c.netns(b)
    # As Multus does at sandbox creation: ADD of the annotated network, then network-status.
    cni = CniExecutor(["/usr/lib/cni"], timeout=30)
    rt = attachment_runtime(
        namespace=NS, name="web-0", uid=uid, netns=netns_b, ifname="data0", container_id=b
    )
    cni.add(load_conflist(json.dumps(node.blue)), rt)
    live = live_ips(netns_b)
    status = [
        {"name": c.network, "interface": "eth0", "ips": live["eth0"], "default": True},
        {"name": f"{NS}/blue", "interface": "data0", "ips": live["data0"]},
    ]
    node.pods[uid]["metadata"]["annotations"][keys.NETWORK_STATUS_KEY] = json.dumps(status)

    node.reconcile(uid)
    blue = node.reserved_blue()
    assert old_ip not in blue and list(blue.values()) == [b], blue
    assert live_ips(netns_b) == live, "nothing plugged again"
    assert node.status(uid) == {"eth0": live["eth0"], "data0": live["data0"]}
    data0 = node.store.get(uid, "data0")
    assert data0 is not None and data0.adopted and data0.container_id == b
    assert node.executor.cleanup(uid) and node.reserved_blue() == {}
    c.stopp(b)
    c.rmp(b)
