"""Pods born on the cluster network, moved by a NetworkProfile to another network and back.

Three web pods (busybox httpd on 8080 behind a Service, a TCP echo on 7000, a TCP
readiness probe) are created without any netshift annotation: Multus gives them
the cluster network as eth0. A profile then makes a `ptp` network their default
(another plugin type: the shape Calico gives pods, an address of its own and
every route through a host-side veth), rolled out live; deleting the profile
hands them back to the cluster network. Old defaults are kept, so the pod IPs (and
the Service's endpoints) stay on eth0 throughout.

Everything is counted from a client namespace on a subnet of its own that the node
routes: 10 ms pings to every pod IP by sequence number, a TCP echo stream to every
pod (2 s timeout: a stall is a failure), and HTTP requests through the Service's
ClusterIP, one after the other on fresh connections. The node drops (and counts)
any packet from the cluster network's subnet that does not arrive on its bridge,
and any from the ptp subnet that does: a reply that left a pod by the wrong
interface. The Service's endpoints must not change at all (the pod IPs stay on eth0).

Requests are counted from when the Service answers, not from when the pods are
Ready: a new Service's first requests can fail until kube-proxy has synced its
first ready endpoint, which can come after the API shows every pod Ready.
Counted from the pods' readiness, that window looked like refusals "during the
switch" (issue 17). The test keeps it apart and reports what happened in it
(refusals, timeouts, kube-proxy's no-endpoints REJECT sampled every 50 ms).
The node forwards nothing of the client's but to pod addresses (dropped and
counted otherwise, after kube-proxy's DNAT and REJECT): a request to the ClusterIP
that kube-proxy did not DNAT never leaves the node. Measured so: in the creation
window some requests pass neither DNATed nor REJECTed, and time out here (without
this guard they were routed off the node and refused from beyond it). During the
switch and the rollback, whose requests are counted each on its own, nothing may
fail, no packet may leave un-DNATed, the REJECT must not come back and the
endpoints must not change.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.probe import SeqPing, Stream, socket_in
from localcluster.realnode import CLUSTER_NETWORK, RealNode
from localcluster.topology import V4, Subnet, Topology, subnets
from netshift import keys
from netshift.kube import ApiError, Kube, wait_for
from support.builders import PROFILES, create_nad, namespace_profile, ptp_config
from support.realnode import (
    default_route,
    deployment,
    eventually,
    running_pods,
    settled_on,
    store_addresses,
)

PODS = 3
SELECTOR = "app=web"
HTTP_PORT, ECHO_PORT = 8080, 7000
HOLD = 3.0  # seconds of traffic on each side of a switch, so that what follows it is counted
WEB = [
    "sh",
    "-c",
    'mkdir -p /www && echo "served-by-$(hostname)" > /www/index.html && '
    f"(nc -ll -p {ECHO_PORT} -e cat &) && exec httpd -f -p {HTTP_PORT} -h /www",
]


class NetnsHttp:
    """GETs of http://host:port/ from a network namespace, one after the other on fresh
    connections every `interval`, each with `timeout`; every request is kept with its time
    (monotonic) and its outcome: the pod that served it, or the error."""

    def __init__(
        self, netns: str, host: str, port: int = 80, interval: float = 0.05, timeout: float = 2.0
    ) -> None:
        self.netns, self.host, self.port = netns, host, port
        self.interval, self.timeout = interval, timeout
        self.requests: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _once(self) -> tuple[bool, str]:
        sock = socket_in(self.netns, socket.AF_INET)
        try:
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {self.host}\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        except OSError as err:
            name = errno.errorcode.get(err.errno or 0, type(err).__name__)
            return False, name
        finally:
            sock.close()
        text = data.decode(errors="replace")
        body = text.split("\r\n\r\n", 1)[-1].strip()
        if not text.startswith("HTTP/1.") or " 200 " not in text.split("\r\n", 1)[0]:
            return False, f"status {text[:40]!r}"
        if not body.startswith("served-by-"):
            return False, f"body {body[:40]!r}"
        return True, body.removeprefix("served-by-")

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok, what = self._once()
            self.requests.append((started, ok, what))
            self._stop.wait(self.interval)

    def wait_ok(self, n: int, timeout: float = 60) -> list[tuple[float, bool, str]]:
        """Until `n` requests in a row succeeded: a new Service's requests fail until
        kube-proxy has synced its first ready endpoint, which can come after the API shows
        the pods Ready. What came before is returned, not counted."""

        def streak() -> bool:
            tail = self.requests[-n:]
            return len(tail) == n and all(ok for _t, ok, _w in tail)

        eventually(streak, timeout, f"{n} answers from {self.host}")
        before = list(self.requests)
        del self.requests[: len(before)]
        return before

    def stop(self) -> tuple[int, list[tuple[float, str]]]:
        """(requests, failures as (time, error))."""
        self._stop.set()
        self._thread.join(timeout=self.timeout + 2)
        return len(self.requests), [(t, w) for t, ok, w in self.requests if not ok]


class SourceGuard:
    """Drops and counts packets from a subnet arriving where it does not belong: from the
    cluster network's subnet anywhere but its bridge (and the host's own loopback), from the
    ptp subnet on the cluster network's bridge. Scoped to these two subnets (this test's)."""

    def __init__(self, tag: str, cluster_subnet: str, bridge: str, ptp_subnet: str) -> None:
        self.chains = {f"NSG{tag}c": cluster_subnet, f"NSG{tag}p": ptp_subnet}
        self.bridge = bridge

    def _ipt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["iptables", "-t", "raw", *args], capture_output=True, text=True, check=check
        )

    def create(self) -> None:
        (cluster_chain, cluster_subnet), (ptp_chain, ptp_subnet) = self.chains.items()
        for chain in self.chains:
            self._ipt("-N", chain)
        self._ipt("-A", cluster_chain, "-i", self.bridge, "-j", "RETURN")
        self._ipt("-A", cluster_chain, "-i", "lo", "-j", "RETURN")
        self._ipt("-A", cluster_chain, "-j", "DROP")
        self._ipt("-A", ptp_chain, "-i", self.bridge, "-j", "DROP")
        self._ipt("-I", "PREROUTING", "-s", cluster_subnet, "-j", cluster_chain)
        self._ipt("-I", "PREROUTING", "-s", ptp_subnet, "-j", ptp_chain)

    def dropped(self) -> int:
        total = 0
        for chain in self.chains:
            listing = self._ipt("-L", chain, "-v", "-x", "-n").stdout
            for line in listing.splitlines():
                words = line.split()
                if len(words) > 2 and words[0].isdigit() and words[2] == "DROP":
                    total += int(words[0])
        return total

    def delete(self) -> None:
        for chain, subnet in self.chains.items():
            while (
                self._ipt("-D", "PREROUTING", "-s", subnet, "-j", chain, check=False).returncode
                == 0
            ):
                pass
            self._ipt("-F", chain, check=False)
            self._ipt("-X", chain, check=False)


class ClientEgress:
    """Drops and counts what the routed client sends the node to forward anywhere but a pod
    address (the cluster network's subnet, the ptp subnet): a request to the ClusterIP that
    kube-proxy did not DNAT would otherwise be routed on, off the node.

    In mangle POSTROUTING: after kube-proxy's DNAT (nat PREROUTING) and its no-endpoints
    REJECT (filter FORWARD), so that what they do is seen as they do it."""

    def __init__(self, tag: str, client_subnet: str, pod_subnets: list[str]) -> None:
        self.chain = f"NSG{tag}e"
        self.client_subnet, self.pod_subnets = client_subnet, pod_subnets

    def _ipt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["iptables", "-t", "mangle", *args], capture_output=True, text=True, check=check
        )

    def create(self) -> None:
        self._ipt("-N", self.chain)
        for subnet in self.pod_subnets:
            self._ipt("-A", self.chain, "-d", subnet, "-j", "RETURN")
        self._ipt("-A", self.chain, "-j", "DROP")
        self._ipt("-I", "POSTROUTING", "-s", self.client_subnet, "-j", self.chain)

    def dropped(self) -> int:
        listing = self._ipt("-L", self.chain, "-v", "-x", "-n").stdout
        return sum(
            int(words[0])
            for words in (line.split() for line in listing.splitlines())
            if len(words) > 2 and words[0].isdigit() and words[2] == "DROP"
        )

    def delete(self) -> None:
        rule = ["POSTROUTING", "-s", self.client_subnet, "-j", self.chain]
        while self._ipt("-D", *rule, check=False).returncode == 0:
            pass
        self._ipt("-F", self.chain, check=False)
        self._ipt("-X", self.chain, check=False)


@dataclass
class Lab:
    cluster: LocalCluster
    node: RealNode
    kube: Kube
    namespace: str
    topo: Topology
    guard: SourceGuard
    egress: ClientEgress
    ptp: Subnet
    store: Path

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(
            f"/api/v1/namespaces/{self.namespace}/pods", labelSelector=SELECTOR
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def settled_on(self, network: str) -> list[dict[str, Any]] | None:
        items = self.pods()
        done = [p for p in items if settled_on(p, network)]
        return done if len(done) == PODS == len(items) else None


@pytest.fixture
def lab(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[Lab]:
    tag = secrets.token_hex(2)
    ptp, routed = subnets(2, (V4,), second=240)
    topo = Topology(name=f"cn{tag}", bridges={}, routed=routed)
    guard = SourceGuard(tag, real_node.pod_subnet, real_node.bridge, ptp.cidr(V4))
    egress = ClientEgress(tag, routed.cidr(V4), [real_node.pod_subnet, ptp.cidr(V4)])
    store = real_node.root / "cni" / "test-networks" / f"ptp{tag}"
    made = Lab(real_cluster, real_node, real_kube, real_namespace, topo, guard, egress, ptp, store)
    forwarding = f"net.ipv4.conf.{real_node.bridge}.forwarding"
    before = subprocess.run(["sysctl", "-n", forwarding], capture_output=True, text=True)
    # The routed client reaches the pods' cluster network addresses through the node.
    subprocess.run(["sysctl", "-qw", f"{forwarding}=1"], check=True)
    topo.create()
    try:
        guard.create()
        egress.create()
        create_nad(real_kube, real_namespace, "ptp", ptp_config("ptp", ptp.cidr(V4), store))
        yield made
    finally:
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
        egress.delete()
        guard.delete()
        topo.delete()
        if before.returncode == 0:
            subprocess.run(["sysctl", "-qw", f"{forwarding}={before.stdout.strip()}"])


@dataclass
class Web:
    cluster_ip: str
    # All three from the Service's creation on:
    endpoints: EndpointLog
    no_endpoints: NoEndpointsRule
    http: NetnsHttp


def _web(lab: Lab) -> Web:
    """The Deployment (no annotation: born on the cluster network) and its Service, watched
    from its creation; returns once every pod is Ready."""
    dep = deployment("web", PODS, command=WEB)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["ports"] = [{"containerPort": HTTP_PORT}, {"containerPort": ECHO_PORT}]
    container["readinessProbe"] = {"tcpSocket": {"port": HTTP_PORT}, "periodSeconds": 2}
    lab.kube.create(f"/apis/apps/v1/namespaces/{lab.namespace}/deployments", dep)
    svc = lab.kube.create(
        f"/api/v1/namespaces/{lab.namespace}/services",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}],
            },
        },
    )
    cluster_ip = str(svc["spec"]["clusterIP"])
    endpoints = EndpointLog(lab.kube, lab.namespace)
    no_endpoints = NoEndpointsRule(lab.namespace, "web")
    # Before kube-proxy knows the ClusterIP, a request to it would be routed on, off the node.
    assert no_endpoints.programmed.wait(30), "kube-proxy wrote no rule for the Service"
    http = NetnsHttp(lab.topo.routed_client, cluster_ip)
    wait_for(lambda: running_pods(lab.kube, lab.namespace, SELECTOR, PODS), 120, what="web pods")
    for pod in lab.pods():
        assert keys.DEFAULT_NETWORK_KEY not in (pod["metadata"].get("annotations") or {})
    return Web(cluster_ip, endpoints, no_endpoints, http)


class EndpointLog:
    """The Service's EndpointSlices as they change (a clue for the reader when a request
    fails; never asserted)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _view(self) -> str:
        slices = self.kube.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices",
            labelSelector="kubernetes.io/service-name=web",
        )["items"]
        return " ".join(
            sorted(
                f"{a}:{'R' if (e.get('conditions') or {}).get('ready') else 'n'}"
                for s in slices
                for e in s.get("endpoints") or []
                for a in e.get("addresses") or []
            )
        )

    def _run(self) -> None:
        last = ""
        while not self._stop.is_set():
            try:
                view = self._view()
            except (ApiError, OSError):
                view = last
            if view != last:
                self.changes.append((time.monotonic(), view))
                last = view
            self._stop.wait(0.1)

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.changes


class NoEndpointsRule:
    """Whether kube-proxy's "has no endpoints" REJECT for the Service is in its rules, sampled
    every 50 ms from the Service's creation to the end; kept as the times it appeared and went.

    kube-proxy writes it while the Service has no ready endpoint in its own view (not the
    API's). A refusal that started after the rule was seen gone is unexplained."""

    def __init__(self, namespace: str, service: str, interval: float = 0.05) -> None:
        self.comment = f'"{namespace}/{service}'
        self.interval = interval
        # Each change as the listing that saw it: (started, ended, present). A listing reads
        # the rules somewhere in between: a change happened after the previous listing
        # started and before the one that saw it ended.
        self.changes: list[tuple[float, float, bool]] = []
        self.programmed = threading.Event()  # kube-proxy has rules for the Service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _present(self) -> bool:
        rules = subprocess.run(
            ["iptables", "-t", "filter", "-S", "KUBE-SERVICES"], capture_output=True, text=True
        ).stdout
        return any(
            self.comment in line and "has no endpoints" in line and "-j REJECT" in line
            for line in rules.splitlines()
        )

    def _known(self) -> bool:
        """kube-proxy wrote the Service's rules: its REJECT, or its DNAT to endpoints."""
        rules = subprocess.run(
            ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], capture_output=True, text=True
        ).stdout
        return any(self.comment in line for line in rules.splitlines())

    def _run(self) -> None:
        last: bool | None = None
        previous = 0.0  # when the listing before this one started
        while not self._stop.is_set():
            started = time.monotonic()
            present = self._present()
            if present != last:
                self.changes.append((previous, time.monotonic(), present))
                last = present
            if not self.programmed.is_set() and (present or self._known()):
                self.programmed.set()
            previous = started
            self._stop.wait(self.interval)

    def gone(self) -> tuple[float, float] | None:
        """Between when it was removed the last time: (after, before); None: it is there."""
        if not self.changes or self.changes[-1][2]:
            return None
        return self.changes[-1][0], self.changes[-1][1]

    def stop(self) -> list[tuple[float, float, bool]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.changes


class Probes:
    """Every probe of the test, from the routed client; all counted exactly, from when the
    Service answers. What the Service did before (its creation window) is kept apart."""

    def __init__(self, lab: Lab, addresses: list[str], web: Web) -> None:
        client = lab.topo.routed_client
        self.lab, self.web = lab, web
        self.pings = [SeqPing(client, ip) for ip in addresses]
        for ping in self.pings:
            assert ping.wait_first(), f"no first echo from {ping.target}"
            ping.settle(20)
        self.streams = [Stream(None, client, ip, port=ECHO_PORT, timeout=2.0) for ip in addresses]
        self.http = web.http
        # Counted once the EndpointSlice shows every pod ready (the API's last word) and the
        # Service answers (kube-proxy's): nothing about the endpoints changes after that.
        eventually(
            lambda: any(v.count(":R") == PODS for _t, v in web.endpoints.changes[-1:]),
            30,
            f"{PODS} ready endpoints",
        )
        self.creation = self.http.wait_ok(10)
        self.egress_before = lab.egress.dropped()
        self.started = time.monotonic()
        self.phases: dict[str, tuple[float, float]] = {}  # name -> (from, to), monotonic

    def settle(self) -> None:
        for ping in self.pings:
            assert ping.settle(20), f"no echoes from {ping.target} any more"

    def creation_window(self) -> tuple[str, list[str]]:
        """The Service's first requests, before it answered: (what happened, problems).

        A refused one must have started while kube-proxy still had the Service's
        no-endpoints REJECT (seen gone only later), a timed-out one must come with packets
        that left un-DNATed; any other failure is a problem."""
        # From when the EndpointSlice showed every pod ready: the API's word, sampled every
        # 0.1 s (the pods' Ready condition has a resolution of a second).
        at = next(t for t, v in self.web.endpoints.changes if v.count(":R") == PODS)
        refused = [t for t, ok, w in self.creation if not ok and w == "ECONNREFUSED"]
        late = [t for t in refused if t >= at]
        timeouts = [t for t, ok, w in self.creation if not ok and w == "TimeoutError"]
        other = [
            (t, w)
            for t, ok, w in self.creation
            if not ok and w not in ("ECONNREFUSED", "TimeoutError")
        ]
        gone = self.web.no_endpoints.gone()
        problems = [f"before the Service answered: {w} at {t - at:+.2f}s" for t, w in other]
        # A request that kube-proxy neither REJECTed nor DNATed is dropped by the client's
        # egress guard (counted): a timeout.
        undnated = self.egress_before
        if timeouts and not undnated:
            problems.append(
                f"{len(timeouts)} requests timed out before the Service answered, "
                "none of them left un-DNATed"
            )
        if gone is None:
            problems.append("kube-proxy's no-endpoints REJECT never went")
        else:
            problems += [
                f"refused at {t - at:+.2f}s, after the REJECT was seen gone ({gone[1] - at:+.2f}s)"
                for t in refused
                if t >= gone[1]
            ]
        first_ok = next((t for t, ok, _w in self.creation if ok), self.started)
        # kube-proxy's first sync with one ready endpoint lifts the REJECT.
        one = next(t for t, v in self.web.endpoints.changes if ":R" in v)
        text = (
            f"{len(self.creation)} requests before 10 in a row answered, {len(refused)} refused, "
            f"{len(late)} of them after the EndpointSlice showed every pod ready"
            + (f" (the last {late[-1] - at:+.2f}s)" if late else "")
            + "; from the first ready endpoint in it: kube-proxy's REJECT removed "
            + (f"between {gone[0] - one:+.2f}s and {gone[1] - one:+.2f}s" if gone else "never")
            + f", first answer {first_ok - one:+.2f}s, every pod ready {at - one:+.2f}s; "
            f"{len(timeouts)} timed out, {undnated} packets to the ClusterIP not DNATed"
        )
        return text, problems

    def phase(self, name: str, since: float) -> None:
        self.phases[name] = (since, time.monotonic())

    def stop(self) -> tuple[str, list[str]]:
        """(the totals, every problem described)."""
        self.settle()
        time.sleep(0.5)  # a few more requests after the last change
        echoes = lost = 0
        problems: list[str] = []
        for ping in self.pings:
            n, missing = ping.stop()
            echoes, lost = echoes + n, lost + len(missing)
            if missing:
                problems.append(f"pings to {ping.target}: lost {len(missing)} of {n}")
        dead = [r for r in (s.stop() for s in self.streams) if not r["alive"]]
        problems += [f"TCP stream died: {d['error']}" for d in dead]
        counted = list(self.http.requests)
        requests, failed = self.http.stop()
        changes = self.web.endpoints.stop()
        rule = self.web.no_endpoints.stop()
        dropped = self.lab.guard.dropped()
        undnated = self.lab.egress.dropped() - self.egress_before
        at = self.started
        if failed:
            wall = time.time() - (time.monotonic() - at)
            problems.append(
                f"Service: {len(failed)} of {requests} requests failed (times from "
                f"{time.strftime('%H:%M:%S', time.localtime(wall))}{wall % 1:.3f}): "
                + ", ".join(f"{t - at:.2f}s {w}" for t, w in failed[:10])
                + "; EndpointSlices: "
                + "; ".join(f"{t - at:.2f}s [{v}]" for t, v in changes)
            )
        if dropped:
            problems.append(f"{dropped} packets from a subnet on the wrong interface")
        if undnated:
            problems.append(f"{undnated} packets to the ClusterIP were not DNATed")
        during = [(t, v) for t, v in changes if t >= at]
        if during or not changes or changes[-1][1].count(":R") != len(self.pings):
            # Keep: the pod IPs stay on eth0, and nothing should touch the pods' readiness.
            problems.append(
                "the Service's endpoints changed: "
                + "; ".join(f"{t - at:.2f}s [{v}]" for t, v in changes)
            )
        back = [t - at for _t0, t, present in rule if present and t >= at]
        if back:
            problems.append(f"kube-proxy's no-endpoints REJECT came back at {back}")
        per_phase = ", ".join(
            f"{sum(1 for t, _ok, _w in counted if t0 <= t <= t1)} during {name} ({t1 - t0:.1f}s)"
            for name, (t0, t1) in self.phases.items()
        )
        totals = (
            f"{echoes} echoes, {lost} lost; {len(self.streams)} TCP streams, {len(dead)} dead; "
            f"{requests} Service requests ({per_phase}), {len(failed)} failed; "
            f"{dropped} misrouted, {undnated} not DNATed"
        )
        return totals, problems


def _default_routes(lab: Lab) -> list[str]:
    return [
        default_route(lab.cluster, lab.namespace, pod["metadata"]["name"]) for pod in lab.pods()
    ]


def _there_and_back(lab: Lab, probes: Probes) -> str:
    """The profile moves the pods to ptp; deleting it brings them back. Returns when."""
    name = f"cn-{lab.namespace}"
    # maxConcurrent as a profile has it unless told: one pod at a time.
    profile = namespace_profile(name, lab.namespace, "ptp", oldDefault="Keep")
    try:
        since = time.monotonic()
        lab.kube.create(PROFILES, profile)
        wait_for(lambda: lab.settled_on(f"{lab.namespace}/ptp"), 120, what=f"{PODS} pods on ptp")
        probes.phase("the switch", since)
        moved = time.monotonic() - probes.started
        for route in _default_routes(lab):
            # ptp's own route: via its gateway (on the host's veth), out of the new interface.
            assert route.startswith(f"default via {lab.ptp.gateway(V4)} dev net"), route
        time.sleep(HOLD)
        probes.settle()
        since = time.monotonic()
        lab.kube.delete(f"{PROFILES}/{name}")
        wait_for(lambda: lab.settled_on(CLUSTER_NETWORK), 120, what=f"{PODS} pods back on eth0")
        probes.phase("the rollback", since)
        back = time.monotonic() - probes.started
    finally:
        with contextlib.suppress(ApiError):
            lab.kube.delete(f"{PROFILES}/{name}")
    for route in _default_routes(lab):
        assert " dev eth0 " in f"{route} ", route
    time.sleep(HOLD)
    return f"on ptp by {moved:.1f}s, back by {back:.1f}s"


def test_pods_born_on_the_cluster_network_go_to_ptp_and_back_with_the_profile_and_lose_nothing(
    lab: Lab,
) -> None:
    web = _web(lab)
    pods = {p["metadata"]["uid"]: p for p in lab.pods()}
    addresses = [p["status"]["podIP"] for p in pods.values()]
    probes = Probes(lab, addresses, web)
    creation, creation_problems = probes.creation_window()
    print(f"\nService creation: {creation}")
    assert not creation_problems, creation_problems
    when = _there_and_back(lab, probes)
    totals, problems = probes.stop()
    print(f"cluster network > ptp > back ({when}): {totals}")
    assert not problems, problems
    after = {p["metadata"]["uid"]: p for p in lab.pods()}
    assert set(after) == set(pods), "pods were recreated"
    for uid, pod in after.items():
        assert pod["status"]["podIP"] == pods[uid]["status"]["podIP"]
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    lab.kube.delete(f"/apis/apps/v1/namespaces/{lab.namespace}/deployments/web")
    eventually(lambda: not lab.pods(), 90, "the pods deleted")
    eventually(lambda: not store_addresses(lab.store), 60, "every ptp address back in host-local")
    eventually(
        lambda: not set(addresses) & store_addresses(lab.node.ipam_dir),
        60,
        "the pods' cluster network addresses released",
    )
