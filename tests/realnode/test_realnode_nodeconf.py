"""Networks as real clusters define them, on the real node: a NAD without spec.config names the
node's own CNI conf file (Multus's confDir), and a default network is one whose result gives a
default route.

The conf file (bridge + host-local with a store of its own) sits in the real node's Multus
confDir, which the agent's pod reads where the DaemonSet mounts a node's
(/etc/cni/multus/net.d). Probes come from a client namespace on a subnet of its own, routed by
the node, with strict reverse-path filtering on the per-node network's bridge and on the
cluster network's bridge: a reply from an old address that took the new interface is dropped.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.probe import SeqPing
from localcluster.realnode import CLUSTER_NETWORK, RealNode
from localcluster.topology import V4, Subnet, Topology, subnets
from netshift import keys, podstatus
from netshift.kube import Kube, wait_for
from support.builders import bridge_config, create_nad, namespace_profile
from support.realnode import (
    busybox_pod,
    create_running,
    default_route,
    eventually,
    ipv4_of,
    pod_deleted,
    settled_on,
    store_addresses,
)


@dataclass
class Lab:
    cluster: LocalCluster
    node: RealNode
    kube: Kube
    namespace: str
    topo: Topology
    name: str  # the per-node network: the conf file's "name" and the NAD's
    bridge: str
    subnet: Subnet
    conf_file: Path
    stores: list[Path]
    extra_bridges: list[str]

    def write_conf(self, store: Path, subnet: str | None = None) -> dict[str, Any]:
        """The node's conf file: bridge + host-local in `store`, a default route via .1."""
        config = bridge_config(
            self.name,
            self.bridge,
            subnet or self.subnet.cidr(V4),
            store,
            default_route=True,
            is_gateway=True,
        )
        if store not in self.stores:
            self.stores.append(store)
        self.conf_file.write_text(json.dumps(config, indent=2))
        return config

    def status(self, pod: str) -> podstatus.PodNetStatus:
        got = self.kube.get(f"/api/v1/namespaces/{self.namespace}/pods/{pod}")
        st = podstatus.parse_status(got["metadata"].get("annotations") or {})
        assert st is not None, got["metadata"].get("annotations")
        return st

    def wait_settled(self, pod: str, network: str, timeout: float = 60) -> dict[str, Any]:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}"

        def done() -> dict[str, Any] | None:
            got: dict[str, Any] = self.kube.get(path)
            return got if settled_on(got, network) else None

        found: dict[str, Any] = wait_for(done, timeout, what=f"{pod} settled on {network}")
        return found

    def annotate(self, pod: str, changes: dict[str, str | None]) -> None:
        self.kube.patch_merge(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
            {"metadata": {"annotations": changes}},
        )


def _sysctl(key: str, value: str) -> str:
    before = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, check=True)
    subprocess.run(["sysctl", "-qw", f"{key}={value}"], check=True)
    return before.stdout.strip()


@pytest.fixture
def lab(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[Lab]:
    tag = f"nc{secrets.token_hex(2)}"
    sa, routed = subnets(2, (V4,), second=240)
    bridge = f"{tag}b"
    topo = Topology(name=tag, bridges={bridge: sa}, strict=frozenset({bridge}), routed=routed)
    made = Lab(
        real_cluster,
        real_node,
        real_kube,
        real_namespace,
        topo,
        name=f"nodenet-{tag}",
        bridge=bridge,
        subnet=sa,
        conf_file=real_node.layout.cluster_conf_dir / f"50-{tag}.conflist",
        stores=[],
        extra_bridges=[],
    )
    cluster_bridge = real_node.bridge
    # The routed client reaches the pods' old (cluster network) addresses through the node,
    # which filters by source on that bridge as on the per-node network's.
    saved = {
        key: _sysctl(key, "1")
        for key in (
            f"net.ipv4.conf.{cluster_bridge}.forwarding",
            f"net.ipv4.conf.{cluster_bridge}.rp_filter",
        )
    }
    topo.create()
    try:
        made.write_conf(real_node.root / "cni" / "test-networks" / f"{tag}-v1")
        create_nad(real_kube, real_namespace, made.name, "")  # no spec.config: per node
        yield made
    finally:
        real_cluster.kubectl(
            "-n", real_namespace, "delete", "pods", "--all", "--wait=true", check=False, timeout=90
        )
        eventually(
            lambda: not any(store_addresses(s) for s in made.stores),
            60,
            "every address of the per-node network back in host-local",
        )
        made.conf_file.unlink(missing_ok=True)
        topo.delete()
        for extra in made.extra_bridges:
            subprocess.run(["ip", "link", "del", extra], capture_output=True)
        for key, value in saved.items():
            _sysctl(key, value)


def _pod(lab: Lab, name: str) -> dict[str, Any]:
    return create_running(lab.kube, lab.namespace, busybox_pod(name))  # type: ignore[no-any-return]


def test_a_nad_without_config_is_the_nodes_conf_file_hot_plugged_and_unplugged_with_the_add_config(
    lab: Lab,
) -> None:
    _pod(lab, "plug")
    first = lab.stores[0]
    lab.annotate("plug", {keys.NETWORKS_KEY: f"{lab.name}@data0"})
    lab.wait_settled("plug", CLUSTER_NETWORK)
    (address,) = ipv4_of(lab.cluster, lab.namespace, "plug", "data0")
    assert store_addresses(first) == {address}

    # The node's file is rewritten between the ADD and the DEL: another subnet, another store.
    second = lab.node.root / "cni" / "test-networks" / f"{lab.topo.name}-v2"
    (other,) = subnets(1, (V4,), second=240)
    lab.write_conf(second, other.cidr(V4))
    lab.annotate("plug", {keys.NETWORKS_KEY: None})
    lab.wait_settled("plug", CLUSTER_NETWORK)
    assert not ipv4_of(lab.cluster, lab.namespace, "plug", "data0")
    assert [a.interface for a in lab.status("plug").attachments] == ["eth0"]
    # The DEL ran with the recorded config: v1's address is back, v2 never held one.
    assert store_addresses(first) == set() and store_addresses(second) == set()


def _probe(lab: Lab, address: str) -> SeqPing:
    ping = SeqPing(lab.topo.routed_client, address)
    assert ping.wait_first(), f"no first echo from {address}"
    ping.settle(20)
    return ping


@pytest.mark.parametrize("old_default", ["Keep", "Remove"])
def test_the_nodes_network_becomes_the_default_with_its_own_route_and_no_probe_is_lost(
    lab: Lab, old_default: str
) -> None:
    pod = _pod(lab, f"def-{old_default.lower()}")
    name, old_ip = pod["metadata"]["name"], pod["status"]["podIP"]
    old = _probe(lab, old_ip)
    for bridge in lab.topo.bridges:
        lab.topo.allow(old_ip, bridge)  # Remove: the reported pod IP is carried through it
    drain = 4
    lab.annotate(
        name,
        {
            keys.DEFAULT_NETWORK_KEY: f"{lab.namespace}/{lab.name}",
            keys.SWITCH_POLICY_KEY: json.dumps({"oldDefault": old_default, "drainSeconds": drain}),
        },
    )
    got = lab.wait_settled(name, f"{lab.namespace}/{lab.name}")
    st = podstatus.parse_status(got["metadata"]["annotations"])
    assert st is not None
    ifname = st.default_interface
    (new_ip,) = ipv4_of(lab.cluster, lab.namespace, name, ifname)
    # Exactly the route its result gives: via the file's gateway (host 1 of its subnet).
    (route,) = default_route(lab.cluster, lab.namespace, name).splitlines()
    assert f"{route} ".startswith(f"default via {lab.subnet.gateway(V4)} dev {ifname} "), route
    new = _probe(lab, new_ip)
    if old_default == "Remove":
        # After the drain eth0 is retired: the reported pod IP moves onto the new interface,
        # keeps answering (its probe runs on) and stays held until the pod goes (issue 22).
        eventually(
            lambda: [a.interface for a in lab.status(name).attachments] == [ifname],
            drain + 30,
            "eth0 retired, gone from the status",
        )
        assert ipv4_of(lab.cluster, lab.namespace, name, "eth0") == []
        assert old_ip in store_addresses(lab.node.ipam_dir), "the reported pod IP is held"
        assert old.settle(20)
        counted_old, lost_old = old.stop()
    else:
        assert old.settle(20)
        counted_old, lost_old = old.stop()
        assert ipv4_of(lab.cluster, lab.namespace, name, "eth0") == [old_ip]
    assert new.settle(20)
    counted_new, lost_new = new.stop()
    leaks = lab.topo.leaked()
    print(
        f"{old_default}: {counted_old} echoes to the old address, lost {lost_old}; "
        f"{counted_new} to the new, lost {lost_new}; leaks {leaks}"
    )
    assert not lost_old and not lost_new and not any(leaks.values())
    assert store_addresses(lab.stores[0]) == {new_ip}
    lab.kube.delete(f"/api/v1/namespaces/{lab.namespace}/pods/{name}")
    eventually(lambda: pod_deleted(lab.kube, lab.namespace, name), 60, "the pod deleted")
    eventually(lambda: not store_addresses(lab.stores[0]), 60, "the new address released")
    eventually(lambda: old_ip not in store_addresses(lab.node.ipam_dir), 60, "the pod IP released")


def test_a_gateway_less_default_is_refused_by_the_plan_and_by_the_agent_and_the_route_stays(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    store = lab.node.root / "cni" / "test-networks" / f"{lab.topo.name}-storage"
    lab.stores.append(store)
    (storage_net,) = subnets(1, (V4,), second=240)
    # The issue's `storage`: no gateway (isGateway false), no routes in its IPAM.
    lab.extra_bridges.append(f"{lab.topo.name}s")
    create_nad(
        lab.kube,
        lab.namespace,
        "storage",
        bridge_config("storage", lab.extra_bridges[-1], storage_net.cidr(V4), store),
    )
    name = f"gwless-{lab.namespace}"
    manifest = tmp_path / "profile.yaml"
    manifest.write_text(json.dumps(namespace_profile(name, lab.namespace, "storage")))
    code = main(["plan", "-f", str(manifest), f"--kubeconfig={lab.cluster.kubeconfig}"])
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n$ netshift plan -f {manifest}  # exit {code}\n{out}")
    assert code == 1
    assert f"NOT SAFE to apply: {lab.namespace}/storage is not a default network" in out

    # The same profile for the per-node network is fine: its file is read and shown.
    manifest.write_text(json.dumps(namespace_profile(name, lab.namespace, lab.name)))
    local = [f"--kubeconfig={lab.cluster.kubeconfig}", f"--state-dir={lab.cluster.state_dir}"]
    code = main(["plan", "-f", str(manifest), *local])
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n$ netshift plan -f {manifest}  # exit {code}\n{out}")
    assert code == 0, out
    assert f"per node ({lab.node.name}: {lab.conf_file})" in out
    assert f'"name": "{lab.name}"' in out

    pod = _pod(lab, "gwless")
    before = default_route(lab.cluster, lab.namespace, "gwless")
    assert before.endswith("dev eth0")
    lab.annotate("gwless", {keys.DEFAULT_NETWORK_KEY: f"{lab.namespace}/storage"})

    def warned() -> list[str]:
        events = lab.kube.get(
            f"/api/v1/namespaces/{lab.namespace}/events",
            fieldSelector="involvedObject.name=gwless,reason=DefaultSwitchFailed",
        )["items"]
        return [e["message"] for e in events if e["type"] == "Warning"]

    eventually(lambda: bool(warned()), 60, "a DefaultSwitchFailed Warning")
    print(f"DefaultSwitchFailed: {warned()[0]}")
    assert f"{lab.namespace}/storage is not a default network" in warned()[0]
    st = lab.status("gwless")
    assert st.phase == keys.DEGRADED and st.default_interface == "eth0"
    assert st.default_network == CLUSTER_NETWORK
    assert default_route(lab.cluster, lab.namespace, "gwless") == before
    assert store_addresses(store) == set()  # the refused attachment was released
    assert pod["status"]["podIP"] in ipv4_of(lab.cluster, lab.namespace, "gwless", "eth0")
