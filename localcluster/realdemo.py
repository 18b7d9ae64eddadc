"""`netshift demo` on the local cluster's real node: real containers, a Service, Multus.

A Deployment of busybox containers (an HTTP server and a TCP echo server each)
behind a Service, in namespace `netshift-demo`, which a NetworkProfile selects:
the webhook gives the pods network old-cni as their default at creation and
Multus attaches it as eth0. While traffic runs, the profile's default network
is switched to new-cni; the controller rolls it out and the agent moves each
pod's default route make-before-break, keeping the old address. Traffic, all
counted exactly:

- 10 ms pings to every pod, by sequence number, from a client namespace on a
  subnet of its own that the node routes (strict reverse-path filtering on both
  networks' bridges, as anti-spoofing CNIs do), and from real containers (one
  client pod per web pod, on the cluster network, by `kubectl exec`);
- a TCP echo stream to every pod (2 s timeout: a stall is a failure);
- HTTP requests through the Service's ClusterIP (kube-proxy), from the host
  every 50 ms and from the client container.

Then a before/after table, read with `kubectl exec … ip route` in each pod:
same pod UIDs and containers, no restart, the default route on the new
interface, nothing lost. Cleaning up, it checks that host-local holds no
address of the demo's pods any more.

On a dual-stack cluster (`netshift up --ip-family dual`) every network has an IPv4
and an IPv6 range and the Service both families' ClusterIPs: every probe above runs
to each address of each pod and to each ClusterIP, and the table has a row per
family, its default route before and after.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster.cluster import LocalCluster
from localcluster.demokit import (
    DEMO_LABEL,
    NEW,
    NS,
    OLD,
    PROFILE,
    apply,
    bridge_nad,
    profile,
    selected,
    switched_count,
    table,
)
from localcluster.probe import HttpProbe, SeqPing, Stream, container_ping_argv
from localcluster.realnode import image_name
from localcluster.topology import V4, V6, Subnet, Topology
from netshift.kube import (
    ApiError,
    Kube,
    deployment_path,
    has_default_service_account,
    nad_path,
    namespace_path,
    pod_path,
    profile_path,
    service_path,
    wait_for,
)

CLIENT_NS = "netshift-demo-client"  # not selected by the profile: stays on the cluster network
ROUTED = ("10.251.9.0/24", "fd6e:7368:251:9::/64")  # the routed client's own subnet
# The demo networks' IPv6 ranges on a dual-stack cluster (their IPv4 ones are in demokit).
SUBNET6 = {OLD[0]: "fd6e:7368:251:1::/64", NEW[0]: "fd6e:7368:251:2::/64"}
FAMILY_NAMES: dict[int, str] = {V4: "IPv4", V6: "IPv6"}
HTTP_PORT, ECHO_PORT = 8080, 7000
SELECTOR = "app=web"
OLD_IF = "eth0"  # Multus attaches the creation-time default as eth0
# Each container: its name as the web page, a TCP echo server, an HTTP server.
WEB_COMMAND = (
    "mkdir -p /www && hostname > /www/index.html && "
    f"(nc -ll -p {ECHO_PORT} -e cat &) && exec httpd -f -p {HTTP_PORT} -h /www"
)

Say = Callable[[str], None]


def _busybox(name: str, command: str, ports: list[int]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image_name("BUSYBOX_IMAGE"),
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
    }
    if ports:
        container["ports"] = [{"containerPort": p} for p in ports]
        container["readinessProbe"] = {"tcpSocket": {"port": ports[0]}, "periodSeconds": 2}
    return {"terminationGracePeriodSeconds": 1, "containers": [container]}


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": _busybox("web", WEB_COMMAND, [HTTP_PORT, ECHO_PORT]),
            },
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            # A ClusterIP of each family the cluster has (one on an IPv4 cluster).
            "ipFamilyPolicy": "PreferDualStack",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}],
        },
    }


def client_pod(index: int) -> dict[str, Any]:
    """A client pod per web pod: busybox (wget) and netshift's image, whose Python runs
    localcluster.probe's PINGER: busybox ping's socket keeps 18 echoes of a burst (an
    address being resolved holds a flow's first ones) and drops the rest, which would be
    counted as lost. PINGER's ICMP datagram sockets need ping_group_range (a safe sysctl)."""
    spec = _busybox("client", "exec sleep 100000", [])
    spec["containers"].append(
        {
            "name": "pinger",
            "image": image_name("NETSHIFT_IMAGE"),
            "imagePullPolicy": "Never",
            "command": ["sleep", "100000"],
        }
    )
    spec["securityContext"] = {
        "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}]
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"client-{index}",
            "namespace": CLIENT_NS,
            "labels": {"app": "client"},
        },
        "spec": spec,
    }


def families(cluster: LocalCluster) -> list[int]:
    """The cluster's IP families (V4, V6), from its node's pod subnets, IPv4 first."""
    versions = [ipaddress.ip_network(s).version for s in cluster.nodes[0].spec.pod_subnets]
    return [V4 if v == 4 else V6 for v in versions]


def family_of(address: str) -> int:
    return V6 if ipaddress.ip_address(address).version == 6 else V4


@dataclass
class PodView:
    name: str
    uid: str
    ips: list[str]  # status.podIPs: one per family, IPv4 first
    restarts: int
    container: str  # the container's id: a recreated sandbox would make a new one
    default_routes: dict[int, str]  # `ip -4|-6 route show default` inside the container


def main_default_route(cluster: LocalCluster, namespace: str, pod: str, family: int) -> str:
    """The pod's `family` default route of its main table, read with busybox `ip` in the
    container ("-" if none). busybox's `ip -6 route show` lists the IPv6 routes of every
    table (the agent keeps an old interface's default in a table of its own, for the old
    addresses); with `table all` it names each other table, and those lines are left out."""
    flag = "-4" if family == V4 else "-6"
    route = cluster.kubectl(
        *("-n", namespace, "exec", pod, "--", "ip", flag, "route", "show", "table", "all"),
        "default",
        check=False,
    )
    main = [line.strip() for line in route.stdout.splitlines() if " table " not in line]
    return (main or ["-"])[0] if route.returncode == 0 else "-"


def pod_views(cluster: LocalCluster, kube: Kube) -> list[PodView]:
    views = []
    for pod in kube.get(pod_path(NS), labelSelector=SELECTOR)["items"]:
        name = pod["metadata"]["name"]
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        views.append(
            PodView(
                name=name,
                uid=pod["metadata"]["uid"],
                ips=[p["ip"] for p in pod.get("status", {}).get("podIPs") or []],
                restarts=sum(int(c.get("restartCount", 0)) for c in statuses),
                container=str(statuses[0].get("containerID", "")).split("//")[-1][:12],
                default_routes={
                    f: main_default_route(cluster, NS, name, f) for f in families(cluster)
                },
            )
        )
    return sorted(views, key=lambda v: v.name)


def _ready(kube: Kube, namespace: str, selector: str, count: int) -> bool:
    pods = kube.get(pod_path(namespace), labelSelector=selector)["items"]
    ready = [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
        and all(s.get("ready") for s in p.get("status", {}).get("containerStatuses") or [{}])
    ]
    return len(ready) == count


class ContainerLoop:
    """HTTP requests from a container in a loop (`kubectl exec`), to each URL in turn, one
    output line each; counted per URL."""

    def __init__(self, cluster: LocalCluster, namespace: str, pod: str, urls: list[str]) -> None:
        script = (
            f"while true; do for u in {' '.join(urls)}; do "
            'if wget -q -O /dev/null "$u"; then echo "ok $u"; else echo "fail $u"; fi; done; '
            "sleep 0.05; done"
        )
        base = [*cluster.kubectl_command(), "-n", namespace, "exec", pod, "-c", "client", "--"]
        self.kill = [*base, "killall", "sh"]
        # (stopped by killing its shell: kubectl's "terminated with exit code 143" is noise)
        self.proc = subprocess.Popen(
            [*base, "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ok = dict.fromkeys(urls, 0)
        self.failed = dict.fromkeys(urls, 0)
        self._streak = dict.fromkeys(urls, 0)
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, _, url = line.strip().partition(" ")
            with self._lock:
                if word == "ok" and url in self.ok:
                    self.ok[url] += 1
                    self._streak[url] += 1
                elif word == "fail" and url in self.failed:
                    self.failed[url] += 1
                    self._streak[url] = 0

    def wait_serving(self, streak: int = 5, timeout: float = 60.0) -> bool:
        """As HttpProbe.wait_serving, for every URL: count only once each Service answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(n >= streak for n in self._streak.values()):
                    for url in self.ok:
                        self.ok[url] = self.failed[url] = 0
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> dict[str, tuple[int, int]]:
        """Per URL: (ok, failed)."""
        subprocess.run(self.kill, capture_output=True, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        self._reader.join(timeout=5)
        return {url: (self.ok[url], self.failed[url]) for url in self.ok}


def container_ping(cluster: LocalCluster, namespace: str, pod: str, target: str) -> SeqPing:
    """10 ms pings from a real container (PINGER in the client pod's pinger container),
    counted by sequence number like any SeqPing."""
    base = [*cluster.kubectl_command(), "-n", namespace, "exec", pod, "-c", "pinger", "--"]
    pidfile = f"/tmp/ping-{target.replace(':', '-')}.pid"

    def stop() -> None:
        # The ping runs in the container: stopping kubectl alone would leave it there.
        kill = f"kill -INT $(cat {pidfile})"
        subprocess.run([*base, "sh", "-c", kill], capture_output=True, timeout=30)

    keep_pid = f'echo $$ > {pidfile}; exec "$@"'
    argv = [*base, "sh", "-c", keep_pid, "sh", *container_ping_argv(target)]
    return SeqPing(pod, target, argv=argv, on_stop=stop)


def subnet(v4: str, v6: str, of: list[int]) -> Subnet:
    """A demo network's addressing in the cluster's families `of`."""
    return Subnet(v4=v4 if V4 in of else None, v6=v6 if V6 in of else None)


def topology(of: list[int]) -> Topology:
    """The networks' bridges, strict on both, and a client on a routed subnet of its own;
    in the cluster's IP families `of`."""
    bridges = {
        bridge: subnet(f"{prefix}.0/24", SUBNET6[name], of) for name, bridge, prefix in (OLD, NEW)
    }
    return Topology(
        name="nsdemo", bridges=bridges, strict=frozenset(bridges), routed=subnet(*ROUTED, of)
    )


def ipam_dir(cluster: LocalCluster) -> Path:
    """The demo networks' host-local store: under the node's files, which the agent's and
    Multus's pods mount at the same path."""
    return cluster.nodes[0].root / "cni" / "demo"


def held_addresses(cluster: LocalCluster) -> list[str]:
    """Addresses host-local still holds in the demo's store (one file per address)."""
    store = ipam_dir(cluster)
    if not store.exists():
        return []
    return sorted(p.name for p in store.rglob("*") if p.is_file() and _is_address(p.name))


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def cleanup(cluster: LocalCluster, kube: Kube, topo: Topology, say: Say) -> None:
    with contextlib.suppress(ApiError):
        kube.delete(profile_path(PROFILE))
    for ns in (NS, CLIENT_NS):
        with contextlib.suppress(ApiError):
            kube.delete(namespace_path(ns))

    def gone() -> bool:
        for ns in (NS, CLIENT_NS):
            try:
                kube.get(namespace_path(ns))
                return False
            except ApiError as err:
                if err.status != 404:
                    raise
        return True

    wait_for(gone, 180, what=f"namespaces {NS} and {CLIENT_NS} deleted")
    topo.delete()


Target = tuple[str, str]  # (pod UID, one of its addresses)


@dataclass
class Probes:
    host_pings: dict[Target, SeqPing]
    pod_pings: dict[Target, SeqPing]
    streams: dict[Target, Stream]
    http: dict[str, HttpProbe]  # by ClusterIP
    in_pod_http: ContainerLoop

    def stop(self) -> dict[str, Any]:
        return {
            "host_pings": {t: p.stop() for t, p in self.host_pings.items()},
            "pod_pings": {t: p.stop() for t, p in self.pod_pings.items()},
            "streams": {t: s.stop() for t, s in self.streams.items()},
            "http": {ip: h.stop() for ip, h in self.http.items()},
            "in_pod_http": self.in_pod_http.stop(),
        }


def url(cluster_ip: str) -> str:
    return f"http://[{cluster_ip}]/" if family_of(cluster_ip) == V6 else f"http://{cluster_ip}/"


def start_probes(
    cluster: LocalCluster, topo: Topology, before: dict[str, PodView], cluster_ips: list[str]
) -> Probes:
    targets = [(uid, ip) for uid, v in before.items() for ip in v.ips]
    client = {uid: f"client-{i}" for i, uid in enumerate(before)}
    host_pings = {t: SeqPing(topo.routed_client, t[1]) for t in targets}
    pod_pings = {t: container_ping(cluster, CLIENT_NS, client[t[0]], t[1]) for t in targets}
    for ping in [*host_pings.values(), *pod_pings.values()]:
        if not ping.wait_first(20):
            raise RuntimeError(f"no echo from {ping.target} before the switch")
        ping.settle(20)
    streams = {
        t: Stream(None, topo.routed_client, t[1], port=ECHO_PORT, timeout=2.0) for t in targets
    }
    http = {ip: HttpProbe(url(ip), expect="web-") for ip in cluster_ips}
    in_pod = ContainerLoop(cluster, CLIENT_NS, "client-0", [url(ip) for ip in cluster_ips])
    # Counted from when the Service answers: a new Service's requests fail until kube-proxy
    # has synced its first ready endpoint (docs/agent.md, "Services across a switch").
    serving = [p.wait_serving() for p in http.values()] + [in_pod.wait_serving()]
    if not all(serving):
        raise RuntimeError(f"Service web ({', '.join(cluster_ips)}) does not answer")
    return Probes(host_pings, pod_pings, streams, http, in_pod)


def _service_account(kube: Kube, namespace: str) -> Callable[[], bool]:
    return lambda: has_default_service_account(kube, namespace)


def set_up(cluster: LocalCluster, kube: Kube, topo: Topology, pods: int, say: Say) -> list[str]:
    """Networks, profile, Deployment, Service and client; returns the Service's ClusterIPs
    (one per IP family of the cluster, IPv4 first)."""
    topo.create()
    # The client pods on the cluster network reach the demo's subnets through the node.
    bridge = cluster.nodes[0].bridge
    forwarding: dict[int, str] = {
        V4: f"net.ipv4.conf.{bridge}.forwarding",
        V6: f"net.ipv6.conf.{bridge}.force_forwarding",
    }
    for family in families(cluster):
        subprocess.run(["sysctl", "-qw", f"{forwarding[family]}=1"], check=True)
    ranges = {
        name: " and ".join(s.cidr(f) for f in s.families)
        for (name, _, _), s in zip((OLD, NEW), topo.bridges.values(), strict=True)
    }
    say(f"== namespace {NS}: networks {OLD[0]} ({ranges[OLD[0]]}) and {NEW[0]} ({ranges[NEW[0]]})")
    apply(kube, namespace_path(), {"metadata": {"name": NS, "labels": {DEMO_LABEL: "true"}}})
    apply(kube, namespace_path(), {"metadata": {"name": CLIENT_NS}})
    for (name, bridge_name, _), addressing in zip((OLD, NEW), topo.bridges.values(), strict=True):
        cidrs = [addressing.cidr(f) for f in addressing.families]
        apply(kube, nad_path(NS), bridge_nad(NS, name, bridge_name, cidrs, ipam_dir(cluster)))
    say(f"== NetworkProfile {PROFILE}: default network {NS}/{OLD[0]}, rollout Live, old Keep")
    apply(kube, profile_path(), profile(f"{NS}/{OLD[0]}"))
    # The Deployment's pods get the profile at creation once the namespace is labelled.
    wait_for(lambda: selected(kube, NS), 30, what=f"{NS} labelled netshift.io/selected")
    for ns in (NS, CLIENT_NS):
        wait_for(_service_account(kube, ns), 30, what=f"the default ServiceAccount of {ns}")
    say(f"== Deployment web ({pods} busybox pods: httpd and a TCP echo) behind Service web")
    apply(kube, deployment_path(NS), deployment(pods))
    apply(kube, service_path(NS), service())
    for i in range(pods):
        apply(kube, pod_path(CLIENT_NS), client_pod(i))
    wait_for(lambda: _ready(kube, NS, SELECTOR, pods), 180, what=f"{pods} web pods ready")
    wait_for(lambda: _ready(kube, CLIENT_NS, "app=client", pods), 120, what="the client pods")
    spec = kube.get(service_path(NS, "web"))["spec"]
    return [str(ip) for ip in spec.get("clusterIPs") or [spec["clusterIP"]]]


def rows_and_verdict(
    before: dict[str, PodView], after: dict[str, PodView], seen: dict[str, Any]
) -> tuple[list[tuple[str, ...]], bool]:
    """A row per pod and IP family: the pod's columns on its first row, then per family
    the default route before -> after and what the probes to that address counted."""
    rows: list[tuple[str, ...]] = []
    ok = True
    for uid, b in before.items():
        a = after.get(uid)
        same = a is not None and a.container == b.container and a.restarts == 0
        ok = ok and same
        for i, ip in enumerate(b.ips):
            family = family_of(ip)
            host_sent, host_lost = seen["host_pings"][(uid, ip)]
            pod_sent, pod_lost = seen["pod_pings"][(uid, ip)]
            tcp = seen["streams"][(uid, ip)]
            route = a.default_routes.get(family, "-") if a is not None else "gone"
            moved = a is not None and f"dev {OLD_IF}" not in route and route != "-"
            alive = bool(tcp.get("alive"))
            ok = ok and moved and not host_lost and not pod_lost and alive
            first = i == 0
            rows.append(
                (
                    b.name if first else "",
                    uid[:8] if first else "",
                    f"{b.restarts}->{a.restarts if a else '?'}" if first else "",
                    ("same" if a is not None and a.container == b.container else "CHANGED")
                    if first
                    else "",
                    FAMILY_NAMES[family],
                    f"{_short(b.default_routes.get(family, '-'))} -> {_short(route)}",
                    f"{host_sent}/{len(host_lost)}",
                    f"{pod_sent}/{len(pod_lost)}",
                    "alive" if alive else f"DEAD ({tcp.get('error')})",
                )
            )
    return rows, ok


def _short(route: str) -> str:
    """'default via 10.251.2.1 dev net1' -> 'via 10.251.2.1 dev net1'."""
    words = route.split()
    return " ".join(words[1:5]) if words and words[0] == "default" else route


def run(cluster: LocalCluster, pods: int, keep: bool, say: Say = print) -> bool:
    """The demo on a running real-node cluster; True for a clean switch."""
    kube = cluster.kube()
    of = families(cluster)
    topo = topology(of)
    with contextlib.suppress(ApiError, TimeoutError):
        cleanup(cluster, kube, topo, say)  # a previous --keep run
    cluster_ips = set_up(cluster, kube, topo, pods, say)
    before = {v.uid: v for v in pod_views(cluster, kube)}
    sample = kube.get(pod_path(NS), labelSelector=SELECTOR)["items"][0]
    injected = (sample["metadata"].get("annotations") or {}).get(
        "v1.multus-cni.io/default-network", "(none: is the webhook running?)"
    )
    say(f"   the webhook gave new pods v1.multus-cni.io/default-network={injected}")
    routed = " and ".join(topo.routed.cidr(f) for f in of) if topo.routed else "-"
    say(
        f"== probes: 10 ms pings to each pod address from {topo.routed_client} ({routed}, routed"
        " by the node) and from a client container each; a TCP echo stream to each pod address;"
        f" HTTP to Service web ({', '.join(cluster_ips)}) from the host and from container"
        " client-0"
    )
    probes = start_probes(cluster, topo, before, cluster_ips)
    time.sleep(1.0)

    say(f"== switching the profile to {NS}/{NEW[0]}")
    t0 = time.monotonic()
    kube.patch_merge(
        profile_path(PROFILE),
        {"spec": {"defaultNetwork": f"{NS}/{NEW[0]}"}},
    )
    done = f"{NS}/{NEW[0]}"
    try:
        wait_for(
            lambda: switched_count(kube, NS, done, SELECTOR) == len(before),
            180,
            interval=0.2,
            what="every pod on the new network",
        )
    except TimeoutError as err:
        say(f"!! {err}")
    took = time.monotonic() - t0
    for ping in [*probes.host_pings.values(), *probes.pod_pings.values()]:
        ping.settle(20)
    seen = probes.stop()
    after = {v.uid: v for v in pod_views(cluster, kube)}
    leaked = topo.leaked()

    say(f"== the rollout reached all {len(before)} pods in {took:.1f}s\n")
    header = (
        "POD",
        "UID",
        "RESTARTS",
        "CONTAINER",
        "FAMILY",
        "DEFAULT ROUTE (kubectl exec ip route: before -> after)",
        "PINGS/LOST (routed)",
        "PINGS/LOST (container)",
        "TCP",
    )
    rows, ok = rows_and_verdict(before, after, seen)
    for line in table(header, rows):
        say(line)
    say("")
    for ip in cluster_ips:
        http, (in_ok, in_failed) = seen["http"][ip], seen["in_pod_http"][url(ip)]
        say(
            f"Service web ({ip}): from the host {http['ok']} ok, {http['failed']} failed;"
            f" from container client-0 {in_ok} ok, {in_failed} failed"
        )
        for error in http["errors"]:
            say(f"   {error}")
        ok = ok and not http["failed"] and not in_failed and in_ok > 0
    say(f"packets from an old address on the new bridge (or back): {sum(leaked.values())}")
    ok = ok and not any(leaked.values())
    say("")
    say(
        "verdict: same pods, same containers, no restart, default route on the new network,"
        " no lost probe, every TCP stream alive, no failed Service request"
        if ok
        else "verdict: NOT a clean switch (see above)"
    )
    if keep:
        say(f"(--keep: namespaces {NS} and {CLIENT_NS}, profile {PROFILE} left in place)")
        return ok
    say("== cleaning up")
    cleanup(cluster, kube, topo, say)
    # The agent DELs what it attached once it sees the pod deleted; Multus DELs eth0.
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not held_addresses(cluster), 30, what="host-local to be empty")
    held = held_addresses(cluster)
    say(f"   host-local holds {len(held)} address(es) of the demo's networks {held or ''}")
    return ok and not held
