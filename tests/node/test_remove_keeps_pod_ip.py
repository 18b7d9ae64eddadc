"""`oldDefault: Remove` with the real plugins in real namespaces: the pod IP Kubernetes reports
keeps answering through the new network, and stays reserved in its pool until the pod goes.

The node is a network namespace of its own (nothing happens on the host): the old
network A (bridge + host-local, a pool of five addresses, as a cluster network made
by the runtime) and the new one, a bridge network B or a ptp network C, each filtering
by source (rp_filter=1), and a client on a third subnet routed by the node. The agent's
own reconcile (observe, plan, execute, report) runs in a thread that entered the node's
namespace, so the plugins it runs have their host side there, as on a node; the pod
object it reads is a dict this test updates with the agent's reports.

While the pod moves from A to the new network and A is removed, the routed client and
the node ping the old address at 10 ms (counted exactly) and keep a TCP stream to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent import netlink
from agent.execute import Executor
from agent.netns import Sandbox
from agent.networks import NetworkConfigs
from agent.observe import as_current, observe
from agent.plan import Wish, next_requeue, plan_pod
from agent.report import build_report
from localcluster.probe import SeqPing, Stream
from localcluster.topology import V4, V6, Subnet, Topology, subnets
from netshift import annotations as ann
from netshift import keys
from netshift.cni.config import CniError, load_conflist
from netshift.cni.executor import CniExecutor
from netshift.cni.nad import attachment_runtime
from netshift.cni.results import result_ips
from netshift.pod import Pod
from netshift.records import RecordStore
from support import timeouts
from support.builders import unique
from support.netns import host_local_allocations
from support.require import CNI_DIR, needs_node_host

pytestmark = pytest.mark.timeout(timeouts.SWITCH_LAB)

NS = "team"
POOL = 5  # A's range: .10 - .14
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread that entered the namespace at `path` (subprocesses it starts too)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert _libc.setns(fd, 0x40000000) == 0, os.strerror(ctypes.get_errno())
        finally:
            os.close(fd)
        try:
            out.append(fn())
        except BaseException as err:  # handed to the caller
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def _ipam(subnet: Subnet, data_dir: Path, **v4_range: str) -> dict[str, Any]:
    """host-local over the subnet's families (IPv4 narrowed to `v4_range`), a default each."""
    ranges = [
        [{"subnet": subnet.cidr(f), **(v4_range if f == V4 else {})}] for f in subnet.families
    ]
    return {
        "type": "host-local",
        "ranges": ranges,
        "routes": [{"dst": "0.0.0.0/0" if f == V4 else "::/0"} for f in subnet.families],
        "dataDir": str(data_dir),
    }


@dataclass
class Node:
    topo: Topology
    path: str  # the node's netns
    store_a: Path
    executor: Executor
    configs: NetworkConfigs
    cni: CniExecutor
    pods: list[str] = field(default_factory=list)  # netns names made here

    def new_netns(self) -> str:
        name = f"{self.topo.name}p{len(self.pods)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        self.pods.append(name)
        return name


class FakePodObject:
    """The pod as the apiserver would hold it: annotations the agent's reports update."""

    def __init__(self, netns: str, ips: list[str]) -> None:
        self.uid = str(uuid.uuid4())
        self.netns = f"/var/run/netns/{netns}"
        self.ips = ips
        self.ip = ips[0]
        entry = ann.NetworkStatusEntry(name="cluster-a", interface="eth0", ips=ips, default=True)
        self.annotations = {keys.NETWORK_STATUS_KEY: ann.format_network_status([entry])}

    def obj(self) -> dict[str, Any]:
        return {
            "metadata": {
                "namespace": NS,
                "name": "web",
                "uid": self.uid,
                "annotations": dict(self.annotations),
            },
            "status": {
                "phase": "Running",
                "podIP": self.ip,
                "podIPs": [{"ip": ip} for ip in self.ips],
            },
        }


def reconcile(node: Node, pod: FakePodObject) -> float | None:
    """One run of the agent's converge for the pod (agent.reconcile.Agent.converge)."""
    view = Pod.from_object(pod.obj())
    sandbox = Sandbox(id=pod.uid, netns=pod.netns)

    def run() -> float | None:
        obs = observe(view, sandbox, node.executor.store, node.path)
        wish = Wish(NS, view.annotations, "cluster-a")
        plan = plan_pod(wish, obs.seen(), time.time())
        done = node.executor.run(obs, plan)
        report = build_report(
            view.annotations, obs.network_status, done.records, done.outcomes, plan.forget, "t"
        )
        for k, v in report.changes.items():
            if v is None:
                pod.annotations.pop(k, None)
            else:
                pod.annotations[k] = v
        assert not report.problem, report.problem
        return next_requeue(plan, [as_current(r) for r in done.records], time.time())

    return in_netns(node.path, run)


def converge(node: Node, pod: FakePodObject, within: float = 30.0) -> None:
    """Reconcile as the agent's queue would, until nothing is left to look at again (a
    removal waits for the node's link to the new network, a retirement is rechecked)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        again = reconcile(node, pod)
        if again is None:
            return
        time.sleep(min(again, 1.0))


def ask_remove_onto(pod: FakePodObject, network: str, drain: float = 0) -> None:
    """The pod's annotations ask for `network` as its default, with `oldDefault: Remove`."""
    pod.annotations[keys.DEFAULT_NETWORK_KEY] = f"{NS}/{network}"
    pod.annotations[keys.SWITCH_POLICY_KEY] = json.dumps(
        {"oldDefault": "Remove", "drainSeconds": drain}
    )


@pytest.fixture
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    """The node; `request.param` (indirect): the address families of A, B and the client."""
    families: tuple[int, ...] = getattr(request, "param", (V4,))
    tag = unique("rm")[:7]
    sa, sb, sd = subnets(3, families, second=237)
    (sc,) = subnets(1, (V4,), second=238)
    topo = Topology(
        name=tag,
        bridges={f"{tag}a": sa, f"{tag}b": sb},
        strict=frozenset({f"{tag}a", f"{tag}b"}),
        routed=sd,
        router=f"{tag}n",
    )
    made: Node | None = None
    try:
        topo.create()
        assert topo.router is not None
        path = f"/var/run/netns/{topo.router}"
        # ptp's host-side veths are made later: strict from birth.
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                topo.router,
                "sysctl",
                "-qw",
                "net.ipv4.conf.default.rp_filter=1",
            ],
            check=True,
        )
        store_a = tmp_path / "ipam-a"
        base = sa.cidr(V4).rsplit(".", 1)[0]
        cluster = {
            "cniVersion": "1.0.0",
            "name": "cluster-a",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": f"{tag}a",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": _ipam(sa, store_a, rangeStart=f"{base}.10", rangeEnd=f"{base}.14"),
                }
            ],
        }
        nads = {
            # The cluster network as a NAD too: a switch back to it (a new interface there).
            f"{NS}/a": cluster,
            f"{NS}/b": {
                "cniVersion": "1.0.0",
                "name": "b",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": f"{tag}b",
                        "isGateway": True,
                        "ipMasq": False,
                        "ipam": _ipam(sb, tmp_path / "ipam-b"),
                    }
                ],
            },
            f"{NS}/c": {
                "cniVersion": "1.0.0",
                "name": "c",
                "plugins": [
                    {
                        "type": "ptp",
                        "ipMasq": False,
                        "ipam": _ipam(sc, tmp_path / "ipam-c"),
                    }
                ],
            },
        }

        def nad(key: str) -> dict[str, Any] | None:
            conf = nads.get(key)
            return None if conf is None else {"spec": {"config": json.dumps(conf)}}

        configs = NetworkConfigs(nad, load_conflist(json.dumps(cluster)))
        cni = CniExecutor([CNI_DIR])
        executor = Executor(
            RecordStore(tmp_path / "records"), cni, configs, lambda _uid: None, host_netns=path
        )
        made = Node(topo, path, store_a, executor, configs, cni)
        yield made
    finally:
        for name in made.pods if made else []:
            subprocess.run(["ip", "netns", "del", name], check=False)
        topo.delete()


def runtime_add_all(node: Node, netns: str, ifname: str, uid: str) -> list[str]:
    """What the runtime (Multus) does at sandbox creation: the cluster network as eth0."""
    assert node.configs.cluster_net is not None
    rt = attachment_runtime(
        namespace=NS, name="web", uid=uid, netns=f"/var/run/netns/{netns}", ifname=ifname
    )
    result = in_netns(node.path, lambda: node.cni.add(node.configs.cluster_net, rt))  # type: ignore[arg-type]
    return [ip.split("/")[0] for ip in result_ips(result, ifname)]


def runtime_add(node: Node, netns: str, ifname: str, uid: str) -> str:
    return runtime_add_all(node, netns, ifname, uid)[0]


def ips_on(netns: str, ifname: str, family: str = "-4") -> list[str]:
    out = subprocess.run(
        ["ip", "-n", netns, family, "-o", "addr", "show", "dev", ifname],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [line.split()[3] for line in out.splitlines()]


def node_routes(node: Node, dst: str) -> str:
    assert node.topo.router is not None
    return subprocess.run(
        ["ip", "-n", node.topo.router, "-6" if ":" in dst else "-4", "route", "show", dst],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def start_pod(node: Node) -> tuple[str, FakePodObject]:
    netns = node.new_netns()
    pod_uid = str(uuid.uuid4())
    pod = FakePodObject(netns, runtime_add_all(node, netns, "eth0", pod_uid))
    pod.uid = pod_uid
    converge(node, pod)  # adopts eth0
    return netns, pod


def probe_from_client_and_node(
    node: Node, netns: str, address: str
) -> tuple[list[SeqPing], list[Stream]]:
    """10 ms pings and a TCP stream to `address` from the routed client and from the node."""
    topo = node.topo
    assert topo.router is not None
    pings = [SeqPing(topo.routed_client, address), SeqPing(topo.router, address)]
    for ping in pings:
        assert ping.wait_first(), f"no first echo from {address} in {ping.netns}"
    return pings, [Stream(netns, topo.routed_client, address), Stream(netns, topo.router, address)]


@needs_node_host
@pytest.mark.parametrize("new", ["b", "c"], ids=["bridge", "ptp"])
def test_remove_keeps_the_reported_ip_answering_and_reserved_until_the_pod_goes(
    node: Node, new: str
) -> None:
    netns, pod = start_pod(node)
    old = pod.ip
    assert host_local_allocations(str(node.store_a)) == [old]
    pings, streams = probe_from_client_and_node(node, netns, old)

    ask_remove_onto(pod, new)
    converge(node, pod)

    # eth0 is gone; the reported address is on the new default interface and routed to it.
    links = netlink.list_interfaces(pod.netns)
    assert "eth0" not in {link.name for link in links}
    assert ips_on(netns, "net1")[-1:] == [f"{old}/32"], ips_on(netns, "net1")
    new_ip = ips_on(netns, "net1")[0].split("/")[0]
    route = node_routes(node, old)
    assert f"via {new_ip}" in route, route
    for ping in pings:
        assert ping.settle(100), f"no echoes from {old} any more in {ping.netns}"
    lost = {ping.netns: ping.stop() for ping in pings}
    broken = [s.stop() for s in streams]
    print(f"Remove onto {new}: pings {lost}, streams {broken}, route {route!r}")
    assert all(not missing for _n, missing in lost.values()), lost
    assert all(s["alive"] for s in broken), broken
    status = json.loads(pod.annotations[keys.STATUS_KEY])
    assert [a["interface"] for a in status["attachments"]] == ["net1"]
    assert status["retained"] == [f"{old}/24"]

    # Held: A's pool hands out its other four addresses, never the reported one, then is full.
    assert host_local_allocations(str(node.store_a)) == [old]
    others = [node.new_netns() for _ in range(POOL)]
    got = []
    for i, other in enumerate(others[:-1]):
        got.append(runtime_add(node, other, "eth0", f"other-{i}"))
    assert old not in got and len(set(got)) == POOL - 1, got
    with pytest.raises(CniError):
        runtime_add(node, others[-1], "eth0", "other-last")

    # The pod goes (its netns still there, eth0 long gone): the route goes, then A's DEL
    # releases the address, exactly once.
    assert in_netns(node.path, lambda: node.executor.cleanup(pod.uid))
    assert node_routes(node, old) == ""
    assert old not in host_local_allocations(str(node.store_a))
    assert node.executor.store.list_pod(pod.uid) == []
    assert in_netns(node.path, lambda: node.executor.cleanup(pod.uid))  # nothing left to do
    assert runtime_add(node, others[-1], "eth0", "other-last") == old  # free again


@needs_node_host
def test_a_retirement_cut_short_by_a_crash_is_finished_by_the_next_agent(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    netns, pod = start_pod(node)
    old = pod.ip
    ask_remove_onto(pod, "b")
    reconcile(node, pod)  # the switch

    def crash(_netns: str, _ifname: str) -> bool:
        raise OSError(
            "killed"
        )  # the agent dies between carrying the address and the link's removal

    with monkeypatch.context() as m:
        m.setattr(netlink, "delete_link", crash)
        with contextlib.suppress(OSError):
            reconcile(node, pod)
    (rec,) = [r for r in node.executor.store.list_pod(pod.uid) if r.interface == "eth0"]
    assert rec.role == keys.RETIRED_DEFAULT
    # A new agent (the same records) finishes it; the address was never released.
    node.executor = Executor(
        RecordStore(node.executor.store.root),
        node.cni,
        node.configs,
        lambda _uid: None,
        host_netns=node.path,
    )
    converge(node, pod)
    assert "eth0" not in {link.name for link in netlink.list_interfaces(pod.netns)}
    assert f"{old}/32" in ips_on(netns, "net1")
    assert host_local_allocations(str(node.store_a)) == [old]
    ping = SeqPing(node.topo.routed_client, old)
    assert ping.wait_first() and ping.settle(20)
    _n, lost = ping.stop()
    assert not lost
    assert in_netns(node.path, lambda: node.executor.cleanup(pod.uid))
    assert host_local_allocations(str(node.store_a)) == []


@needs_node_host
def test_a_second_remove_moves_the_reported_ip_on_and_releases_the_middle_network(
    node: Node,
) -> None:
    """A (reported) -> B (Remove: A retired, its IP carried by B) -> C (Remove: B is not
    reported, so it is released; A's IP moves to C before B goes). Counted across both."""
    netns, pod = start_pod(node)
    old = pod.ip
    pings, streams = probe_from_client_and_node(node, netns, old)
    policy = json.dumps({"oldDefault": "Remove", "drainSeconds": 1})
    pod.annotations[keys.SWITCH_POLICY_KEY] = policy
    for new in ("b", "c"):
        pod.annotations[keys.DEFAULT_NETWORK_KEY] = f"{NS}/{new}"
        converge(node, pod)
        for ping in pings:
            assert ping.settle(50), f"no echoes from {old} in {ping.netns} after {new}"
    links = {link.name for link in netlink.list_interfaces(pod.netns)}
    assert links == {"net2"}, links
    assert f"{old}/32" in ips_on(netns, "net2")
    assert "dev veth" in node_routes(node, old), node_routes(node, old)
    lost = {ping.netns: ping.stop() for ping in pings}
    broken = [s.stop() for s in streams]
    print(f"Remove A>B>C: pings {lost}, streams {broken}")
    assert all(not missing for _n, missing in lost.values()), lost
    assert all(s["alive"] for s in broken), broken
    assert host_local_allocations(str(node.store_a)) == [old]
    assert host_local_allocations(str(node.store_a.parent / "ipam-b")) == []
    assert in_netns(node.path, lambda: node.executor.cleanup(pod.uid))
    assert node_routes(node, old) == ""
    assert host_local_allocations(str(node.store_a)) == []


@needs_node_host
@pytest.mark.parametrize("node", [(V4, V6)], indirect=True, ids=["dual"])
def test_a_dual_stack_pod_keeps_both_reported_ips_answering(node: Node) -> None:
    """Both reported addresses are carried (/32 and /128), with no drain: the retirement
    follows the switch at once. IPv6 filters by source with an ip6tables rpfilter rule on
    the bridges, so the node's old path stays a second route of a higher metric while the
    pod's replies move over; and the node's new route goes via the pod's new address, which
    the node cannot resolve while its new bridge's link-local address is tentative: the
    removal waits for that."""
    netns, pod = start_pod(node)
    v4, v6 = pod.ips
    topo = node.topo
    assert topo.router is not None
    pings = [SeqPing(topo.routed_client, v4), SeqPing(topo.routed_client, v6)]
    pings.append(SeqPing(topo.router, v6))
    for ping in pings:
        assert ping.wait_first(), f"no first echo from {ping.target} in {ping.netns}"
    for ping in pings:
        ping.settle(50)
        ping.reset()
    for ping in pings:
        assert ping.wait_first(), f"no echo from {ping.target} after the warm-up"
    streams = [Stream(netns, topo.routed_client, v6), Stream(netns, topo.routed_client, v4)]
    # No drain: without the wait, the node's ping and the IPv6 stream lost about a second
    # in every run (its neighbour solicitations for the pod's new address were not sent);
    # without the second route, one echo in some runs (dropped by rpfilter).
    ask_remove_onto(pod, "b")
    converge(node, pod)
    assert "eth0" not in {link.name for link in netlink.list_interfaces(pod.netns)}
    assert f"{v6}/128" in ips_on(netns, "net1", "-6") and f"{v4}/32" in ips_on(netns, "net1")
    routes = node_routes(node, v6)
    assert "via" in routes and len(routes.splitlines()) == 1, routes  # the old path went
    for ping in pings:
        assert ping.settle(100), f"no echoes from {ping.target} any more in {ping.netns}"
    lost = {f"{ping.netns}->{ping.target}": ping.stop() for ping in pings}
    broken = [s.stop() for s in streams]
    leaks = {k: v for k, v in topo.leaked().items() if v}
    print(f"dual Remove onto b: pings {lost}, streams {broken}, packets off-subnet {leaks}")
    assert all(not missing for _n, missing in lost.values()), lost
    assert all(s["alive"] for s in broken), broken
    status = json.loads(pod.annotations[keys.STATUS_KEY])
    assert sorted(ip.split("/")[0] for ip in status["retained"]) == sorted([v4, v6])
    assert sorted(host_local_allocations(str(node.store_a))) == sorted([v4, v6])
    assert in_netns(node.path, lambda: node.executor.cleanup(pod.uid))
    assert node_routes(node, v6) == "" and node_routes(node, v4) == ""
    assert host_local_allocations(str(node.store_a)) == []


def pod_pings_from(netns: str, source: str, target: str) -> bool:
    """Whether `target` answers a ping sent from the pod's address `source`."""
    return (
        subprocess.run(
            ["ip", "netns", "exec", netns, "ping", "-6", "-nq", "-c2", "-W1", "-I", source, target],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


@needs_node_host
@pytest.mark.parametrize("node", [(V4, V6)], indirect=True, ids=["dual"])
def test_the_nodes_old_ipv6_path_accepts_the_pods_replies_until_they_move(node: Node) -> None:
    """The moment inside a retirement after the node's route to the reported IPv6 address has
    moved, before the pod's source rules go: the pod's replies from it still leave by the old
    interface. The node's rpfilter accepts them there only while the old path is a second
    route (bridge_host_routes); once the new path is settled, it drops them, as it must."""
    netns, pod = start_pod(node)
    _v4, v6 = pod.ips
    pod.annotations[keys.DEFAULT_NETWORK_KEY] = f"{NS}/b"  # Keep: eth0 stays, its rules too
    converge(node, pod)
    rec = node.executor.store.get(pod.uid, "net1")
    assert rec is not None and rec.result is not None
    new_v6 = next(ip for ip in result_ips(rec.result, "net1") if ":" in ip)
    routes = netlink.host_routes_via(node.path, [v6], [new_v6])
    node_a = node.topo.bridges[f"{node.topo.name}a"].gateway(V6)
    assert pod_pings_from(netns, v6, node_a), "the old path did not answer before anything moved"
    netlink.carry_addresses(pod.netns, "net1", [v6])
    netlink.bridge_host_routes(node.path, routes)
    assert pod_pings_from(netns, v6, node_a), "rpfilter dropped the replies on the old path"
    lines = node_routes(node, v6).splitlines()
    assert len(lines) == 2 and "via" in lines[0] and "metric 1536" in lines[1], lines
    netlink.install_host_routes(node.path, routes)
    assert len(node_routes(node, v6).splitlines()) == 1
    assert not pod_pings_from(netns, v6, node_a), "the settled node still takes the old path"
    assert in_netns(node.path, lambda: node.executor.cleanup(pod.uid))


def own_addresses(netns: str, ifname: str) -> list[str]:
    """The addresses the interface's network gave it (no carried host address, no link-local)."""
    return [
        ip.split("/")[0]
        for family in ("-4", "-6")
        for ip in ips_on(netns, ifname, family)
        if not ip.startswith("fe80") and not ip.endswith(("/32", "/128"))
    ]


def drain_for(node: Node, pod: FakePodObject, seconds: float) -> None:
    """Reconcile as the agent's queue would for `seconds` (inside a drain)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        again = reconcile(node, pod)
        time.sleep(min(again if again is not None else 0.5, 0.5, deadline - time.monotonic()))


@needs_node_host
@pytest.mark.parametrize("node", [(V4, V6)], indirect=True, ids=["dual"])
def test_switching_back_and_forth_with_remove_keeps_every_drained_default_answering(
    node: Node,
) -> None:
    """A (reported) -> B -> A -> B -> A, each with Remove: A's reported addresses are carried
    by B, then by a new interface on A, and so on. While each previous default drains, its
    own connections stay up (they go with it after the drain); the reported addresses lose
    no echo and no connection. IPv6 lost 1-4 echoes in every run when the node's old path
    to them went before the pod's replies had moved off the drained carrier."""
    netns, pod = start_pod(node)
    topo = node.topo
    assert topo.router is not None
    old = [Stream(netns, topo.routed_client, ip) for ip in pod.ips]
    pings = [SeqPing(topo.routed_client, ip) for ip in pod.ips]
    for ping in pings:
        assert ping.wait_first(), f"no first echo from {ping.target}"
    ask_remove_onto(pod, "b")
    converge(node, pod)
    report: list[tuple[str, list[dict[str, object]]]] = []
    for target in ("a", "b", "a"):
        (previous,) = {link.name for link in netlink.list_interfaces(pod.netns)}
        own = [Stream(netns, topo.routed_client, ip) for ip in own_addresses(netns, previous)]
        ask_remove_onto(pod, target, drain=4)
        drain_for(node, pod, 3)
        report.append((f"{previous} draining, onto {target}", [s.stop() for s in own]))
        converge(node, pod)
        assert previous not in {link.name for link in netlink.list_interfaces(pod.netns)}
    for ping in pings:
        assert ping.settle(50), f"no echoes from {ping.target} any more"
    lost = {ping.target: ping.stop() for ping in pings}
    carried = [s.stop() for s in old]
    print(f"A>B>A>B>A Remove: drained defaults' own streams {report}; pod IPs {lost} {carried}")
    assert all(s["alive"] for _w, streams in report for s in streams), report
    assert all(not missing for _n, missing in lost.values()), lost
    assert all(s["alive"] for s in carried), carried
    # A's pool: the reported addresses (held until the pod goes) and the last A's own.
    (last,) = {link.name for link in netlink.list_interfaces(pod.netns)}
    held = host_local_allocations(str(node.store_a))
    assert sorted(held) == sorted([*pod.ips, *own_addresses(netns, last)]), held
    assert host_local_allocations(str(node.store_a.parent / "ipam-b")) == []
    assert in_netns(node.path, lambda: node.executor.cleanup(pod.uid))
    assert host_local_allocations(str(node.store_a)) == []
