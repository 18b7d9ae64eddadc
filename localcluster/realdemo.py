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
"""

from __future__ import annotations

import contextlib
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
from localcluster.probe import HttpProbe, SeqPing, Stream
from localcluster.realnode import image_name
from localcluster.topology import Subnet, Topology
from netshift.kube import ApiError, Kube, has_default_service_account, nad_path, wait_for

CLIENT_NS = "netshift-demo-client"  # not selected by the profile: stays on the cluster network
ROUTED = Subnet(v4="10.251.9.0/24")  # the routed client's own subnet
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
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}],
        },
    }


def client_pod(index: int) -> dict[str, Any]:
    """One client container per web pod: busybox ping reads every echo of its namespace on
    a raw socket, and several pings in one container overflow each other's."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"client-{index}",
            "namespace": CLIENT_NS,
            "labels": {"app": "client"},
        },
        "spec": _busybox("client", "exec sleep 100000", []),
    }


@dataclass
class PodView:
    name: str
    uid: str
    ip: str
    restarts: int
    container: str  # the container's id: a recreated sandbox would make a new one
    default_route: str  # `ip -4 route show default` inside the container


def pod_views(cluster: LocalCluster, kube: Kube) -> list[PodView]:
    views = []
    for pod in kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=SELECTOR)["items"]:
        name = pod["metadata"]["name"]
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        route = cluster.kubectl(
            "-n", NS, "exec", name, "--", "ip", "-4", "route", "show", "default", check=False
        )
        views.append(
            PodView(
                name=name,
                uid=pod["metadata"]["uid"],
                ip=pod.get("status", {}).get("podIP", ""),
                restarts=sum(int(c.get("restartCount", 0)) for c in statuses),
                container=str(statuses[0].get("containerID", "")).split("//")[-1][:12],
                default_route=(route.stdout.strip().splitlines() or ["-"])[0]
                if route.returncode == 0
                else "-",
            )
        )
    return sorted(views, key=lambda v: v.name)


def _ready(kube: Kube, namespace: str, selector: str, count: int) -> bool:
    pods = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]
    ready = [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
        and all(s.get("ready") for s in p.get("status", {}).get("containerStatuses") or [{}])
    ]
    return len(ready) == count


class ContainerLoop:
    """HTTP requests from a container in a loop (`kubectl exec`), one output line each."""

    def __init__(self, cluster: LocalCluster, namespace: str, pod: str, url: str) -> None:
        script = (
            f"while true; do if wget -q -O /dev/null {url}; then echo ok; else echo fail; fi; "
            "sleep 0.05; done"
        )
        self.kill = [
            *cluster.kubectl_command(),
            "-n",
            namespace,
            "exec",
            pod,
            "--",
            "killall",
            "sh",
        ]
        argv = [*cluster.kubectl_command(), "-n", namespace, "exec", pod, "--", "sh", "-c", script]
        # (stopped by killing its shell: kubectl's "terminated with exit code 143" is noise)
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.ok = self.failed = 0
        self._streak = 0
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                if line.strip() == "ok":
                    self.ok += 1
                    self._streak += 1
                elif line.strip() == "fail":
                    self.failed += 1
                    self._streak = 0

    def wait_serving(self, streak: int = 5, timeout: float = 60.0) -> bool:
        """As HttpProbe.wait_serving: count only once the Service answers (kube-proxy synced)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._streak >= streak:
                    self.ok = self.failed = 0
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> tuple[int, int]:
        subprocess.run(self.kill, capture_output=True, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        self._reader.join(timeout=5)
        return self.ok, self.failed


def container_ping(cluster: LocalCluster, namespace: str, pod: str, target: str) -> SeqPing:
    """10 ms pings from a real container, counted by sequence number like any SeqPing."""
    base = [*cluster.kubectl_command(), "-n", namespace, "exec", pod, "--"]

    def stop() -> None:
        # The ping runs in the container: stopping kubectl alone would leave it there.
        subprocess.run([*base, "killall", "-INT", "ping"], capture_output=True, timeout=30)

    return SeqPing(
        pod, target, argv=[*base, "ping", "-i", "0.01", "-w", "900", target], on_stop=stop
    )


def topology() -> Topology:
    """The networks' bridges, strict on both, and a client on a routed subnet of its own."""
    bridges = {OLD[1]: Subnet(v4=f"{OLD[2]}.0/24"), NEW[1]: Subnet(v4=f"{NEW[2]}.0/24")}
    return Topology(name="nsdemo", bridges=bridges, strict=frozenset(bridges), routed=ROUTED)


def ipam_dir(cluster: LocalCluster) -> Path:
    """The demo networks' host-local store: under the node's files, which the agent's and
    Multus's pods mount at the same path."""
    return cluster.nodes[0].root / "cni" / "demo"


def held_addresses(cluster: LocalCluster) -> list[str]:
    """Addresses host-local still holds in the demo's store (one file per address)."""
    store = ipam_dir(cluster)
    if not store.exists():
        return []
    return sorted(p.name for p in store.rglob("*") if p.is_file() and p.name.count(".") == 3)


def cleanup(cluster: LocalCluster, kube: Kube, topo: Topology, say: Say) -> None:
    with contextlib.suppress(ApiError):
        kube.delete(f"/apis/netshift.io/v1alpha1/networkprofiles/{PROFILE}")
    for ns in (NS, CLIENT_NS):
        with contextlib.suppress(ApiError):
            kube.delete(f"/api/v1/namespaces/{ns}")

    def gone() -> bool:
        for ns in (NS, CLIENT_NS):
            try:
                kube.get(f"/api/v1/namespaces/{ns}")
                return False
            except ApiError as err:
                if err.status != 404:
                    raise
        return True

    wait_for(gone, 180, what=f"namespaces {NS} and {CLIENT_NS} deleted")
    topo.delete()


@dataclass
class Probes:
    host_pings: dict[str, SeqPing]
    pod_pings: dict[str, SeqPing]
    streams: dict[str, Stream]
    http: HttpProbe
    in_pod_http: ContainerLoop

    def stop(self) -> dict[str, Any]:
        return {
            "host_pings": {uid: p.stop() for uid, p in self.host_pings.items()},
            "pod_pings": {uid: p.stop() for uid, p in self.pod_pings.items()},
            "streams": {uid: s.stop() for uid, s in self.streams.items()},
            "http": self.http.stop(),
            "in_pod_http": self.in_pod_http.stop(),
        }


def start_probes(
    cluster: LocalCluster, topo: Topology, before: dict[str, PodView], cluster_ip: str
) -> Probes:
    host_pings = {uid: SeqPing(topo.routed_client, v.ip) for uid, v in before.items()}
    pod_pings = {
        uid: container_ping(cluster, CLIENT_NS, f"client-{i}", v.ip)
        for i, (uid, v) in enumerate(before.items())
    }
    for ping in [*host_pings.values(), *pod_pings.values()]:
        if not ping.wait_first(15):
            raise RuntimeError(f"no echo from {ping.target} before the switch")
        ping.settle(20)
    streams = {
        uid: Stream(None, topo.routed_client, v.ip, port=ECHO_PORT, timeout=2.0)
        for uid, v in before.items()
    }
    url = f"http://{cluster_ip}/"
    http = HttpProbe(url, expect="web-")
    in_pod = ContainerLoop(cluster, CLIENT_NS, "client-0", url)
    # Counted from when the Service answers: until kube-proxy has synced its endpoints (up to
    # ~0.7 s after the pods are Ready, measured here) it refuses, whatever netshift does.
    for probe in (http, in_pod):
        if not probe.wait_serving():
            raise RuntimeError(f"Service web ({cluster_ip}) does not answer")
    return Probes(host_pings, pod_pings, streams, http, in_pod)


def _service_account(kube: Kube, namespace: str) -> Callable[[], bool]:
    return lambda: has_default_service_account(kube, namespace)


def set_up(cluster: LocalCluster, kube: Kube, topo: Topology, pods: int, say: Say) -> str:
    """Networks, profile, Deployment, Service and client; returns the Service's ClusterIP."""
    topo.create()
    # The client pod on the cluster network reaches the demo's subnets through the node.
    subprocess.run(
        ["sysctl", "-qw", f"net.ipv4.conf.{cluster.nodes[0].bridge}.forwarding=1"], check=True
    )
    say(f"== namespace {NS}: networks {OLD[0]} ({OLD[2]}.0/24) and {NEW[0]} ({NEW[2]}.0/24)")
    apply(kube, "/api/v1/namespaces", {"metadata": {"name": NS, "labels": {DEMO_LABEL: "true"}}})
    apply(kube, "/api/v1/namespaces", {"metadata": {"name": CLIENT_NS}})
    for name, bridge, prefix in (OLD, NEW):
        apply(kube, nad_path(NS), bridge_nad(NS, name, bridge, f"{prefix}.0/24", ipam_dir(cluster)))
    say(f"== NetworkProfile {PROFILE}: default network {NS}/{OLD[0]}, rollout Live, old Keep")
    apply(kube, "/apis/netshift.io/v1alpha1/networkprofiles", profile(f"{NS}/{OLD[0]}"))
    # The Deployment's pods get the profile at creation once the namespace is labelled.
    wait_for(lambda: selected(kube, NS), 30, what=f"{NS} labelled netshift.io/selected")
    for ns in (NS, CLIENT_NS):
        wait_for(_service_account(kube, ns), 30, what=f"the default ServiceAccount of {ns}")
    say(f"== Deployment web ({pods} busybox pods: httpd and a TCP echo) behind Service web")
    apply(kube, f"/apis/apps/v1/namespaces/{NS}/deployments", deployment(pods))
    apply(kube, f"/api/v1/namespaces/{NS}/services", service())
    for i in range(pods):
        apply(kube, f"/api/v1/namespaces/{CLIENT_NS}/pods", client_pod(i))
    wait_for(lambda: _ready(kube, NS, SELECTOR, pods), 180, what=f"{pods} web pods ready")
    wait_for(lambda: _ready(kube, CLIENT_NS, "app=client", pods), 120, what="the client pods")
    return str(kube.get(f"/api/v1/namespaces/{NS}/services/web")["spec"]["clusterIP"])


def rows_and_verdict(
    before: dict[str, PodView], after: dict[str, PodView], seen: dict[str, Any]
) -> tuple[list[tuple[str, ...]], bool]:
    rows: list[tuple[str, ...]] = []
    ok = True
    for uid, b in before.items():
        a = after.get(uid)
        host_sent, host_lost = seen["host_pings"][uid]
        pod_sent, pod_lost = seen["pod_pings"][uid]
        tcp = seen["streams"][uid]
        moved = a is not None and f"dev {OLD_IF}" not in a.default_route and a.default_route != "-"
        same = a is not None and a.container == b.container and a.restarts == 0
        alive = bool(tcp.get("alive"))
        ok = ok and same and moved and not host_lost and not pod_lost and alive
        rows.append(
            (
                b.name,
                uid[:8],
                f"{b.restarts}->{a.restarts if a else '?'}",
                "same" if a is not None and a.container == b.container else "CHANGED",
                f"{_short(b.default_route)} -> {_short(a.default_route) if a else 'gone'}",
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
    topo = topology()
    with contextlib.suppress(ApiError, TimeoutError):
        cleanup(cluster, kube, topo, say)  # a previous --keep run
    cluster_ip = set_up(cluster, kube, topo, pods, say)
    before = {v.uid: v for v in pod_views(cluster, kube)}
    sample = kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=SELECTOR)["items"][0]
    injected = (sample["metadata"].get("annotations") or {}).get(
        "v1.multus-cni.io/default-network", "(none: is the webhook running?)"
    )
    say(f"   the webhook gave new pods v1.multus-cni.io/default-network={injected}")
    say(
        f"== probes: 10 ms pings to each pod from {topo.routed_client} ({ROUTED.v4}, routed by"
        " the node) and from a client container each; a TCP echo stream to each pod; HTTP to"
        f" Service web ({cluster_ip}) from the host and from container client-0"
    )
    probes = start_probes(cluster, topo, before, cluster_ip)
    time.sleep(1.0)

    say(f"== switching the profile to {NS}/{NEW[0]}")
    t0 = time.monotonic()
    kube.patch_merge(
        f"/apis/netshift.io/v1alpha1/networkprofiles/{PROFILE}",
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
        "DEFAULT ROUTE (kubectl exec ip route: before -> after)",
        "PINGS/LOST (routed)",
        "PINGS/LOST (container)",
        "TCP",
    )
    rows, ok = rows_and_verdict(before, after, seen)
    for line in table(header, rows):
        say(line)
    http, in_pod = seen["http"], seen["in_pod_http"]
    say(
        f"\nService web ({cluster_ip}): from the host {http['ok']} ok, {http['failed']} failed;"
        f" from container client-0 {in_pod[0]} ok, {in_pod[1]} failed"
    )
    for error in http["errors"]:
        say(f"   {error}")
    say(f"packets from an old address on the new bridge (or back): {sum(leaked.values())}")
    ok = ok and not http["failed"] and not in_pod[1] and in_pod[0] > 0 and not any(leaked.values())
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
