"""Faults on the real node: each followed by convergence and an IPAM check (nothing leaked).

containerd restarted during a stream of hot-plugs; the kubelet restarted during a
rollout; the agent's pod deleted mid-switch (its DaemonSet brings it back); a pod
deleted while its switch is in flight. Every network here has its own bridge,
subnet and host-local store, so the store must hold exactly the addresses the
pods report, and nothing once they are gone.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.realnode import RealNode
from netshift import keys, podstatus
from netshift.kube import ApiError, Kube, pod_path, wait_for
from support.builders import PROFILES, bridge_config, create_nad, namespace_profile
from support.realnode import (
    busybox_pod,
    eventually,
    ipv4_of,
    pod_deleted,
    settled_on,
    store_addresses,
)

PODS = 4


@dataclass
class Nets:
    """Networks `b` (a default: isGateway, default route) and `side` (plain) in the namespace."""

    namespace: str
    stores: dict[str, Path]
    bridges: list[str]

    def network(self, key: str) -> str:
        return f"{self.namespace}/{key}"

    def held(self) -> dict[str, set[str]]:
        return {k: s for k, store in self.stores.items() if (s := store_addresses(store))}


@pytest.fixture
def nets(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[Nets]:
    tag = secrets.token_hex(2)
    made = Nets(
        real_namespace,
        {k: real_node.root / "cni" / "test-networks" / f"flt{tag}{k}" for k in ("b", "side")},
        [f"nsfb{tag}", f"nsfs{tag}"],
    )
    base = secrets.randbelow(200) + 1
    create_nad(
        real_kube,
        real_namespace,
        "b",
        bridge_config(
            "b",
            made.bridges[0],
            f"10.240.{base}.0/24",
            made.stores["b"],
            default_route=True,
            is_gateway=True,
        ),
    )
    create_nad(
        real_kube,
        real_namespace,
        "side",
        bridge_config("side", made.bridges[1], f"10.240.{base + 1}.0/24", made.stores["side"]),
    )
    try:
        yield made
    finally:
        real_cluster.kubectl(
            "-n", real_namespace, "delete", "pods", "--all", "--wait=true", check=False, timeout=90
        )
        for bridge in made.bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _pods(kube: Kube, namespace: str, n: int) -> dict[str, dict[str, Any]]:
    """`n` running busybox pods on the cluster network (Multus's eth0), by name."""
    names = [f"p{i}" for i in range(n)]
    for name in names:
        kube.create(pod_path(namespace), busybox_pod(name, labels={"app": "fault"}))
    return {name: create_running_wait(kube, namespace, name) for name in names}


def create_running_wait(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        got: dict[str, Any] = kube.get(pod_path(namespace, name))
        ok = got.get("status", {}).get("phase") == "Running"
        return (
            got
            if ok and all(s.get("ready") for s in got["status"].get("containerStatuses", []))
            else None
        )

    return wait_for(running, 90, what=f"pod {name} Running")  # type: ignore[no-any-return]


def _attached(pod: dict[str, Any], network: str) -> list[str]:
    """Addresses of the pod's attachments of `network` (the agent's report)."""
    st = podstatus.parse_status(pod["metadata"].get("annotations") or {})
    if st is None:
        return []
    return [ip.split("/")[0] for a in st.attachments if a.network == network for ip in a.ips]


def _converged(kube: Kube, namespace: str, names: list[str]) -> list[dict[str, Any]] | None:
    items = [kube.get(pod_path(namespace, n)) for n in names]
    ok = all(podstatus.is_settled(p["metadata"]["annotations"]) == (True, False) for p in items)
    return items if ok else None


def _no_leak(
    kube: Kube, nets: Nets, node: RealNode, pods: dict[str, dict[str, Any]], what: str
) -> None:
    """The stores hold exactly what the pods report; deleted, the pods give all of it back."""
    items = wait_for(
        lambda: _converged(kube, nets.namespace, list(pods)), 120, what=f"convergence {what}"
    )
    for key, store in nets.stores.items():
        reported = {ip for p in items for ip in _attached(p, nets.network(key))}
        assert store_addresses(store) == reported, (key, store_addresses(store), reported)
    for p in items:
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0, p["metadata"]["name"]
        assert p["metadata"]["uid"] == pods[p["metadata"]["name"]]["metadata"]["uid"]
    eth0s = {p["status"]["podIP"] for p in pods.values()}
    for name in pods:
        kube.delete(pod_path(nets.namespace, name))
    for name in pods:
        eventually(lambda n=name: pod_deleted(kube, nets.namespace, n), 90, f"{name} deleted")  # type: ignore[misc]
    eventually(lambda: not nets.held(), 60, f"every address released ({what})")
    eventually(lambda: not eth0s & store_addresses(node.ipam_dir), 30, f"eth0s released ({what})")


def test_containerd_restarted_during_a_stream_of_hot_plugs_leaks_nothing(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, nets: Nets
) -> None:
    pods = _pods(real_kube, nets.namespace, PODS)
    errors: list[str] = []
    stop = threading.Event()
    rounds, edits = [0], [0]

    def hot_plugs() -> None:
        # Each pod in turn: side plugged, then unplugged, then plugged...
        while not stop.is_set():
            for name in pods:
                value = "side@net1" if rounds[0] % 2 == 0 else None
                arg = f"{keys.NETWORKS_KEY}-" if value is None else f"{keys.NETWORKS_KEY}={value}"
                done = real_cluster.kubectl(
                    "-n", nets.namespace, "annotate", "--overwrite", "pod", name, arg, check=False
                )
                if done.returncode != 0:
                    errors.append(done.stderr.strip())
                edits[0] += 1
                time.sleep(0.1)
            rounds[0] += 1

    stream = threading.Thread(target=hot_plugs, daemon=True)
    stream.start()
    try:
        eventually(lambda: rounds[0] >= 2, 60, "two rounds of hot-plugs")
        containerd = real_node.procs()[0]
        real_node.supervisor.stop("containerd", lambda _l: None)
        at_stop = edits[0]
        time.sleep(2)  # hot-plugs keep coming while containerd is down
        assert edits[0] > at_stop, "no hot-plug edit while containerd was down"
        real_node.supervisor.start(containerd)
        real_node.supervisor.wait_healthy(containerd, timeout=60)
        eventually(lambda: rounds[0] >= 6, 120, "more hot-plugs after the restart")
    finally:
        stop.set()
        stream.join(timeout=30)
    assert not errors, errors[:3]
    items = wait_for(
        lambda: _converged(real_kube, nets.namespace, list(pods)), 120, what="convergence"
    )
    for p in items:
        # The last wish is what the container has: net1 with the reported address, or none.
        name, wanted = p["metadata"]["name"], keys.NETWORKS_KEY in p["metadata"]["annotations"]
        reported = _attached(p, nets.network("side"))
        assert (bool(reported), ipv4_of(real_cluster, nets.namespace, name, "net1")) == (
            wanted,
            reported,
        ), name
    _no_leak(real_kube, nets, real_node, pods, "after a containerd restart")
    print(f"containerd restart: {rounds[0]} rounds of {PODS} hot-plug edits")


def _rollout(kube: Kube, nets: Nets, name: str, **rollout: Any) -> None:
    kube.create(PROFILES, namespace_profile(name, nets.namespace, "b", **rollout))


def _under_way(kube: Kube, namespace: str, names: list[str]) -> bool:
    """The rollout has patched a first pod. Read in one list call, polled fast: with one pod
    at a time, the pause that follows lands while that first switch runs (it takes longer
    than a poll), so the fault meets a rollout with pods still to go."""
    return _started(kube, namespace, names) >= 1


def _pause(kube: Kube, name: str, paused: bool) -> None:
    kube.patch_merge(f"{PROFILES}/{name}", {"spec": {"rollout": {"paused": paused}}})


def _started(kube: Kube, namespace: str, names: list[str]) -> int:
    """How many pods the rollout has patched so far."""
    pods = kube.get(pod_path(namespace), labelSelector="app=fault")["items"]
    return sum(
        keys.ROLLOUT_STARTED_KEY in (p["metadata"].get("annotations") or {})
        for p in pods
        if p["metadata"]["name"] in names
    )


def _on_b(kube: Kube, nets: Nets, names: list[str]) -> list[dict[str, Any]] | None:
    items = [kube.get(pod_path(nets.namespace, n)) for n in names]
    return items if all(settled_on(p, nets.network("b")) for p in items) else None


def test_the_kubelet_restarted_during_a_rollout_the_rollout_converges_and_leaks_nothing(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, nets: Nets
) -> None:
    pods = _pods(real_kube, nets.namespace, PODS)
    name = f"kl-{nets.namespace}"
    try:
        _rollout(real_kube, nets, name, maxConcurrent=1)
        wait_for(
            lambda: _under_way(real_kube, nets.namespace, list(pods)),
            60,
            interval=0.02,
            what="the rollout's first pod patched",
        )
        # Paused while the kubelet stops, so that the fault comes mid-rollout for sure;
        # resumed while it is down: the switches go on without it.
        _pause(real_kube, name, True)
        kubelet = real_node.procs()[1]
        real_node.supervisor.stop("kubelet", lambda _l: None)
        assert _started(real_kube, nets.namespace, list(pods)) < PODS, "the rollout was over"
        _pause(real_kube, name, False)
        time.sleep(3)
        real_node.supervisor.start(kubelet)
        real_node.supervisor.wait_healthy(kubelet, timeout=60)
        wait_for(lambda: _on_b(real_kube, nets, list(pods)), 120, what="every pod on b")
        eventually(real_node.node_ready, 60, "the Node Ready again")
        _no_leak(real_kube, nets, real_node, pods, "after a kubelet restart")
    finally:
        with contextlib.suppress(ApiError):
            real_kube.delete(f"{PROFILES}/{name}")


def test_the_agent_pod_deleted_mid_switch_comes_back_and_the_switch_converges(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, nets: Nets
) -> None:
    pods = _pods(real_kube, nets.namespace, PODS)
    name = f"ag-{nets.namespace}"
    agents = "app.kubernetes.io/component=agent"
    (old_agent,) = real_kube.get("/api/v1/namespaces/netshift-system/pods", labelSelector=agents)[
        "items"
    ]
    try:
        _rollout(real_kube, nets, name, maxConcurrent=1)
        wait_for(
            lambda: _under_way(real_kube, nets.namespace, list(pods)),
            60,
            interval=0.02,
            what="the rollout's first pod patched",
        )
        _pause(real_kube, name, True)
        real_cluster.kubectl(
            "-n", "netshift-system", "delete", "pod", old_agent["metadata"]["name"], "--wait=false"
        )
        assert _started(real_kube, nets.namespace, list(pods)) < PODS, "the rollout was over"
        _pause(real_kube, name, False)  # the rollout goes on while the agent is away

        def replaced() -> bool:
            items = real_kube.get("/api/v1/namespaces/netshift-system/pods", labelSelector=agents)[
                "items"
            ]
            return any(
                p["metadata"]["uid"] != old_agent["metadata"]["uid"]
                and p.get("status", {}).get("phase") == "Running"
                for p in items
            )

        eventually(replaced, 90, "a new agent pod Running")
        moved = wait_for(lambda: _on_b(real_kube, nets, list(pods)), 120, what="every pod on b")
        for p in moved:
            # One new default per pod (no second incoming default from the interrupted switch).
            st = podstatus.parse_status(p["metadata"]["annotations"])
            assert st is not None
            assert sorted(a.interface for a in st.attachments) == ["eth0", st.default_interface]
        _no_leak(real_kube, nets, real_node, pods, "after the agent pod was deleted")
    finally:
        with contextlib.suppress(ApiError):
            real_kube.delete(f"{PROFILES}/{name}")


def test_a_pod_deleted_while_its_switch_is_in_flight_leaks_nothing(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, nets: Nets
) -> None:
    pods = _pods(real_kube, nets.namespace, PODS)
    eth0s = {p["status"]["podIP"] for p in pods.values()}
    # Deleted at different moments after the edit: before, during and after the ADD.
    for i, name in enumerate(pods):
        real_cluster.kubectl(
            "-n",
            nets.namespace,
            "annotate",
            "pod",
            name,
            f"{keys.DEFAULT_NETWORK_KEY}={nets.network('b')}",
            f"{keys.NETWORKS_KEY}=side@data0",
        )
        time.sleep(0.15 * i)
        real_kube.delete(pod_path(nets.namespace, name))
    for name in pods:
        eventually(lambda n=name: pod_deleted(real_kube, nets.namespace, n), 90, f"{name} gone")  # type: ignore[misc]
    eventually(lambda: not nets.held(), 60, "b's and side's addresses released")
    eventually(lambda: not eth0s & store_addresses(real_node.ipam_dir), 30, "the eth0s released")
