"""Bad network input on the real node: what is refused at the door, and what fails at ADD.

The validating webhook (its pods, called by the apiserver through their Service)
denies a NAD whose config cannot run: broken JSON, a path as plugin type; the
denial names the field and the problem. A config that passes validation but
fails when the plugin runs (an unknown plugin, an IPAM range with no address
left) fails only that attachment of a real pod: Failed in netshift's status, a
Warning Event on the pod, and the pod's other networks (Multus's eth0, a
hot-plugged network) untouched; nothing is left in any host-local store.
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
from localcluster.realnode import RealNode
from netshift import keys, podstatus
from netshift.kube import ApiError, Kube, wait_for
from support.builders import bridge_config, create_nad
from support.realnode import (
    busybox_pod,
    create_running,
    eventually,
    ipv4_of,
    pod_deleted,
    store_addresses,
)


@dataclass
class Side:
    bridge: str
    subnet: str
    store: Path


@pytest.fixture
def side(real_node: RealNode, real_kube: Kube, real_namespace: str) -> Iterator[Side]:
    """A good hot-pluggable network `side` (own bridge, subnet and store)."""
    tag = secrets.token_hex(3)
    net = Side(
        f"nsb{tag}",
        f"10.241.{int(tag[:2], 16) % 250 + 1}.0/24",
        real_node.root / "cni" / "test-networks" / f"bad{tag}",
    )
    create_nad(
        real_kube,
        real_namespace,
        "side",
        bridge_config("side", net.bridge, net.subnet, net.store),
    )
    yield net
    subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)


def _denied(kube: Kube, namespace: str, name: str, config: str) -> str:
    with pytest.raises(ApiError) as caught:
        create_nad(kube, namespace, name, config)
    assert caught.value.status in (400, 403, 422), caught.value
    return str(caught.value)


def test_a_nad_with_broken_json_is_denied_with_a_message_naming_the_problem(
    real_kube: Kube, real_namespace: str
) -> None:
    message = _denied(real_kube, real_namespace, "broken", '{"cniVersion": "1.0.0", "type": ')
    assert "spec.config" in message and "not valid JSON" in message, message
    assert f"{real_namespace}/broken" in message, message


def test_a_nad_with_a_path_as_plugin_type_is_denied_with_a_message_naming_the_field(
    real_kube: Kube, real_namespace: str
) -> None:
    config = {"cniVersion": "1.0.0", "name": "escape", "type": "../../../bin/sh"}
    message = _denied(real_kube, real_namespace, "escape", json.dumps(config))
    assert "spec.config" in message and ".type" in message, message
    ipam_path = bridge_config("escape2", "nsx0", "10.241.0.0/24", Path("/tmp/x"))
    ipam_path["plugins"][0]["ipam"]["type"] = "/usr/lib/cni/host-local"
    message = _denied(real_kube, real_namespace, "escape2", json.dumps(ipam_path))
    assert "ipam.type" in message, message


def _events(kube: Kube, namespace: str, pod: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get(
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.name={pod}",
    )["items"]
    return items


def _attachment(pod: dict[str, Any], interface: str) -> podstatus.AttachmentStatus | None:
    st = podstatus.parse_status(pod["metadata"].get("annotations") or {})
    if st is None or st.observed != podstatus.desired_hash(pod["metadata"]["annotations"]):
        return None
    found = [a for a in st.attachments if a.interface == interface]
    return found[0] if found else None


def _fails_alone(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    node: RealNode,
    side: Side,
    bad: str,
    expect: str,
) -> None:
    """On a running pod with eth0 and side@net1: adding `bad`@net2 fails that attachment
    alone (Failed, a Warning Event naming it and `expect`); taking it back leaks nothing."""
    pod = create_running(kube, namespace, busybox_pod("victim"))
    eth0 = pod["status"]["podIP"]
    path = f"/api/v1/namespaces/{namespace}/pods/victim"
    cluster.kubectl("-n", namespace, "annotate", "pod", "victim", f"{keys.NETWORKS_KEY}=side@net1")
    eventually(lambda: bool(ipv4_of(cluster, namespace, "victim", "net1")), 60, "net1 plugged")
    (net1,) = ipv4_of(cluster, namespace, "victim", "net1")
    links_before = _links(cluster, namespace)

    cluster.kubectl(
        "-n",
        namespace,
        "annotate",
        "--overwrite",
        "pod",
        "victim",
        f"{keys.NETWORKS_KEY}=side@net1,{bad}@net2",
    )

    def failed() -> podstatus.AttachmentStatus | None:
        att = _attachment(kube.get(path), "net2")
        return att if att is not None and att.state == keys.FAILED else None

    att = wait_for(failed, 60, what=f"{bad}@net2 Failed in the pod's status")
    assert expect in att.message, att
    warnings = [
        e
        for e in _events(kube, namespace, "victim")
        if e["type"] == "Warning" and e["reason"] == "AttachFailed"
    ]
    assert warnings and all("net2" in e["message"] for e in warnings), warnings
    assert expect in warnings[0]["message"], warnings[0]
    st = podstatus.parse_status(kube.get(path)["metadata"]["annotations"])
    assert st is not None and st.phase == keys.DEGRADED, st
    others = {a.interface: a for a in st.attachments if a.interface != "net2"}
    assert others["net1"].state == keys.ATTACHED, others
    assert [ip.split("/")[0] for ip in others["net1"].ips] == [net1], others
    # The pod's other networks: the same links with the same addresses, no net2.
    assert ipv4_of(cluster, namespace, "victim", "eth0") == [eth0]
    assert ipv4_of(cluster, namespace, "victim", "net1") == [net1]
    assert _links(cluster, namespace) == links_before
    assert store_addresses(side.store) == {net1}

    # Taken back: the pod converges on what it had.
    cluster.kubectl(
        "-n",
        namespace,
        "annotate",
        "--overwrite",
        "pod",
        "victim",
        f"{keys.NETWORKS_KEY}=side@net1",
    )
    eventually(
        lambda: podstatus.is_settled(kube.get(path)["metadata"]["annotations"]) == (True, False),
        60,
        "the pod Converged without net2",
    )
    assert _links(cluster, namespace) == links_before
    kube.delete(path)
    eventually(lambda: pod_deleted(kube, namespace, "victim"), 60, "the pod deleted")
    eventually(lambda: eth0 not in store_addresses(node.ipam_dir), 30, "eth0 released")
    eventually(lambda: not store_addresses(side.store), 60, "net1's address released")


def _links(cluster: LocalCluster, namespace: str) -> list[str]:
    """(index, name) of each link in the pod, as `ip -o link` prints them."""
    out = cluster.kubectl("-n", namespace, "exec", "victim", "--", "ip", "-o", "link").stdout
    return [" ".join(line.split()[:2]).split("@")[0] for line in out.splitlines()]


def test_an_unknown_plugin_fails_only_its_attachment_of_a_real_pod(
    real_cluster: LocalCluster,
    real_kube: Kube,
    real_namespace: str,
    real_node: RealNode,
    side: Side,
) -> None:
    config = {"cniVersion": "1.0.0", "name": "ghost", "type": "no-such-plugin-here"}
    create_nad(real_kube, real_namespace, "ghost", config)
    _fails_alone(
        real_cluster, real_kube, real_namespace, real_node, side, "ghost", "no-such-plugin-here"
    )


def test_an_exhausted_ipam_range_fails_only_its_attachment_of_a_real_pod(
    real_cluster: LocalCluster,
    real_kube: Kube,
    real_namespace: str,
    real_node: RealNode,
    side: Side,
) -> None:
    tag = secrets.token_hex(3)
    store = real_node.root / "cni" / "test-networks" / f"full{tag}"
    bridge = f"nsf{tag}"
    subnet = f"10.241.{int(tag[:2], 16) % 250 + 1}.0/24"
    config = bridge_config("full", bridge, subnet, store)
    # One address in the range, taken by the first pod.
    only = subnet.replace(".0/24", ".10")
    config["plugins"][0]["ipam"]["ranges"] = [
        [{"subnet": subnet, "rangeStart": only, "rangeEnd": only}]
    ]
    create_nad(real_kube, real_namespace, "full", config)
    try:
        holder = busybox_pod("holder", annotations={keys.NETWORKS_KEY: "full@net1"})
        create_running(real_kube, real_namespace, holder)
        eventually(lambda: store_addresses(store) == {only}, 60, f"{only} taken by the first pod")
        _fails_alone(
            real_cluster,
            real_kube,
            real_namespace,
            real_node,
            side,
            "full",
            "no IP addresses available",
        )
        assert store_addresses(store) == {only}  # still the holder's, and only its
        real_kube.delete(f"/api/v1/namespaces/{real_namespace}/pods/holder")
        eventually(lambda: not store_addresses(store), 60, "the holder's address released")
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_a_malformed_networks_annotation_on_a_running_pod_is_denied_naming_it(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str, side: Side
) -> None:
    pod = create_running(real_kube, real_namespace, busybox_pod("guarded"))
    for value, expect in (
        ("../../etc@net1", keys.NETWORKS_KEY),
        ('[{"name": "side", "interface": "../eth0"}]', "interface"),
    ):
        done = real_cluster.kubectl(
            "-n",
            real_namespace,
            "annotate",
            "pod",
            "guarded",
            f"{keys.NETWORKS_KEY}={value}",
            check=False,
        )
        assert done.returncode != 0, f"{value!r} admitted"
        assert "denied" in done.stderr and expect in done.stderr, done.stderr
    got = real_kube.get(f"/api/v1/namespaces/{real_namespace}/pods/guarded")
    assert keys.NETWORKS_KEY not in got["metadata"]["annotations"]
    assert got["metadata"]["uid"] == pod["metadata"]["uid"]
    assert ipv4_of(real_cluster, real_namespace, "guarded", "eth0") == [pod["status"]["podIP"]]
    assert not store_addresses(side.store)


def test_a_default_switch_to_an_unknown_plugin_degrades_and_eth0_stays_the_default(
    real_cluster: LocalCluster,
    real_kube: Kube,
    real_namespace: str,
    real_node: RealNode,
) -> None:
    config = {"cniVersion": "1.0.0", "name": "ghost", "type": "no-such-plugin-here"}
    create_nad(real_kube, real_namespace, "ghost", config)
    pod = create_running(real_kube, real_namespace, busybox_pod("stuck"))
    eth0 = pod["status"]["podIP"]
    path = f"/api/v1/namespaces/{real_namespace}/pods/stuck"
    links_before = _link_names(real_cluster, real_namespace, "stuck")
    assert "eth0" in links_before
    real_cluster.kubectl(
        "-n",
        real_namespace,
        "annotate",
        "pod",
        "stuck",
        f"{keys.DEFAULT_NETWORK_KEY}={real_namespace}/ghost",
    )
    eventually(
        lambda: (
            podstatus.is_settled(real_kube.get(path)["metadata"]["annotations"]) == (True, True)
        ),
        60,
        "the switch Degraded",
    )
    st = podstatus.parse_status(real_kube.get(path)["metadata"]["annotations"])
    assert st is not None and st.default_interface == "eth0", st
    warnings = [
        e
        for e in _events(real_kube, real_namespace, "stuck")
        if e["type"] == "Warning" and e["reason"] == "DefaultSwitchFailed"
    ]
    assert warnings and "no-such-plugin-here" in warnings[0]["message"], warnings
    route = real_cluster.kubectl(
        "-n", real_namespace, "exec", "stuck", "--", "ip", "-4", "route", "show", "default"
    ).stdout
    assert "dev eth0" in route, route
    assert ipv4_of(real_cluster, real_namespace, "stuck", "eth0") == [eth0]
    # Taken back: converged on eth0 again, nothing left of the failed attempt.
    real_cluster.kubectl(
        "-n", real_namespace, "annotate", "pod", "stuck", f"{keys.DEFAULT_NETWORK_KEY}-"
    )
    eventually(
        lambda: (
            podstatus.is_settled(real_kube.get(path)["metadata"]["annotations"]) == (True, False)
        ),
        60,
        "the pod Converged on eth0",
    )
    assert _link_names(real_cluster, real_namespace, "stuck") == links_before
    real_kube.delete(path)
    eventually(lambda: pod_deleted(real_kube, real_namespace, "stuck"), 60, "the pod deleted")
    eventually(lambda: eth0 not in store_addresses(real_node.ipam_dir), 30, "eth0 released")


def _link_names(cluster: LocalCluster, namespace: str, pod: str) -> list[str]:
    out = cluster.kubectl("-n", namespace, "exec", pod, "--", "ip", "-o", "link").stdout
    return [line.split()[1].rstrip(":").split("@")[0] for line in out.splitlines()]
