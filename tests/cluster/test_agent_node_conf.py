"""A NAD without spec.config: the agent attaches the node's own CNI conf file of that name.

The agent runs as a process against the real apiserver with `--node-conf-dir`
pointing at a directory of its own (the node's Multus conf dir); pods are the
node simulator's, the plugins the real bridge and host-local. The record keeps
the config the ADD ran, so the DEL is right after the file changed or went.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import netlink
from localcluster.cluster import LocalCluster
from netshift import keys
from netshift.kube import ApiError, Kube, wait_for
from netshift.nadpolicy import POLICY_CONFIGMAP, POLICY_KEY
from support.agent import (
    DEFAULT_NETWORK,
    NETWORKS,
    SWITCH_POLICY,
    AgentProcess,
    Networks,
    agent_status,
    annotate,
    attachment,
    create_running_pod,
    default_route_ifnames,
    interfaces,
    ipam_ips,
    netns_of,
    next_subnet,
    pod_events,
    v4_addresses,
    wait_settled,
)
from support.builders import bridge_config, create_nad

POLICY_PATH = f"/api/v1/namespaces/{keys.NETSHIFT_NAMESPACE}/configmaps"


class NodeFiles:
    """Conf files in the agent's node conf dir, each network with a bridge of its own."""

    def __init__(self, agent: AgentProcess, nets: Networks, tmp_path: Path) -> None:
        self.dir = agent.node_conf_dir
        self.nets = nets
        self.tmp = tmp_path
        self.written: list[Path] = []

    def write(
        self, file: str, name: str, store: str, *, default_route: bool = False
    ) -> dict[str, Any]:
        """A bridge + host-local conflist named `name` (its own subnet and store) in `file`."""
        config = bridge_config(
            name,
            self.nets.links.bridge(),
            next_subnet(),
            self.tmp / store,
            default_route=default_route,
            is_gateway=True,
        )
        path = self.dir / file
        path.write_text(json.dumps(config, indent=2))
        self.written.append(path)
        return config

    def ips(self, store: str, name: str) -> set[str]:
        return ipam_ips(self.tmp / store, name)

    def remove_all(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


@pytest.fixture
def files(agent: AgentProcess, nets: Networks, tmp_path: Path) -> Iterator[NodeFiles]:
    made = NodeFiles(agent, nets, tmp_path)
    yield made
    made.remove_all()


def per_node_nad(kube: Kube, namespace: str, name: str) -> None:
    create_nad(kube, namespace, name, "")  # no spec.config: the node's file of that name


def events(kube: Kube, namespace: str, pod: str, reason: str) -> list[str]:
    return [e["message"] for e in pod_events(kube, namespace, pod) if e["reason"] == reason]


def test_hot_plug_and_unplug_use_the_nodes_file_and_the_del_the_config_of_its_add(
    kube: Kube, namespace: str, files: NodeFiles, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    files.write("10-other.conflist", "other", "other")  # skipped: another name
    first = files.write("30-any-file-name.conflist", "nodenet", "v1")
    per_node_nad(kube, namespace, "nodenet")

    annotate(kube, namespace, "web", {NETWORKS: "nodenet@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    (address,) = v4_addresses(interfaces(path)["data0"])
    assert files.ips("v1", "nodenet") == {address.split("/")[0]}
    wait_for(
        lambda: any(
            "30-any-file-name.conflist" in m for m in events(kube, namespace, "web", "Attached")
        ),
        10,
        what="an Attached Event naming the node's file",
    )
    record = agent.records(pod["metadata"]["uid"])["data0"]
    assert (
        record["conflist"]["plugins"][0]["ipam"]["dataDir"]
        == first["plugins"][0]["ipam"]["dataDir"]
    )

    # The file is rewritten (another subnet and store): the DEL still releases v1's address.
    files.write("30-any-file-name.conflist", "nodenet", "v2")
    annotate(kube, namespace, "web", {NETWORKS: None})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert "data0" not in interfaces(path)
    assert files.ips("v1", "nodenet") == set() and files.ips("v2", "nodenet") == set()

    # Plugged again it is v2; then the file goes, and the DEL is still right.
    annotate(kube, namespace, "web", {NETWORKS: "nodenet@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    (address,) = v4_addresses(interfaces(path)["data0"])
    assert files.ips("v2", "nodenet") == {address.split("/")[0]}
    files.remove_all()
    annotate(kube, namespace, "web", {NETWORKS: None})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert "data0" not in interfaces(path)
    assert files.ips("v2", "nodenet") == set()


def test_no_conf_file_on_the_node_is_an_attach_failure_with_a_warning_never_a_crash(
    kube: Kube,
    namespace: str,
    nets: Networks,
    files: NodeFiles,
    agent: AgentProcess,
    cluster: LocalCluster,
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    per_node_nad(kube, namespace, "ghost")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0, ghost@g0"})
    pod = wait_settled(kube, namespace, "web", keys.DEGRADED)
    report = agent_status(pod)
    assert report is not None
    failed = attachment(report, "g0")
    assert failed.state == keys.FAILED
    expected = (
        f"NetworkAttachmentDefinition {namespace}/ghost has no spec.config (defined per node), "
        f"and no conf file 'ghost' on node {cluster.nodes[0].name} ({agent.node_conf_dir})"
    )
    assert failed.message.startswith(expected), failed.message
    assert expected in report.message
    wait_for(
        lambda: any(expected in m for m in events(kube, namespace, "web", "AttachFailed")),
        10,
        what="an AttachFailed Warning",
    )
    assert attachment(report, "data0").state == keys.ATTACHED and "data0" in interfaces(path)
    assert "g0" not in interfaces(path)
    assert agent.running()

    # The file appears: the retry (1 s, 2 s, 4 s, ... after the failures) attaches it.
    files.write("40-ghost.conflist", "ghost", "ghost")
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED, timeout=90)
    assert "g0" in interfaces(path)
    assert len(files.ips("ghost", "ghost")) == 1


@contextlib.contextmanager
def nad_policy(kube: Kube, text: str) -> Iterator[None]:
    kube.create(POLICY_PATH, {"metadata": {"name": POLICY_CONFIGMAP}, "data": {POLICY_KEY: text}})
    try:
        yield
    finally:
        with contextlib.suppress(ApiError):
            kube.delete(f"{POLICY_PATH}/{POLICY_CONFIGMAP}")


def test_the_nad_policy_judges_the_nodes_file_at_attach_time(
    kube: Kube, namespace: str, files: NodeFiles, agent: AgentProcess, tmp_path: Path
) -> None:
    create_running_pod(kube, namespace, "web")
    files.write("30-nodenet.conflist", "nodenet", "outside")  # its store: tmp_path/outside
    per_node_nad(kube, namespace, "nodenet")
    allowed = str(tmp_path / "allowed")
    with nad_policy(kube, json.dumps({"enabled": True, "ipamDataDirPrefixes": [allowed]})):
        wait_for(
            lambda: "netshift_agent_nad_policy_enabled 1.0" in agent.metrics(),
            30,
            what="the agent to see the NAD policy",
        )
        annotate(kube, namespace, "web", {NETWORKS: "nodenet@data0"})
        pod = wait_settled(kube, namespace, "web", keys.DEGRADED)
        report = agent_status(pod)
        assert report is not None
        message = attachment(report, "data0").message
        node_file = agent.node_conf_dir / "30-nodenet.conflist"
        assert message.startswith(
            f"NetworkAttachmentDefinition {namespace}/nodenet (defined per node by {node_file}) "
            f"is forbidden by the cluster's NAD policy: {node_file}.plugins[0].ipam.dataDir:"
        ), message
        assert files.ips("outside", "nodenet") == set()


def test_a_per_node_network_becomes_the_default_and_gives_its_own_default_route(
    kube: Kube, namespace: str, files: NodeFiles, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    files.write("30-nodenet.conflist", "nodenet", "node", default_route=True)
    per_node_nad(kube, namespace, "nodenet")
    annotate(
        kube,
        namespace,
        "web",
        {DEFAULT_NETWORK: f"{namespace}/nodenet", SWITCH_POLICY: '{"oldDefault": "Keep"}'},
    )
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    report = agent_status(pod)
    assert report is not None and report.default_network == f"{namespace}/nodenet"
    new = report.default_interface
    assert default_route_ifnames(path) == [new]
    record = agent.records(pod["metadata"]["uid"])[new]
    gateway = record["result"]["ips"][0]["gateway"]
    routes = netlink.default_routes(path)
    assert [(r.ifname, r.gateway) for r in routes] == [(new, gateway)], routes


def test_a_swap_behind_one_name_goes_from_a_nad_config_to_the_nodes_file_and_back(
    kube: Kube, namespace: str, nets: Networks, files: NodeFiles
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    files.write("30-nodenet.conflist", "nodenet", "node")
    per_node_nad(kube, namespace, "nodenet")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    (blue_ip,) = v4_addresses(interfaces(path)["data0"])
    assert nets.ips("blue") == {blue_ip.split("/")[0]}

    annotate(kube, namespace, "web", {NETWORKS: "nodenet@data0"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    report = agent_status(pod)
    assert report is not None and attachment(report, "data0").network == f"{namespace}/nodenet"
    (node_ip,) = v4_addresses(interfaces(path)["data0"])
    assert nets.ips("blue") == set()
    assert files.ips("node", "nodenet") == {node_ip.split("/")[0]}

    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert files.ips("node", "nodenet") == set() and len(nets.ips("blue")) == 1
