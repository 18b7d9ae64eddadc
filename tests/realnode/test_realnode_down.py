"""`netshift down` of the real node: every address back in host-local, the plane stopped
rather than killed; then `netshift up` brings the node and netshift's pods back.

It takes the session's real node down, so it runs after every other real-node test
(the `restarts_node` marker, see tests/conftest.py) and leaves the node up again.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from localcluster.cluster import LocalCluster
from localcluster.realnode import RealNode
from netshift.kube import Kube
from support.builders import bridge_config, create_nad
from support.realnode import (
    busybox_pod,
    create_running,
    eventually,
    ipv4_of,
    pod_deleted,
    store_addresses,
    webhook_serving,
)

pytestmark = pytest.mark.restarts_node
NETWORKS = "k8s.v1.cni.cncf.io/networks"


def test_down_releases_every_address_and_stops_the_apiserver_without_a_kill(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> None:
    suffix = secrets.token_hex(3)
    bridge, store = f"nsd{suffix}", real_node.root / "cni" / "test-networks" / suffix
    config = bridge_config(f"down-{suffix}", bridge, "10.240.7.0/24", store)
    create_nad(real_kube, real_namespace, "side", config)
    pod = busybox_pod("held", annotations={NETWORKS: "side@net1"})
    create_running(real_kube, real_namespace, pod)
    eventually(
        lambda: bool(ipv4_of(real_cluster, real_namespace, "held", "net1")), 60, "net1 plugged"
    )
    (eth0,) = ipv4_of(real_cluster, real_namespace, "held", "eth0")
    assert eth0 in store_addresses(real_node.ipam_dir)
    assert store_addresses(store)

    # Peers already gone (earlier tests froze and killed pods): down closes those.
    pods = real_kube.get("/api/v1/pods")["items"]
    live = {p["status"].get("podIP") for p in pods}
    peers = real_node.apiserver_pod_connections()
    dead = [peer for peer in peers if peer.split(":")[0] not in live]
    netns = _sandbox_netns(real_node)
    assert netns, "the node's pods have network namespaces before down"
    said: list[str] = []
    try:
        real_cluster.down(say=said.append)
        # A pod whose eth0 went before its processes left the apiserver connections that
        # never close: down would close more than were dead before it began.
        closed = next((line for line in said if "apiserver connection(s)" in line), "")
        assert closed == (
            f"node: closed {len(dead)} apiserver connection(s) left by pods that are gone"
            if dead
            else ""
        ), ("\n".join(said), dead)
        assert not [line for line in said if "killed" in line], "\n".join(said)
        assert not store_addresses(real_node.ipam_dir), "the pods' eth0 addresses leaked"
        assert not store_addresses(store), "the hot-plugged net1's address leaked"
        left = sorted(netns & _netns_mounted())
        assert not left, ("pod network namespaces left behind", left, "\n".join(said))
    finally:
        real_cluster.up(say=lambda _line: None)
        webhook_serving(real_cluster, real_kube, timeout=120)
        # The kubelet brings the pod back and the agent plugs net1 again: the pod goes
        # before the bridge does, or its plugin would make the bridge again.
        path = f"/api/v1/namespaces/{real_namespace}/pods/held"
        real_kube.delete(path)
        eventually(lambda: pod_deleted(real_kube, real_namespace, "held"), 60, "pod deleted")
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _sandbox_netns(node: RealNode) -> set[str]:
    """The network namespace files of this node's pod sandboxes (host-network pods have none).

    Only these are checked after down: the machine's mount table may hold namespaces of
    other nodes, or of a test session that was killed, which this node's down never knew."""
    paths = set()
    for sandbox in node.runtime.sandboxes():
        done = node.runtime.crictl("inspectp", "-o", "json", sandbox.id, check=False)
        if done.returncode != 0:
            continue
        spec = json.loads(done.stdout).get("info", {}).get("runtimeSpec", {})
        for ns in spec.get("linux", {}).get("namespaces", []):
            if ns.get("type") == "network" and ns.get("path"):
                paths.add(os.path.realpath(ns["path"]))  # /var/run is /run
    return paths


def _netns_mounted() -> set[str]:
    """Namespace files bind-mounted on this host (/run/netns/cni-*, containerd's)."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return {m.split()[4] for m in mounts if "/netns/cni-" in m.split()[4]}
