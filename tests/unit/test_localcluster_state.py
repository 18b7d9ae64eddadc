"""A state dir keeps its plane's ports and each node's own settings (cluster.json; no processes).

A new state dir gets one node of the kind asked for; an existing one keeps what it was
made with; each node lives under `<state>/nodes/<name>/` with ports of its own; a state
dir from before nodes/ is read as its one node.
"""

from __future__ import annotations

import json
from pathlib import Path

from localcluster.cluster import LocalCluster
from localcluster.realnode import RealNode
from localcluster.simnode import SimNode
from localcluster.state import ClusterState, NodeSpec, stored_kind


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
