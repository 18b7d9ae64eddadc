"""The agent switches a running pod's default network, make-before-break (issue 5, agent part).

`v1.multus-cni.io/default-network` edited on a running pod: the new network is
attached as the next free netN, verified, given the default route, reported;
only then is the old default (eth0, the node simulator's cluster network)
kept or, after the drain, removed.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localcluster.cluster import LocalCluster
from localcluster.probe import socket_in
from netshift import keys
from netshift.kube import Kube, wait_for
from support.agent import (
    DEFAULT_NETWORK,
    SWITCH_POLICY,
    AgentProcess,
    Networks,
    agent_status,
    annotate,
    create_running_pod,
    default_route_ifnames,
    get_pod,
    has_event,
    interfaces,
    ipam_ips,
    netns_of,
    network_status,
    ping,
    pod_events,
    route_get,
    sh,
    wait_settled,
)

OFF_LINK = "192.0.2.1"  # TEST-NET-1: reached only through a default route


def cluster_ipam_ips(cluster: LocalCluster) -> set[str]:
    """What the node simulator's host-local store holds for the cluster network."""
    return ipam_ips(cluster.nodes[0].ipam_dir, "netshift-cluster")


@contextmanager
def tcp_connection(
    client_netns: str, server_netns: str, server_ip: str
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """An established TCP connection from the pod to a server in another pod."""
    server = socket_in(server_netns, socket.AF_INET)
    client = socket_in(client_netns, socket.AF_INET)
    try:
        server.bind((server_ip, 0))
        server.listen(1)
        server.settimeout(5)
        client.settimeout(5)
        client.connect((server_ip, server.getsockname()[1]))
        conn, _ = server.accept()
        conn.settimeout(5)
        try:
            yield client, conn
        finally:
            conn.close()
    finally:
        client.close()
        server.close()


def round_trip(client: socket.socket, conn: socket.socket, payload: bytes) -> None:
    client.sendall(payload)
    assert conn.recv(100) == payload
    conn.sendall(payload[::-1])
    assert client.recv(100) == payload[::-1]


def source_rules(netns: str) -> str:
    return sh("ip", "-n", Path(netns).name, "rule", "show").stdout


def test_switching_the_default_network_moves_the_default_route_and_keeps_old_connections(
    kube: Kube, namespace: str, nets: Networks, cluster: LocalCluster
) -> None:
    peer = create_running_pod(kube, namespace, "peer")
    pod = create_running_pod(kube, namespace, "web")
    path, old_ip = netns_of(pod), pod["status"]["podIP"]
    peer_ip = peer["status"]["podIP"]
    nets.bridge("fast", is_gateway=True, default_route=True)
    assert default_route_ifnames(path) == ["eth0"]

    with tcp_connection(path, netns_of(peer), peer_ip) as (client, conn):
        round_trip(client, conn, b"before the switch")
        assert client.getsockname()[0] == old_ip

        annotate(kube, namespace, "web", {DEFAULT_NETWORK: f"{namespace}/fast"})  # Keep
        pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

        # The connection opened from the old address is still alive.
        round_trip(client, conn, b"after the switch")

    ifs = interfaces(path)
    assert set(ifs) == {"eth0", "net1"}  # the next free netN
    new_ip = [a.split("/")[0] for a in ifs["net1"].addresses if nets.in_subnet("fast", a)]
    assert len(new_ip) == 1 and ifs["net1"].up
    assert default_route_ifnames(path) == ["net1"]
    assert " dev net1 " in route_get(path, OFF_LINK)
    # Replies from the old address still leave through the old interface (source routing).
    assert " dev eth0 " in route_get(path, OFF_LINK, src=old_ip)
    assert f"from {old_ip} lookup" in source_rules(path)

    status = network_status(pod)
    assert status["net1"]["name"] == f"{namespace}/fast"
    assert status["net1"].get("default") is True
    assert status["net1"]["ips"] == new_ip
    assert not status["eth0"].get("default")
    assert [i for i, e in status.items() if e.get("default")] == ["net1"]

    report = agent_status(pod)
    assert report is not None and report.phase == keys.CONVERGED
    assert report.default_network == f"{namespace}/fast"
    assert report.default_interface == "net1"
    assert report.switched_at
    # Switched by hand (kubectl annotate), not by a rollout: the pod gets its own Event.
    assert has_event(kube, namespace, "web", "DefaultNetworkSwitched")

    # Keep: the old default stays, with its address, and still answers on the pod IP.
    assert old_ip in [a.split("/")[0] for a in interfaces(path)["eth0"].addresses]
    assert old_ip in cluster_ipam_ips(cluster)
    assert ping(netns_of(peer), old_ip)
    # The new network's address answers too (from a netns on the same bridge).
    other = create_running_pod(kube, namespace, "other")
    annotate(kube, namespace, "other", {"k8s.v1.cni.cncf.io/networks": "fast@data0"})
    wait_settled(kube, namespace, "other", keys.CONVERGED)
    assert ping(netns_of(other), new_ip[0])


def test_switching_with_remove_retires_the_old_default_and_holds_its_ip_until_the_pod_goes(
    kube: Kube, namespace: str, nets: Networks, cluster: LocalCluster
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path, old_ip = netns_of(pod), pod["status"]["podIP"]
    nets.bridge("fast", is_gateway=True, default_route=True)
    assert old_ip in cluster_ipam_ips(cluster)

    annotate(
        kube,
        namespace,
        "web",
        {
            SWITCH_POLICY: json.dumps({"oldDefault": "Remove", "drainSeconds": 1}),
            DEFAULT_NETWORK: f"{namespace}/fast",
        },
    )
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert default_route_ifnames(path) == ["net1"]

    wait_for(lambda: "eth0" not in interfaces(path), 20, what="eth0 removed after the drain")
    # The kubelet (here the node simulator) reports old_ip as the pod IP: it answers through
    # net1 and stays reserved until the pod goes.
    assert old_ip in cluster_ipam_ips(cluster)
    from_node = subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", "2", old_ip], check=False)
    assert from_node.returncode == 0, f"{old_ip} does not answer the node any more"

    def reported() -> bool:
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/web")
        return set(network_status(pod)) == {"net1"}

    wait_for(reported, 10, what="network-status without eth0")
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert set(interfaces(path)) == {"net1"}
    assert default_route_ifnames(path) == ["net1"]
    assert network_status(pod)["net1"].get("default") is True
    report = agent_status(pod)
    assert report is not None
    assert [a.interface for a in report.attachments] == ["net1"]
    assert report.default_interface == "net1" and report.switched_at
    assert report.retained and report.retained[0].split("/")[0] == old_ip
    # Its source routing went with it.
    assert f"from {old_ip}" not in source_rules(path)
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/web")
    wait_for(
        lambda: old_ip not in cluster_ipam_ips(cluster),
        30,
        what=f"{old_ip} released in the node's host-local store once the pod is gone",
    )


def test_switching_back_to_the_cluster_network_reuses_the_kept_eth0(
    kube: Kube, namespace: str, nets: Networks, cluster: LocalCluster
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path, old_ip = netns_of(pod), pod["status"]["podIP"]
    eth0 = interfaces(path)["eth0"]
    nets.bridge("fast", is_gateway=True, default_route=True)
    annotate(kube, namespace, "web", {DEFAULT_NETWORK: f"{namespace}/fast"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert default_route_ifnames(path) == ["net1"]

    annotate(kube, namespace, "web", {DEFAULT_NETWORK: None})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert default_route_ifnames(path) == ["eth0"]
    assert interfaces(path)["eth0"].index == eth0.index  # the same link, never re-plugged
    status = network_status(pod)
    assert [i for i, e in status.items() if e.get("default")] == ["eth0"]
    report = agent_status(pod)
    assert report is not None and report.default_interface == "eth0"
    assert " dev eth0 " in route_get(path, OFF_LINK)
    assert old_ip in cluster_ipam_ips(cluster)
    # eth0's source routing from the first switch is gone; net1 (kept) has its own now.
    rules = source_rules(path)
    assert f"from {old_ip}" not in rules
    new_ip = next(a.split("/")[0] for a in interfaces(path)["net1"].addresses)
    assert f"from {new_ip} lookup" in rules
    assert " dev net1 " in route_get(path, OFF_LINK, src=new_ip)


def test_a_new_default_whose_result_has_no_default_route_is_refused_and_released(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    """The issue's `storage`: a bridge that is no gateway, no routes in its IPAM. host-local
    still names a gateway (the subnet's .1) that nothing answers: never a default route."""
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    routes_before = sh("ip", "-n", Path(path).name, "route", "show").stdout
    rules_before = source_rules(path)
    nets.bridge("storage")
    annotate(kube, namespace, "web", {DEFAULT_NETWORK: f"{namespace}/storage"})
    pod = wait_settled(kube, namespace, "web", keys.DEGRADED)
    report = agent_status(pod)
    assert report is not None and report.default_interface == "eth0"
    (failed,) = [a for a in report.attachments if a.network == f"{namespace}/storage"]
    assert failed.state == keys.FAILED
    assert failed.message.startswith(
        f"{namespace}/storage is not a default network: the CNI result for {failed.interface} "
        "has no default route (routes: none) (its gateway "
    ), failed.message

    def warnings() -> list[str]:
        return [
            e["message"]
            for e in pod_events(kube, namespace, "web")
            if e["reason"] == "DefaultSwitchFailed" and e["type"] == "Warning"
        ]

    # Events go out after the status patch, from the agent's background sender.
    (first, *_) = wait_for(warnings, 10, what="a DefaultSwitchFailed Warning")
    assert "is not a default network" in first, first
    assert first.endswith("the old default stays"), first
    # The old default as it was, no trace of the refused network, its address released.
    assert default_route_ifnames(path) == ["eth0"]
    assert sh("ip", "-n", Path(path).name, "route", "show").stdout == routes_before
    assert source_rules(path) == rules_before
    assert failed.interface not in interfaces(path)
    assert nets.ips("storage") == set()
    record = agent.records(uid)[failed.interface]
    assert record["state"] == keys.FAILED and record["result"] is None
    assert [i for i, e in network_status(pod).items() if e.get("default")] == ["eth0"]


def test_a_new_default_whose_add_always_fails_keeps_its_name_and_backs_off(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    nets.raw("broken", {"cniVersion": "1.0.0", "name": "broken", "type": "no-such-plugin-here"})
    annotate(kube, namespace, "web", {DEFAULT_NETWORK: f"{namespace}/broken"})
    wait_settled(kube, namespace, "web", keys.DEGRADED)

    def failures() -> list[tuple[str, int]]:
        """(interface, attempt) of each DefaultSwitchFailed Warning, oldest first."""
        found = []
        for event in pod_events(kube, namespace, "web"):
            if event["reason"] == "DefaultSwitchFailed" and event["type"] == "Warning":
                match = re.search(r"@(\w+): .*\(attempt (\d+), retry in", event["message"])
                assert match, event["message"]
                found.append((match[1], int(match[2])))
        return found

    # Backoff 1s, 2s, 4s: a fourth attempt comes about 7s after the first, and no more
    # than five attempts fit in the next 10s. A retry loop would make dozens.
    wait_for(lambda: len(failures()) >= 4, 30, what="a fourth attempt at the new default")
    time.sleep(3)
    seen = failures()
    assert len(seen) <= 5, f"{len(seen)} failed attempts: {seen}"
    assert len({interface for interface, _ in seen}) == 1, seen  # one name, not net1, net2, ...
    assert [attempt for _, attempt in seen] == list(range(1, len(seen) + 1)), seen
    interface = seen[0][0]
    record = agent.records(uid)[interface]
    assert record["state"] == keys.FAILED and int(record["attempts"]) == len(seen)
    assert set(agent.records(uid)) == {"eth0", interface}  # no second incoming default
    assert default_route_ifnames(path) == ["eth0"]
    report = agent_status(get_pod(kube, namespace, "web"))
    assert report is not None and report.default_interface == "eth0"
