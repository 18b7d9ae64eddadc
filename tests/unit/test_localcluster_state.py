"""A state dir keeps its plane's ports and each node's own settings (cluster.json; no processes).

A new state dir gets one node of the kind asked for; an existing one keeps what it was
made with; each node lives under `<state>/nodes/<name>/` with ports of its own; a state
dir from before nodes/ is read as its one node.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster.cluster import LocalCluster
from localcluster.errors import ClusterError
from localcluster.realnode import RealNode
from localcluster.simnode import SimNode
from localcluster.state import DEFAULT_POD_SUBNET6, ClusterState, NodeSpec, stored_kind


def test_a_new_state_dir_gets_one_node_of_the_kind_asked_for(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, pod_subnet="10.246.3.0/24", bridge="nsst0", node="real")
    node = cluster.single_node(RealNode)
    assert (node.pod_subnet, node.bridge, node.gateway) == ("10.246.3.0/24", "nsst0", "10.246.3.1")
    assert node.root == tmp_path.resolve() / "nodes" / node.name
    assert node.cluster_conflist.is_relative_to(node.root)
    assert node.apiserver_ips() == ["10.246.3.1"]


def test_the_node_simulator_is_the_default_and_runs_everything_on_loopback(
    tmp_path: Path,
) -> None:
    node = LocalCluster(tmp_path).single_node(SimNode)
    assert node.apiserver_ips() == []
    assert node.netns_resolver_args() == ["--netns-template=/var/run/netns/netshift-{uid}"]
    assert node.ipam_dir.is_relative_to(node.root) and node.records_dir.is_relative_to(node.root)


def test_ports_are_kept_per_node_and_for_the_plane(tmp_path: Path) -> None:
    first = LocalCluster(tmp_path, node="real")
    apiserver = first.port("apiserver")
    kubelet = first.single_node(RealNode).ports("kubelet")
    again = LocalCluster(tmp_path)
    assert again.port("apiserver") == apiserver
    assert again.single_node(RealNode).ports("kubelet") == kubelet
    saved = json.loads((tmp_path / "cluster.json").read_text())
    assert saved["ports"] == {"apiserver": apiserver}
    assert saved["nodes"][0]["ports"] == {"kubelet": kubelet}
    assert stored_kind(tmp_path) == "real"


def test_an_existing_state_dir_keeps_its_settings_and_changes_kind_only_when_asked(
    tmp_path: Path,
) -> None:
    LocalCluster(tmp_path, pod_subnet="10.246.4.0/24", bridge="nsst1", node="sim").state.save()
    kept = LocalCluster(tmp_path, pod_subnet="10.246.9.0/24", bridge="other")
    assert (kept.nodes[0].pod_subnet, kept.nodes[0].bridge) == ("10.246.4.0/24", "nsst1")
    assert isinstance(kept.nodes[0], SimNode)
    changed = LocalCluster(tmp_path, node="real")  # nothing runs: the kind may change
    assert changed.single_node(RealNode).pod_subnet == "10.246.4.0/24"


def test_a_state_file_from_before_nodes_is_read_as_its_one_node(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text(
        json.dumps(
            {
                "podSubnet": "10.246.5.0/24",
                "bridge": "nsold0",
                "nodeMode": "real",
                "node": "box",
                "ports": {"etcd": 1234, "kubelet": 1235},
            }
        )
    )
    state = ClusterState(tmp_path)
    assert state.legacy
    assert state.node_specs() == [NodeSpec("box", "real", "10.246.5.0/24", "nsold0")]
    assert state.plane_ports("etcd") == 1234
    assert stored_kind(tmp_path) == "real"


def test_an_ipv4_cluster_is_the_default_and_its_state_file_is_unchanged(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, pod_subnet="10.246.6.0/24", bridge="nsst6", node="real")
    cluster.state.save()
    node = cluster.single_node(RealNode)
    assert cluster.ip_family == "ipv4"
    assert cluster.plane.service_cidrs == ["10.0.0.0/24"]
    assert (node.node_ips, node.spec.pod_subnets) == (["10.246.6.1"], ["10.246.6.0/24"])
    saved = json.loads((tmp_path / "cluster.json").read_text())
    assert "ipFamily" not in saved and "podSubnet6" not in saved["nodes"][0]


def test_a_dual_stack_cluster_keeps_its_family_and_ipv6_subnet(tmp_path: Path) -> None:
    made = LocalCluster(
        tmp_path,
        pod_subnet="10.246.7.0/24",
        pod_subnet6="fd6e:7368:7::/64",
        bridge="nsst7",
        node="real",
        ip_family="dual",
    )
    made.state.save()
    again = LocalCluster(tmp_path)  # no flag: the state dir's family
    node = again.single_node(RealNode)
    assert again.ip_family == "dual"
    assert again.plane.service_cidrs == ["10.0.0.0/24", "fd6e:7368:5e::/112"]
    assert node.spec.pod_subnets == ["10.246.7.0/24", "fd6e:7368:7::/64"]
    assert node.node_ips == ["10.246.7.1", "fd6e:7368:7::1"]
    assert node.host_network().other_subnets == ("fd6e:7368:7::/64",)
    with pytest.raises(ClusterError, match="--ip-family dual"):
        LocalCluster(tmp_path, ip_family="ipv4")
    default = LocalCluster(tmp_path / "d", node="real", ip_family="dual").single_node(RealNode)
    assert default.spec.pod_subnet6 == DEFAULT_POD_SUBNET6


def test_dual_stack_is_refused_on_the_node_simulator(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="real node only"):
        LocalCluster(tmp_path, node="sim", ip_family="dual")
    with pytest.raises(ClusterError, match="real node only"):
        LocalCluster(tmp_path / "default", ip_family="dual")  # a new state dir's default: sim


def test_a_subnet_of_the_wrong_family_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"--pod-subnet6 10\.1\.0\.0/24 is not an IPv6 network"):
        LocalCluster(tmp_path, node="real", ip_family="dual", pod_subnet6="10.1.0.0/24")
    with pytest.raises(ClusterError, match="--pod-subnet fd00::/64 is not an IPv4 network"):
        LocalCluster(tmp_path, node="real", pod_subnet="fd00::/64")
    with pytest.raises(ClusterError, match="add --ip-family dual"):
        LocalCluster(tmp_path, node="real", pod_subnet6="fd6e:7368:1::/64")
