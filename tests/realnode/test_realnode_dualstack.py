"""Dual-stack switches of real pods on the real node (issue 20): nothing lost on either family.

The session's dual-stack cluster (`netshift up --ip-family dual`: IPv4 and IPv6 pod
subnets, Services of both families, kube-proxy programming both). A Deployment of busybox
pods (httpd on 8080, a TCP echo server on 7000) behind a `PreferDualStack` Service, in a
namespace a NetworkProfile selects: the webhook injects network A, Multus attaches it as
eth0. A and B are bridge + host-local networks with an IPv4 and an IPv6 range each (a
gateway and a default route per family) on bridges that filter by source on both families
(rp_filter=1; an ip6tables `rpfilter --invert -j DROP` rule), and a client namespace on a
routed subnet of its own (localcluster.topology).

Counted exactly, per family, while the profile switches the pods: 10 ms pings by sequence
number from the routed client (localcluster.probe.SeqPing) and from real containers
(localcluster.probe.PINGER through `kubectl exec`), a TCP echo stream from the routed client
to every address, HTTP requests through each of the Service's two ClusterIPs from the host.
The control runs the same probes for as long without any switch.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.probe import SeqPing, Stream
from localcluster.realdemo import main_default_route
from localcluster.topology import V4, V6, Subnet, Topology, subnets
from netshift import keys, podstatus
from netshift.kube import (
    ApiError,
    Kube,
    deployment_path,
    has_default_service_account,
    namespace_path,
    node_path,
    pod_path,
    profile_path,
    service_path,
    wait_for,
)
from support import timeouts
from support.builders import bridge_config, create_nad, namespace_profile
from support.realnode import (
    ExecPing,
    HttpLoop,
    client_pod,
    deployment,
    eventually,
    running_pods,
    settled_on,
    store_addresses,
    wait_webhook_injects,
    webhook_serving,
)

pytestmark = pytest.mark.timeout(timeouts.SWITCH_LAB)

PODS = 4
SELECTOR = "app=web"
ECHO_PORT = 7000
FAMILIES: dict[int, str] = {V4: "IPv4", V6: "IPv6"}
# httpd and a TCP echo server; busybox listens on both families ("*:port").
WEB = [
    "sh",
    "-c",
    'mkdir -p /www && echo "served-by-$(hostname)" > /www/index.html && '
    f"(nc -ll -p {ECHO_PORT} -e cat &) && exec httpd -f -p 8080 -h /www",
]


def family_of(address: str) -> int:
    return V6 if ipaddress.ip_address(address.split("/")[0]).version == 6 else V4


@dataclass
class Lab:
    """Networks A and B (both families) in the pods' namespace, the routed client, client
    pods on the cluster network in a namespace of their own."""

    cluster: LocalCluster
    kube: Kube
    namespace: str
    client_namespace: str
    topo: Topology
    stores: dict[str, Path]
    subnets: dict[str, Subnet]

    def network(self, key: str) -> str:
        return f"{self.namespace}/{key}"

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(
            pod_path(self.namespace), labelSelector=SELECTOR
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]


@pytest.fixture
def lab(dual_cluster: LocalCluster) -> Iterator[Lab]:
    kube = dual_cluster.kube()
    webhook_serving(dual_cluster, kube)
    namespace, client_ns = f"d-{uuid.uuid4().hex[:10]}", f"dc-{uuid.uuid4().hex[:8]}"
    kube.create(
        namespace_path(),
        {"metadata": {"name": namespace, "labels": {"netshift.io/test": "true"}}},
    )
    kube.create(namespace_path(), {"metadata": {"name": client_ns}})
    tag = f"nsd{secrets.token_hex(2)}"
    sa, sb, sc = subnets(3, (V4, V6), second=239)
    bridges = {"a": f"{tag}a", "b": f"{tag}b"}
    topo = Topology(
        name=tag,
        bridges={bridges["a"]: sa, bridges["b"]: sb},
        strict=frozenset(bridges.values()),
        routed=sc,
    )
    node = dual_cluster.nodes[0]
    made = Lab(
        dual_cluster,
        kube,
        namespace,
        client_ns,
        topo,
        stores={k: node.root / "cni" / "test-networks" / f"{tag}{k}" for k in ("a", "b")},
        subnets={"a": sa, "b": sb},
    )
    topo.create()
    try:
        for key, subnet in made.subnets.items():
            config = bridge_config(
                key, bridges[key], subnet, made.stores[key], default_route=True, is_gateway=True
            )
            create_nad(kube, namespace, key, config)
        for ns in (namespace, client_ns):
            wait_for(lambda n=ns: has_default_service_account(kube, n), 30, what="ServiceAccount")  # type: ignore[misc]
        yield made
    finally:
        # The pods go before their bridges do (their DELs then find what they made).
        dual_cluster.kubectl(
            *("-n", namespace, "delete", "deployment,pods", "--all", "--wait=true"),
            check=False,
            timeout=90,
        )
        for ns in (client_ns, namespace):
            dual_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        topo.delete()


def _dual_service(lab: Lab) -> list[str]:
    """A PreferDualStack Service of the web pods; its ClusterIPs, IPv4 first."""
    svc = lab.kube.create(
        service_path(lab.namespace),
        {
            "metadata": {"name": "web"},
            "spec": {
                "ipFamilyPolicy": "PreferDualStack",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )
    ips = [str(ip) for ip in svc["spec"]["clusterIPs"]]
    assert sorted(map(family_of, ips)) == [V4, V6], svc["spec"]
    return ips


def _url(ip: str) -> str:
    return f"http://[{ip}]/" if family_of(ip) == V6 else f"http://{ip}/"


def _all_settled_on(lab: Lab, key: str) -> list[dict[str, Any]] | None:
    items = lab.pods()
    done = [p for p in items if settled_on(p, lab.network(key))]
    return done if len(done) == PODS == len(items) else None


def _start_web(lab: Lab, profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The profile, the Deployment on A (both families on eth0); the pods by UID."""
    lab.kube.create(profile_path(), profile)
    wait_webhook_injects(lab.kube, lab.namespace, keys.DEFAULT_NETWORK_KEY)
    lab.kube.create(deployment_path(lab.namespace), deployment("web", PODS, command=WEB))
    wait_for(lambda: running_pods(lab.kube, lab.namespace, SELECTOR, PODS), 120, what="4 pods")
    pods = wait_for(lambda: _all_settled_on(lab, "a"), 60, what="the agent's report on A")
    for pod in pods:
        ips = [p["ip"] for p in pod["status"]["podIPs"]]
        assert [family_of(ip) for ip in ips] == [V4, V6], pod["status"]
        for ip in ips:
            net = ipaddress.ip_network(lab.subnets["a"].cidr(family_of(ip)))
            assert ipaddress.ip_address(ip) in net, (ip, net)
    return {p["metadata"]["uid"]: p for p in pods}


def _default_of(pod: dict[str, Any]) -> tuple[str, list[str]]:
    """(interface, addresses of both families) the agent reports as the pod's default."""
    st = podstatus.parse_status(pod["metadata"]["annotations"])
    assert st is not None
    (att,) = [a for a in st.attachments if a.interface == st.default_interface]
    ips = sorted((ip.split("/")[0] for ip in att.ips), key=family_of)
    assert [family_of(ip) for ip in ips] == [V4, V6], att
    return st.default_interface, ips


def _interfaces(pod: dict[str, Any]) -> list[str]:
    st = podstatus.parse_status(pod["metadata"]["annotations"])
    return [a.interface for a in st.attachments] if st is not None else []


def _default_routes(lab: Lab, pod: str) -> dict[int, str]:
    """The pod's main-table default route of each family, read inside the container."""
    return {f: main_default_route(lab.cluster, lab.namespace, pod, f) for f in FAMILIES}


def _out_of(route: str, ifname: str) -> bool:
    """Whether `route` ("default via GW dev IF ...") goes out of `ifname`."""
    words = route.split()
    return words[:2] == ["default", "via"] and words[words.index("dev") + 1 :][:1] == [ifname]


def _client_pods(lab: Lab, prefix: str) -> list[str]:
    """A client pod on the cluster network per web pod; it pings both of the pod's
    addresses (localcluster.probe.PINGER: each ping its own ICMP datagram socket)."""
    names = [f"{prefix}-{i}" for i in range(PODS)]
    for name in names:
        pod = client_pod(name, labels={"app": prefix})
        lab.kube.create(pod_path(lab.client_namespace), pod)
    wait_for(
        lambda: running_pods(lab.kube, lab.client_namespace, f"app={prefix}", PODS),
        90,
        what=f"{PODS} client pods",
    )
    return names


@dataclass
class Tally:
    """What one family's probes counted."""

    echoes_routed: int = 0
    lost_routed: int = 0
    echoes_container: int = 0
    lost_container: int = 0
    streams: int = 0
    streams_alive: int = 0
    requests: int = 0
    failed_requests: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __str__(self) -> str:
        return (
            f"routed pings {self.echoes_routed} echoes/{self.lost_routed} lost, container pings "
            f"{self.echoes_container}/{self.lost_container}, TCP streams "
            f"{self.streams_alive}/{self.streams} alive, Service {self.requests} ok/"
            f"{self.failed_requests} failed"
        )


class Probes:
    """Per pod: 10 ms pings to both addresses from the routed client and from a client pod,
    a TCP echo stream from the routed client to both; and the Service over each ClusterIP
    from the host. Counted per family."""

    def __init__(
        self, lab: Lab, pods: list[list[str]], clients: list[str], cluster_ips: list[str]
    ) -> None:
        self.pings: list[SeqPing | ExecPing] = []
        self.streams: list[Stream] = []
        for addresses, client in zip(pods, clients, strict=True):
            for address in addresses:
                self.pings.append(SeqPing(lab.topo.routed_client, address))
                self.pings.append(ExecPing(lab.cluster, lab.client_namespace, client, address))
        for ping in self.pings:
            assert ping.wait_first(20), f"no first echo from {ping.target}"
        for ping in self.pings:
            ping.settle(20)
        for addresses in pods:
            for address in addresses:
                self.streams.append(
                    Stream(None, lab.topo.routed_client, address, port=ECHO_PORT, timeout=2.0)
                )
        self.http = {ip: HttpLoop(_url(ip)) for ip in cluster_ips}
        for loop in self.http.values():
            loop.wait_ok(20)
        self.started = time.monotonic()

    def stop(self) -> tuple[dict[int, Tally], list[str]]:
        """(per family what was counted, problems): every lost echo, dead stream and failed
        request, described."""
        tally = {f: Tally() for f in FAMILIES}
        problems: list[str] = []
        # The streams first: settling the pings and reading their sockets' drops takes a few
        # seconds (an exec each), and a drained default's own streams end with its drain.
        for stream in self.streams:
            t = tally[family_of(stream.host)]
            seen = stream.stop()
            t.streams += 1
            if seen["alive"] and int(str(seen["echoed"])) > 0:
                t.streams_alive += 1
            else:
                problems.append(f"TCP stream to {stream.host}: {seen}")
        for ping in self.pings:
            assert ping.settle(20), f"no echoes from {ping.target} any more"
        for ping in self.pings:
            t = tally[family_of(ping.target)]
            # A ping socket that overflowed drops echoes the network delivered.
            dropped = ping.socket_drops() if isinstance(ping, ExecPing) else 0
            n, lost = ping.stop()
            where = "routed client" if isinstance(ping, SeqPing) else f"container {ping.pod}"
            if isinstance(ping, SeqPing):
                t.echoes_routed, t.lost_routed = t.echoes_routed + n, t.lost_routed + len(lost)
            else:
                t.echoes_container += n
                t.lost_container += len(lost)
            if dropped:
                problems.append(f"ping socket in {where} dropped {dropped}: not counted exactly")
            if lost:
                problems.append(f"ping from {where} to {ping.target}: lost {len(lost)} of {n}")
        for ip, loop in self.http.items():
            t = tally[family_of(ip)]
            ok, failed = loop.stop()
            t.requests += ok
            t.failed_requests += len(failed)
            if failed:
                problems.append(f"Service {ip}: {len(failed)} of {ok + len(failed)} failed")
        return tally, problems


def _report(case: str, tallies: list[dict[int, Tally]], problems: list[str], lab: Lab) -> None:
    total = {f: Tally() for f in FAMILIES}
    for tally in tallies:
        for f, t in tally.items():
            total[f].add(t)
    leaks = {k: v for k, v in lab.topo.leaked().items() if v}
    for f, name in FAMILIES.items():
        print(f"{case} {name}: {total[f]}")
    print(f"{case}: problems {problems}, leaks {leaks}")
    assert not problems and not leaks, (problems, leaks)
    for f, t in total.items():
        assert t.echoes_routed and t.echoes_container and t.requests, (FAMILIES[f], t)
        assert t.streams_alive == t.streams > 0, (FAMILIES[f], t)


def _addresses(pods: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [[p["ip"] for p in pod["status"]["podIPs"]] for pod in pods.values()]


def _delete_web_and_check_every_address_released(lab: Lab) -> None:
    lab.kube.delete(deployment_path(lab.namespace, "web"))
    eventually(lambda: not lab.pods(), 90, "the pods deleted")
    eventually(
        lambda: not any(store_addresses(s) for s in lab.stores.values()),
        60,
        "every address of both families back in host-local",
    )


def _switch_profile(lab: Lab, name: str, key: str) -> None:
    lab.kube.patch_merge(profile_path(name), {"spec": {"defaultNetwork": lab.network(key)}})


def test_the_dual_stack_node_has_an_address_and_a_pod_subnet_of_each_family(
    dual_cluster: LocalCluster,
) -> None:
    """`netshift up --ip-family dual`: the Node's InternalIPs and podCIDRs are both families'
    (IPv4 first, the primary), kube-proxy runs dual-stack."""
    from localcluster.realnode import RealNode

    node = dual_cluster.single_node(RealNode)
    got = dual_cluster.kube().get(node_path(node.name))
    internal = [a["address"] for a in got["status"]["addresses"] if a["type"] == "InternalIP"]
    assert internal == node.node_ips and [family_of(ip) for ip in internal] == [V4, V6]
    assert got["spec"]["podCIDRs"] == node.spec.pod_subnets
    assert [family_of(str(ipaddress.ip_network(c)[1])) for c in node.spec.pod_subnets] == [V4, V6]
    log = (node.layout.log_dir / "kube-proxy.log").read_text()
    assert "kube-proxy running in dual-stack mode" in log


def test_dual_stack_control_without_a_switch_loses_nothing(lab: Lab) -> None:
    """The same probes, as long as a switch takes, and no switch: what they count then is
    the floor the switches are held to (issue 20's IPv6 loss appeared here)."""
    name = f"dctl-{lab.namespace}"
    before = _start_web(lab, namespace_profile(name, lab.namespace, "a", maxConcurrent=PODS))
    try:
        ips = _dual_service(lab)
        probes = Probes(lab, _addresses(before), _client_pods(lab, "ctl"), ips)
        time.sleep(15)
        tally, problems = probes.stop()
        _report("control", [tally], problems, lab)
        assert {p["metadata"]["uid"] for p in lab.pods()} == set(before)
    finally:
        with contextlib.suppress(ApiError):
            lab.kube.delete(profile_path(name))


def test_a_dual_stack_rollout_a_b_a_with_keep_loses_nothing_on_either_family(lab: Lab) -> None:
    name = f"dkeep-{lab.namespace}"
    before = _start_web(lab, namespace_profile(name, lab.namespace, "a", maxConcurrent=PODS))
    try:
        ips = _dual_service(lab)
        old = _addresses(before)
        assert store_addresses(lab.stores["a"]) == {ip for pair in old for ip in pair}
        probes_old = Probes(lab, old, _client_pods(lab, "old"), ips)

        def switch(key: str) -> list[dict[str, Any]]:
            _switch_profile(lab, name, key)
            moved: list[dict[str, Any]] = wait_for(
                lambda: _all_settled_on(lab, key), 120, what=f"{PODS} pods converged on {key}"
            )
            return moved

        moved = switch("b")
        new = {p["metadata"]["uid"]: _default_of(p) for p in moved}
        for pod in moved:
            ifname, _ips = new[pod["metadata"]["uid"]]
            assert ifname != "eth0"
            routes = _default_routes(lab, pod["metadata"]["name"])
            assert all(_out_of(r, ifname) for r in routes.values()), routes
        probes_new = Probes(lab, [v[1] for v in new.values()], _client_pods(lab, "new"), [])
        back = switch("a")
        for pod in back:
            # Back on A: the kept eth0 (Multus's) carries both default routes again.
            assert _default_of(pod)[0] == "eth0"
            routes = _default_routes(lab, pod["metadata"]["name"])
            assert all(_out_of(r, "eth0") for r in routes.values()), routes

        tally_old, problems_old = probes_old.stop()
        tally_new, problems_new = probes_new.stop()
        _report("keep", [tally_old, tally_new], problems_old + problems_new, lab)
        after = {p["metadata"]["uid"]: p for p in lab.pods()}
        assert set(after) == set(before), "pods were recreated"
        for uid, pod in after.items():
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
            assert pod["status"]["podIPs"] == before[uid]["status"]["podIPs"]
        # Keep: both of A's addresses and B's (kept too) still reserved, nothing else.
        assert store_addresses(lab.stores["a"]) == {ip for pair in old for ip in pair}
        assert store_addresses(lab.stores["b"]) == {ip for _, pair in new.values() for ip in pair}

        _delete_web_and_check_every_address_released(lab)
    finally:
        with contextlib.suppress(ApiError):
            lab.kube.delete(profile_path(name))


def test_a_dual_stack_rollout_a_b_a_with_remove_loses_nothing_on_either_family(
    lab: Lab,
) -> None:
    """Remove: Multus's eth0 is retired after its drain, its two addresses (the pod IPs the
    kubelet reports) carried through B and then through A's new interface, held in A's pool
    until the pods go; B's own addresses are released when the pods leave B. The reported
    addresses and the Service (both ClusterIPs) are counted across the whole run; B's
    addresses while the pods are on B."""
    name = f"drm-{lab.namespace}"
    # Long enough for the probes of B's own addresses to be read before B's drain ends.
    drain = 20
    prof = namespace_profile(
        name, lab.namespace, "a", maxConcurrent=PODS, oldDefault="Remove", drainSeconds=drain
    )
    before = _start_web(lab, prof)
    try:
        ips = _dual_service(lab)
        reported = _addresses(before)
        bridge_b = next(k for k, v in lab.topo.bridges.items() if v == lab.subnets["b"])
        for pair in reported:
            for ip in pair:
                lab.topo.allow(ip, bridge_b)  # carried through B once eth0 is retired
        held = {ip for pair in reported for ip in pair}  # in A's pool until the pods go
        whole_run = Probes(lab, reported, _client_pods(lab, "one"), ips)

        def settled(key: str, released: str) -> list[dict[str, Any]] | None:
            """On `key`, reporting its interface alone, both pod IPs retained, and the
            network `released` holding none of the pods' own addresses any more."""
            items = _all_settled_on(lab, key)
            ok = (
                items
                and all(_interfaces(p) == [_default_of(p)[0]] for p in items)
                and all(
                    (st := podstatus.parse_status(p["metadata"]["annotations"]))
                    and sorted((ip.split("/")[0] for ip in st.retained), key=family_of)
                    == [a["ip"] for a in p["status"]["podIPs"]]
                    for p in items
                )
                and not (store_addresses(lab.stores[released]) - held)
            )
            return items if ok else None

        _switch_profile(lab, name, "b")
        on_b_pods = wait_for(lambda: settled("b", "a"), drain + 60, what="pods on B, eth0 retired")
        on_b = {p["metadata"]["uid"]: _default_of(p) for p in on_b_pods}
        while_on_b = Probes(lab, [v[1] for v in on_b.values()], _client_pods(lab, "two"), [])
        time.sleep(3)
        _switch_profile(lab, name, "a")
        # B's own addresses answer until B's drain ends, then are released (not reported).
        wait_for(
            lambda: (items := _all_settled_on(lab, "a")) and len(items) == PODS,
            60,
            what="pods switched back to A",
        )
        tally_b, problems_b = while_on_b.stop()
        on_a_pods = wait_for(lambda: settled("a", "b"), drain + 60, what="pods on A, B released")
        on_a = {p["metadata"]["uid"]: _default_of(p) for p in on_a_pods}
        time.sleep(3)
        tally, problems = whole_run.stop()
        _report("remove", [tally, tally_b], problems + problems_b, lab)

        after = {p["metadata"]["uid"]: p for p in lab.pods()}
        assert set(after) == set(before), "pods were recreated"
        for uid, pod in after.items():
            pname = pod["metadata"]["name"]
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
            assert pod["status"]["podIPs"] == before[uid]["status"]["podIPs"]
            ifname, addresses = _default_of(pod)
            assert (ifname, addresses) == on_a[uid] and ifname not in ("eth0", on_b[uid][0])
            routes = _default_routes(lab, pname)
            assert all(_out_of(r, ifname) for r in routes.values()), routes
        own_a = {ip for _, pair in on_a.values() for ip in pair}
        assert store_addresses(lab.stores["a"]) == held | own_a, "the pod IPs are held in A"
        assert not store_addresses(lab.stores["b"])
        _delete_web_and_check_every_address_released(lab)
    finally:
        with contextlib.suppress(ApiError):
            lab.kube.delete(profile_path(name))


def test_the_demo_on_a_dual_stack_cluster_shows_and_counts_both_families(
    dual_cluster: LocalCluster,
) -> None:
    """`IP_FAMILY=dual make demo`: the same code (localcluster/realdemo.py) on the session's
    dual-stack cluster; a row per pod and family in the table, both ClusterIPs answering."""
    from localcluster import realdemo

    lines: list[str] = []
    ok = realdemo.run(dual_cluster, pods=3, keep=False, say=lines.append)
    out = "\n".join(lines)
    print(out)  # the demo's table, for `pytest -s`
    rows = [line.split() for line in out.splitlines() if " IPv4 " in line or " IPv6 " in line]
    assert sum("IPv4" in r for r in rows) == 3 and sum("IPv6" in r for r in rows) == 3, out
    services = [line for line in out.splitlines() if line.startswith("Service web (")]
    assert len(services) == 2 and all(", 0 failed;" in line for line in services), out
    assert "verdict: same pods, same containers, no restart" in out, out
    assert "host-local holds 0 address(es)" in out, out
    assert ok, out
