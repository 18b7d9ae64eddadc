"""Hot-plug on the real node: `kubectl annotate` → the agent pod plugs the interface into a
real container's sandbox; removal and pod deletion give every address back to host-local.

Each test network has its own bridge, subnet and host-local store under the node's
state dir (mounted at the same path into the agent's and Multus's pods), so every file
in that store is the test's own.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.realnode import RealNode
from netshift.kube import ApiError, Kube, profile_path, wait_for
from support.builders import PROFILES, bridge_config, create_nad
from support.realnode import (
    busybox_pod,
    create_running,
    eventually,
    ipv4_of,
    network_status,
    store_addresses,
)

NETWORKS = "k8s.v1.cni.cncf.io/networks"


@dataclass
class SideNetwork:
    name: str
    bridge: str
    subnet: str
    store: Path


@pytest.fixture
def side_network(
    real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[SideNetwork]:
    with _side_network(real_node, real_kube, real_namespace) as net:
        yield net


@pytest.fixture
def other_network(
    real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[SideNetwork]:
    with _side_network(real_node, real_kube, real_namespace) as net:
        yield net


_OCTETS = itertools.count(secrets.randbelow(250))


@contextlib.contextmanager
def _side_network(
    real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[SideNetwork]:
    """A bridge network of the test's own: bridge, subnet and host-local store."""
    suffix = secrets.token_hex(3)
    octet = next(_OCTETS) % 250 + 1  # two networks of one test never share a subnet
    net = SideNetwork(
        name=f"side-{suffix}",
        bridge=f"nsh{suffix}",
        subnet=f"10.241.{octet}.0/24",
        store=real_node.root / "cni" / "test-networks" / suffix,
    )
    config = bridge_config(net.name, net.bridge, net.subnet, net.store)
    create_nad(real_kube, real_namespace, net.name, config)
    yield net
    subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)


def _annotate(cluster: LocalCluster, namespace: str, pod: str, value: str | None) -> None:
    arg = f"{NETWORKS}-" if value is None else f"{NETWORKS}={value}"
    cluster.kubectl("-n", namespace, "annotate", "--overwrite", "pod", pod, arg)


def test_annotate_plugs_an_interface_and_removal_releases_its_address(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str, side_network: SideNetwork
) -> None:
    create_running(real_kube, real_namespace, busybox_pod("hot"))
    _annotate(real_cluster, real_namespace, "hot", f"{side_network.name}@net1")
    eventually(
        lambda: bool(ipv4_of(real_cluster, real_namespace, "hot", "net1")),
        60,
        "net1 with an address in the pod",
    )
    (address,) = ipv4_of(real_cluster, real_namespace, "hot", "net1")
    assert store_addresses(side_network.store) == {address}

    _annotate(real_cluster, real_namespace, "hot", None)
    eventually(
        lambda: not ipv4_of(real_cluster, real_namespace, "hot", "net1"),
        60,
        "net1 gone from the pod",
    )
    eventually(
        lambda: not store_addresses(side_network.store), 30, "the address back in host-local"
    )
    # eth0 (Multus's) is untouched.
    assert ipv4_of(real_cluster, real_namespace, "hot", "eth0")


def test_a_swap_behind_the_same_interface_name_moves_net1_to_the_other_network(
    real_cluster: LocalCluster,
    real_kube: Kube,
    real_namespace: str,
    side_network: SideNetwork,
    other_network: SideNetwork,
) -> None:
    """net1 on one network, then the annotation names another network for net1: the old
    attachment is DEL'd (its address back in its store) before the new one takes the name."""
    create_running(real_kube, real_namespace, busybox_pod("swap"))
    eth0 = ipv4_of(real_cluster, real_namespace, "swap", "eth0")
    _annotate(real_cluster, real_namespace, "swap", f"{side_network.name}@net1")
    eventually(
        lambda: (
            bool(store_addresses(side_network.store))
            and bool(ipv4_of(real_cluster, real_namespace, "swap", "net1"))
        ),
        60,
        "net1 on the first network",
    )
    _annotate(real_cluster, real_namespace, "swap", f"{other_network.name}@net1")

    def on_other() -> bool:
        addresses = ipv4_of(real_cluster, real_namespace, "swap", "net1")
        return bool(addresses) and set(addresses) == store_addresses(other_network.store)

    eventually(on_other, 60, "net1 on the other network, with the other network's address")
    assert not store_addresses(side_network.store), "the first network's address leaked"
    pod = real_kube.get(f"/api/v1/namespaces/{real_namespace}/pods/swap")
    entries = {e.get("interface"): e for e in network_status(pod)}
    assert entries["net1"]["name"].endswith(other_network.name), entries
    assert entries["net1"]["ips"] == ipv4_of(real_cluster, real_namespace, "swap", "net1")
    assert ipv4_of(real_cluster, real_namespace, "swap", "eth0") == eth0  # untouched
    restarts = [s["restartCount"] for s in pod["status"]["containerStatuses"]]
    assert restarts == [0], restarts


def test_deleting_a_pod_with_a_hot_plugged_network_leaks_no_address(
    real_cluster: LocalCluster,
    real_node: RealNode,
    real_kube: Kube,
    real_namespace: str,
    side_network: SideNetwork,
) -> None:
    pod = create_running(real_kube, real_namespace, busybox_pod("doomed"))
    eth0 = pod["status"]["podIP"]
    _annotate(real_cluster, real_namespace, "doomed", f"{side_network.name}@net1")
    eventually(
        lambda: bool(ipv4_of(real_cluster, real_namespace, "doomed", "net1")),
        60,
        "net1 with an address in the pod",
    )
    assert eth0 in store_addresses(real_node.ipam_dir)
    real_kube.delete(f"/api/v1/namespaces/{real_namespace}/pods/doomed")

    def gone() -> bool:
        try:
            real_kube.get(f"/api/v1/namespaces/{real_namespace}/pods/doomed")
        except ApiError as err:
            return err.status == 404
        return False

    eventually(gone, 60, "the pod deleted")
    # Multus DELs eth0 with the sandbox; only the agent knows net1 and must DEL it.
    eventually(
        lambda: eth0 not in store_addresses(real_node.ipam_dir),
        30,
        f"{eth0} released by the cluster network",
    )
    eventually(
        lambda: not store_addresses(side_network.store),
        60,
        "the hot-plugged address released",
    )


def test_the_webhook_pods_inject_a_profile_and_multus_attaches_it_at_creation(
    real_cluster: LocalCluster,
    real_kube: Kube,
    real_namespace: str,
    side_network: SideNetwork,
) -> None:
    """The apiserver calls the webhook replicas through their Service; Multus then wires the
    injected network when it creates the sandbox; deleting the pod gives the address back."""
    name = f"p-{real_namespace}"
    real_kube.create(
        PROFILES,
        {
            "apiVersion": "netshift.io/v1alpha1",
            "kind": "NetworkProfile",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": real_namespace}
                },
                "priority": 1000,
                "networks": [{"name": side_network.name, "interface": "net1"}],
            },
        },
    )
    try:
        # The webhook's caches follow the profile through its watch.
        def injected() -> Any:
            pod = real_kube.create(
                f"/api/v1/namespaces/{real_namespace}/pods", busybox_pod("injected")
            )
            if NETWORKS in pod["metadata"].get("annotations", {}):
                return pod
            real_cluster.kubectl("-n", real_namespace, "delete", "pod", "injected", "--wait=true")
            return None

        pod = wait_for(injected, 30, what="a pod created with the profile's network")
        assert side_network.name in pod["metadata"]["annotations"][NETWORKS]
        running = wait_for(
            lambda: _running(real_kube, real_namespace, "injected"), 60, what="pod Running"
        )
        (address,) = ipv4_of(real_cluster, real_namespace, "injected", "net1")
        assert store_addresses(side_network.store) == {address}
        status = network_status(running)
        assert any(e.get("interface") == "net1" and e.get("ips") == [address] for e in status)
        real_kube.delete(f"/api/v1/namespaces/{real_namespace}/pods/injected")
        eventually(lambda: not store_addresses(side_network.store), 60, "net1's address released")
    finally:
        real_kube.delete(profile_path(name))


def _running(kube: Kube, namespace: str, name: str) -> Any:
    pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return pod if pod.get("status", {}).get("phase") == "Running" else None
