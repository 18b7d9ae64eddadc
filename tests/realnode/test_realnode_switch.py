"""The default-network switch of real pods on the real node, through a NetworkProfile rollout.

A Deployment of busybox pods (httpd on 8080 behind a Service) is created in a
namespace a profile selects: the webhook pods inject the old default network A, and
Multus attaches it as eth0 when the kubelet creates each sandbox. The profile then
moves the pods to network B (`rollout.existingPods: Live`), with the controller and
agent running as pods. Around them the host is a node of localcluster.topology:
A and B (bridge + host-local with isGateway and a default route) on bridges that
filter by source (strict rp_filter), and a client namespace on a subnet of its own,
routed by the host.

Probes count exactly during the switches: 10 ms pings by sequence number from the
routed client and from a real container (localcluster.probe's ping through `kubectl exec`),
and HTTP requests through the Service ClusterIP from the host, one after the other.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.probe import SeqPing
from localcluster.realnode import RealNode
from localcluster.topology import V4, Subnet, Topology, subnets
from netshift import keys, podstatus
from netshift.kube import ApiError, Kube, has_default_service_account, wait_for
from support.builders import PROFILES, bridge_config, create_nad, namespace_profile
from support.realnode import (
    HTTPD,
    ExecPing,
    HttpLoop,
    busybox_pod,
    client_pod,
    create_running,
    default_route,
    deployment,
    eventually,
    ipv4_of,
    pod_deleted,
    running_pods,
    service,
    settled_on,
    store_addresses,
    wait_webhook_injects,
)

PODS = 4
SELECTOR = "app=web"


@dataclass
class Lab:
    """Networks A and B in the pods' namespace, the routed client, a client pod elsewhere."""

    cluster: LocalCluster
    kube: Kube
    namespace: str
    client_namespace: str
    topo: Topology
    stores: dict[str, Path]
    subnets: dict[str, Subnet]
    extra_bridges: list[str] = field(default_factory=list)

    def network(self, key: str) -> str:
        return f"{self.namespace}/{key}"

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(
            f"/api/v1/namespaces/{self.namespace}/pods", labelSelector=SELECTOR
        )["items"]
        return items

    def leaked_addresses(self) -> dict[str, set[str]]:
        return {k: s for k, store in self.stores.items() if (s := store_addresses(store))}


@pytest.fixture
def lab(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[Lab]:
    tag = f"nsw{secrets.token_hex(2)}"
    sa, sb, sc = subnets(3, (V4,), second=240)
    bridges = {"a": f"{tag}a", "b": f"{tag}b"}
    topo = Topology(
        name=tag,
        bridges={bridges["a"]: sa, bridges["b"]: sb},
        strict=frozenset(bridges.values()),
        routed=sc,
    )
    client_ns = f"rc-{uuid.uuid4().hex[:8]}"
    real_kube.create("/api/v1/namespaces", {"metadata": {"name": client_ns}})
    made = Lab(
        real_cluster,
        real_kube,
        real_namespace,
        client_ns,
        topo,
        stores={
            k: real_node.root / "cni" / "test-networks" / f"{tag}{k}" for k in ("a", "b", "side")
        },
        subnets={"a": sa, "b": sb},
    )
    topo.create()
    try:
        for key, subnet in made.subnets.items():
            config = bridge_config(
                key,
                bridges[key],
                subnet.cidr(V4),
                made.stores[key],
                default_route=True,
                is_gateway=True,
            )
            create_nad(real_kube, real_namespace, key, config)
        wait_for(
            lambda: has_default_service_account(real_kube, client_ns), 30, what="ServiceAccount"
        )
        yield made
    finally:
        # The pods go before their bridges do (their DELs then find what they made).
        real_cluster.kubectl(
            "-n",
            real_namespace,
            "delete",
            "deployment,pods",
            "--all",
            "--wait=true",
            check=False,
            timeout=90,
        )
        real_cluster.kubectl("delete", "namespace", client_ns, "--wait=false", check=False)
        topo.delete()
        for bridge in made.extra_bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _start_web(lab: Lab, profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The profile, the Deployment on A (injected by the webhook, attached by Multus), the
    Service; returns the pods by UID once the agent reports them on A."""
    lab.kube.create(PROFILES, profile)
    wait_webhook_injects(lab.kube, lab.namespace, keys.DEFAULT_NETWORK_KEY)
    lab.kube.create(
        f"/apis/apps/v1/namespaces/{lab.namespace}/deployments",
        deployment("web", PODS, command=HTTPD),
    )
    wait_for(lambda: running_pods(lab.kube, lab.namespace, SELECTOR, PODS), 120, what="4 pods")
    pods = wait_for(lambda: _all_settled_on(lab, "a"), 60, what="the agent's report on A")
    for pod in pods:
        annotations = pod["metadata"]["annotations"]
        assert annotations[keys.DEFAULT_NETWORK_KEY] == lab.network("a"), annotations
        assert _in(pod["status"]["podIP"], lab.subnets["a"]), pod["status"]
    return {p["metadata"]["uid"]: p for p in pods}


def _all_settled_on(lab: Lab, key: str) -> list[dict[str, Any]] | None:
    items = [p for p in lab.pods() if not p["metadata"].get("deletionTimestamp")]
    done = [p for p in items if settled_on(p, lab.network(key))]
    return done if len(done) == PODS == len(items) else None


def _switch(lab: Lab, profile: str, key: str) -> list[dict[str, Any]]:
    lab.kube.patch_merge(f"{PROFILES}/{profile}", {"spec": {"defaultNetwork": lab.network(key)}})
    moved: list[dict[str, Any]] = wait_for(
        lambda: _all_settled_on(lab, key), 120, what=f"{PODS} pods converged on {key}"
    )
    return moved


def _in(address: str, subnet: Subnet) -> bool:
    import ipaddress

    return ipaddress.ip_address(address) in ipaddress.ip_network(subnet.cidr(V4))


def _interfaces(pod: dict[str, Any]) -> list[str]:
    st = podstatus.parse_status(pod["metadata"]["annotations"])
    return [a.interface for a in st.attachments] if st is not None else []


def _default_of(pod: dict[str, Any]) -> tuple[str, list[str]]:
    """(interface, addresses) the agent reports as the pod's default."""
    st = podstatus.parse_status(pod["metadata"]["annotations"])
    assert st is not None
    (att,) = [a for a in st.attachments if a.interface == st.default_interface]
    return st.default_interface, [ip.split("/")[0] for ip in att.ips]


class Probes:
    """10 ms pings from the routed client and from a client container to each address, and
    the Service from the host; all counted exactly."""

    def __init__(self, lab: Lab, addresses: list[str], url: str | None, clients: list[str]) -> None:
        self.pings: list[SeqPing | ExecPing] = []
        for address, client in zip(addresses, clients, strict=True):
            self.pings.append(SeqPing(lab.topo.routed_client, address))
            self.pings.append(ExecPing(lab.cluster, lab.client_namespace, client, address))
        for ping in self.pings:
            assert ping.wait_first(), f"no first echo from {ping.target}"
        for ping in self.pings:
            ping.settle(20)
        self.started = time.monotonic()
        self.http = HttpLoop(url) if url else None
        if self.http is not None:
            self.http.wait_ok(20)

    def stop(self) -> tuple[int, list[str]]:
        """(echoes counted, problems): every lost echo and failed request, described."""
        for ping in self.pings:
            assert ping.settle(20), f"no echoes from {ping.target} any more"
        problems: list[str] = []
        counted = 0
        for ping in self.pings:
            # A raw ICMP socket that overflowed drops echoes the network delivered.
            dropped = ping.socket_drops() if isinstance(ping, ExecPing) else 0
            n, lost = ping.stop()
            counted += n
            where = "netns" if isinstance(ping, SeqPing) else f"container {ping.pod}"
            if dropped:
                problems.append(f"ping socket in {where} dropped {dropped}: not counted exactly")
            if lost:
                problems.append(
                    f"ping from {where} to {ping.target}: lost {len(lost)} of {n}"
                    + _when(ping, lost, self.started)
                )
        if self.http is not None:
            ok, failed = self.http.stop()
            if failed:
                problems.append(
                    f"Service: {len(failed)} of {ok + len(failed)} failed: {failed[:3]}"
                )
            self.requests = ok
        return counted, problems


def _when(ping: SeqPing | ExecPing, lost: list[int], started: float) -> str:
    """For a container's ping: when the echoes before the losses came, counted from the
    probes' start (a clue for the reader, never asserted)."""
    if not isinstance(ping, ExecPing):
        return ""
    marks = sorted({max((s for s in ping.arrived if s < n), default=n) for n in lost})
    at = [f"{ping.arrived[m] - started:.2f}s" for m in marks if m in ping.arrived]
    return f" (seq {lost[:6]}, after the echo at {', '.join(at[:4])})"


def _client_pods(lab: Lab, prefix: str, n: int) -> list[str]:
    """`n` client pods on the cluster network, one per pinged address (ExecPing)."""
    names = [f"{prefix}-{i}" for i in range(n)]
    for name in names:
        pod = client_pod(name, labels={"app": prefix})
        lab.kube.create(f"/api/v1/namespaces/{lab.client_namespace}/pods", pod)
    wait_for(
        lambda: running_pods(lab.kube, lab.client_namespace, f"app={prefix}", n),
        90,
        what=f"{n} client pods",
    )
    return names


def test_a_rollout_switches_4_real_pods_a_b_a_b_with_keep_and_loses_nothing(lab: Lab) -> None:
    name = f"sw-{lab.namespace}"
    before = _start_web(lab, namespace_profile(name, lab.namespace, "a", maxConcurrent=PODS))
    try:
        url = f"http://{service(lab.kube, lab.namespace, 'web', {'app': 'web'})}/"
        old = [p["status"]["podIP"] for p in before.values()]
        assert store_addresses(lab.stores["a"]) == set(old)
        probes_old = Probes(lab, old, url, _client_pods(lab, "old", PODS))

        timeline: list[str] = []

        def switch(key: str) -> list[dict[str, Any]]:
            begun = time.monotonic() - probes_old.started
            moved = _switch(lab, name, key)
            timeline.append(f"{key} {begun:.2f}-{time.monotonic() - probes_old.started:.2f}s")
            return moved

        moved = switch("b")
        new = {p["metadata"]["uid"]: _default_of(p) for p in moved}
        probes_new = Probes(
            lab, [ips[0] for _, ips in new.values()], None, _client_pods(lab, "new", PODS)
        )
        timeline.append(f"new probes from {probes_new.started - probes_old.started:.2f}s")
        for pod in moved:
            ifname, _ips = new[pod["metadata"]["uid"]]
            assert ifname != "eth0"
            assert f"dev {ifname}" in default_route(
                lab.cluster, lab.namespace, pod["metadata"]["name"]
            )
        back = switch("a")
        for pod in back:
            # Back on A: the kept eth0 (Multus's) carries the default again.
            assert _default_of(pod)[0] == "eth0"
            assert "dev eth0" in default_route(lab.cluster, lab.namespace, pod["metadata"]["name"])
        after = {p["metadata"]["uid"]: p for p in switch("b")}

        counted_old, problems_old = probes_old.stop()
        counted_new, problems_new = probes_new.stop()
        leaks = {k: v for k, v in lab.topo.leaked().items() if v}
        print(
            f"keep A>B>A>B: {counted_old}+{counted_new} echoes, "
            f"{probes_old.requests} Service requests, {problems_old + problems_new}, leaks {leaks}"
            f"; switches {timeline}"
        )
        assert not problems_old and not problems_new and not leaks, (
            problems_old,
            problems_new,
            leaks,
        )
        assert set(after) == set(before), "pods were recreated"
        for uid, pod in after.items():
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
            # Keep: the pod IP stays on eth0 and in A's store; the Service kept answering.
            assert pod["status"]["podIP"] == before[uid]["status"]["podIP"]
            assert ipv4_of(lab.cluster, lab.namespace, pod["metadata"]["name"], "eth0") == [
                pod["status"]["podIP"]
            ]
            ifname, ips = _default_of(pod)
            assert ifname == new[uid][0] and ips == new[uid][1]  # B's interface, reused
            route = default_route(lab.cluster, lab.namespace, pod["metadata"]["name"])
            assert f"dev {ifname}" in route, route
        assert store_addresses(lab.stores["a"]) == set(old)
        assert store_addresses(lab.stores["b"]) == {ips[0] for _, ips in new.values()}

        lab.kube.delete(f"/apis/apps/v1/namespaces/{lab.namespace}/deployments/web")
        eventually(lambda: not lab.pods(), 90, "the pods deleted")
        eventually(lambda: not lab.leaked_addresses(), 60, "every address back in host-local")
    finally:
        with contextlib.suppress(ApiError):
            lab.kube.delete(f"{PROFILES}/{name}")


def test_a_rollout_with_remove_retires_multus_eth0_and_loses_nothing_on_the_way(
    lab: Lab,
) -> None:
    """The pod IPs (eth0's, on A) keep answering through B after eth0 goes, and stay reserved
    in A's pool until the pods are deleted."""
    name = f"swrm-{lab.namespace}"
    drain = 15
    prof = namespace_profile(
        name, lab.namespace, "a", maxConcurrent=PODS, oldDefault="Remove", drainSeconds=drain
    )
    before = _start_web(lab, prof)
    try:
        url = f"http://{service(lab.kube, lab.namespace, 'web', {'app': 'web'})}/"
        old = [p["status"]["podIP"] for p in before.values()]
        bridge_b = next(k for k, v in lab.topo.bridges.items() if v == lab.subnets["b"])
        for ip in old:
            lab.topo.allow(ip, bridge_b)  # carried through B once eth0 is retired
        probes_old = Probes(lab, old, url, _client_pods(lab, "old", PODS))
        lab.kube.patch_merge(f"{PROFILES}/{name}", {"spec": {"defaultNetwork": lab.network("b")}})
        patched = time.monotonic() - probes_old.started

        def switched() -> list[dict[str, Any]] | None:
            items = lab.pods()
            done = [
                p
                for p in items
                if (st := podstatus.parse_status(p["metadata"].get("annotations") or {}))
                and st.default_network == lab.network("b")
                and st.default_interface not in ("", "eth0")
            ]
            return done if len(done) == PODS == len(items) else None

        moved = wait_for(switched, 60, what="4 pods switched to B (draining A)")
        timeline = (
            f"patched at {patched:.2f}s, switched by {time.monotonic() - probes_old.started:.2f}s"
        )
        new = {p["metadata"]["uid"]: _default_of(p) for p in moved}
        probes_new = Probes(
            lab, [ips[0] for _, ips in new.values()], None, _client_pods(lab, "new", PODS)
        )

        def retired() -> list[dict[str, Any]] | None:
            # Converged on B and reporting B's interface alone, eth0's address retained.
            items = _all_settled_on(lab, "b")
            return (
                items
                if items
                and all(_interfaces(p) == [_default_of(p)[0]] for p in items)
                and all(
                    (st := podstatus.parse_status(p["metadata"]["annotations"]))
                    and [ip.split("/")[0] for ip in st.retained] == [p["status"]["podIP"]]
                    for p in items
                )
                else None
            )

        settled = wait_for(retired, drain + 45, what="pods converged on B, eth0 retired")
        # Counted across the switch and the retirement: the old addresses kept answering.
        counted_old, problems_old = probes_old.stop()
        counted_new, problems_new = probes_new.stop()
        assert store_addresses(lab.stores["a"]) == set(old), "the pod IPs are held in A"
        leaks = {k: v for k, v in lab.topo.leaked().items() if v}
        print(
            f"remove A>B: {counted_old}+{counted_new} echoes, {probes_old.requests} Service "
            f"requests, {problems_old + problems_new}, leaks {leaks}; {timeline}"
        )
        assert not problems_old and not problems_new and not leaks, (
            problems_old,
            problems_new,
            leaks,
        )
        assert {p["metadata"]["uid"] for p in settled} == set(before), "pods were recreated"
        for pod in settled:
            pname = pod["metadata"]["name"]
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
            assert ipv4_of(lab.cluster, lab.namespace, pname, "eth0") == []
            ifname, ips = _default_of(pod)
            assert (ifname, ips) == new[pod["metadata"]["uid"]]
            assert f"dev {ifname}" in default_route(lab.cluster, lab.namespace, pname)
        assert store_addresses(lab.stores["b"]) == {ips[0] for _, ips in new.values()}

        # Multus DELs eth0 at teardown, the agent the retired eth0 (that second DEL releases
        # nothing another pod holds) and B's.
        lab.kube.delete(f"/apis/apps/v1/namespaces/{lab.namespace}/deployments/web")
        eventually(lambda: not lab.pods(), 90, "the pods deleted")
        eventually(lambda: not lab.leaked_addresses(), 60, "every address back in host-local")
    finally:
        with contextlib.suppress(ApiError):
            lab.kube.delete(f"{PROFILES}/{name}")


def test_a_pod_with_a_hot_plugged_network_and_a_switched_default_leaks_nothing(
    lab: Lab, real_node: RealNode
) -> None:
    side = f"nss{secrets.token_hex(3)}"
    lab.extra_bridges.append(side)
    create_nad(
        lab.kube,
        lab.namespace,
        "side",
        bridge_config(
            "side", side, f"10.241.{secrets.randbelow(250) + 1}.0/24", lab.stores["side"]
        ),
    )
    pod = create_running(lab.kube, lab.namespace, busybox_pod("both"))
    eth0 = pod["status"]["podIP"]
    assert eth0 in store_addresses(real_node.ipam_dir)
    lab.cluster.kubectl(
        "-n",
        lab.namespace,
        "annotate",
        "pod",
        "both",
        f"{keys.NETWORKS_KEY}=side@data0",
        f"{keys.DEFAULT_NETWORK_KEY}={lab.network('b')}",
    )

    def converged() -> dict[str, Any] | None:
        got = lab.kube.get(f"/api/v1/namespaces/{lab.namespace}/pods/both")
        return got if settled_on(got, lab.network("b")) else None

    got = wait_for(converged, 60, what="data0 plugged and the default on B")
    ifname, ips = _default_of(got)
    assert f"dev {ifname}" in default_route(lab.cluster, lab.namespace, "both")
    (data0,) = ipv4_of(lab.cluster, lab.namespace, "both", "data0")
    assert store_addresses(lab.stores["side"]) == {data0}
    assert store_addresses(lab.stores["b"]) == set(ips)

    lab.kube.delete(f"/api/v1/namespaces/{lab.namespace}/pods/both")
    eventually(lambda: pod_deleted(lab.kube, lab.namespace, "both"), 60, "the pod deleted")
    eventually(
        lambda: eth0 not in store_addresses(real_node.ipam_dir), 30, "eth0 released by Multus"
    )
    eventually(lambda: not lab.leaked_addresses(), 60, "B's and data0's addresses released")


def _mac(bridge: str) -> tuple[str, str]:
    """(address, how it was assigned: 3 = set, 1 = random, taken from a port...)."""
    link = Path("/sys/class/net") / bridge
    return (link / "address").read_text().strip(), (link / "addr_assign_type").read_text().strip()


def test_the_bridges_keep_their_mac_address_as_pods_come_and_go(lab: Lab) -> None:
    """A bridge without an address of its own takes its lowest port's: pods joining or leaving
    would change the gateway's MAC under every other pod's ARP cache (lost packets)."""
    bridges = [lab.cluster.nodes[0].bridge, *lab.topo.bridges]
    before = {b: _mac(b) for b in bridges}
    assert all(kind == "3" for _addr, kind in before.values()), before
    for i in range(3):
        pod = busybox_pod(f"churn-{i}", annotations={keys.DEFAULT_NETWORK_KEY: lab.network("a")})
        create_running(lab.kube, lab.namespace, pod)
        create_running(lab.kube, lab.client_namespace, busybox_pod(f"churn-{i}"))
    for ns in (lab.namespace, lab.client_namespace):
        for i in range(3):
            lab.kube.delete(f"/api/v1/namespaces/{ns}/pods/churn-{i}")
    for ns in (lab.namespace, lab.client_namespace):
        for i in range(3):
            eventually(lambda n=ns, i=i: pod_deleted(lab.kube, n, f"churn-{i}"), 60, "deleted")  # type: ignore[misc]
    assert {b: _mac(b) for b in bridges} == before
