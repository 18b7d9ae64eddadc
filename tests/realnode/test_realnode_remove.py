"""`oldDefault: Remove` on the real node: the pod IP the kubelet reports keeps answering, so
probes, the Service and connections to it carry on, and it stays reserved until the pod goes.

Three busybox pods (an HTTP server with TCP readiness and liveness probes, a TCP echo
server) are born on the cluster network (Multus's eth0, no profile yet) behind a Service.
A NetworkProfile then moves them to a `ptp` network with Remove, and the agent is killed
with SIGKILL while the old interfaces drain; then to a `bridge` network with Remove.
Meanwhile the host asks the Service one request after the other, a client namespace on a
subnet the node routes keeps a TCP echo stream to each pod's reported address, and the
pods' Ready conditions and restart counts are read every half second.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.probe import Stream
from localcluster.realnode import RealNode
from localcluster.topology import V4, Topology, subnets
from netshift import podstatus
from netshift.kube import ApiError, Kube, wait_for
from support.builders import PROFILES, bridge_config, create_nad, namespace_profile, ptp_config
from support.realnode import (
    HttpLoop,
    deployment,
    eventually,
    ipv4_of,
    store_addresses,
)

PODS = 3
HTTP_PORT, ECHO_PORT = 8080, 7000
SELECTOR = "app=web"
WEB = (
    "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && "
    f"(nc -ll -p {ECHO_PORT} -e cat &) && exec httpd -f -p {HTTP_PORT} -h /www"
)
DRAIN = 8  # long enough to kill the agent while every old default drains


@dataclass
class Lab:
    cluster: LocalCluster
    node: RealNode
    kube: Kube
    namespace: str
    topo: Topology
    stores: dict[str, Path]

    def network(self, key: str) -> str:
        return f"{self.namespace}/{key}"

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(
            f"/api/v1/namespaces/{self.namespace}/pods", labelSelector=SELECTOR
        )["items"]
        return items


@pytest.fixture
def lab(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[Lab]:
    tag = f"nrm{secrets.token_hex(2)}"
    sb, sp, sc = subnets(3, (V4,), second=241)
    topo = Topology(name=tag, bridges={f"{tag}b": sb}, strict=frozenset({f"{tag}b"}), routed=sc)
    stores = {k: real_node.root / "cni" / "test-networks" / f"{tag}{k}" for k in ("br", "ptp")}
    made = Lab(real_cluster, real_node, real_kube, real_namespace, topo, stores)
    topo.create()
    try:
        create_nad(
            real_kube,
            real_namespace,
            "br",
            bridge_config(
                "br", f"{tag}b", sb.cidr(V4), stores["br"], default_route=True, is_gateway=True
            ),
        )
        create_nad(real_kube, real_namespace, "ptp", ptp_config("ptp", sp.cidr(V4), stores["ptp"]))
        yield made
    finally:
        real_cluster.kubectl(
            "-n", real_namespace, "delete", "deployment,pods", "--all", "--wait=true",
            check=False, timeout=90,
        )  # fmt: skip
        topo.delete()


def _web() -> dict[str, Any]:
    """The web Deployment, its container probed by the kubelet (TCP readiness and liveness)."""
    web = deployment("web", PODS, command=["sh", "-c", WEB])
    container = web["spec"]["template"]["spec"]["containers"][0]
    probe = {"tcpSocket": {"port": HTTP_PORT}, "periodSeconds": 1, "failureThreshold": 3}
    container["readinessProbe"] = dict(probe)
    container["livenessProbe"] = dict(probe)
    container["ports"] = [{"containerPort": HTTP_PORT}, {"containerPort": ECHO_PORT}]
    return web


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _restarts(pod: dict[str, Any]) -> int:
    return sum(s.get("restartCount", 0) for s in pod.get("status", {}).get("containerStatuses", []))


class Watch:
    """The pods' Ready condition and restart counts, read every half second."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.problems: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                pods = self.lab.pods()
            except (ApiError, OSError):
                continue
            self.reads += 1
            for p in pods:
                name = p["metadata"]["name"]
                if not _ready(p):
                    self.problems.append(f"{name} not Ready at read {self.reads}")
                if _restarts(p):
                    self.problems.append(f"{name} restarted {_restarts(p)} times")

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=5)
        return sorted(set(self.problems))


def _switched(lab: Lab, key: str) -> list[dict[str, Any]] | None:
    """The pods once each reports `key` as its default and nothing but it (the old interface
    retired or released), with its reported pod IP retained."""
    items = lab.pods()
    done = []
    for p in items:
        st = podstatus.parse_status(p["metadata"].get("annotations") or {})
        if (
            st is not None
            and st.default_network == lab.network(key)
            and [a.interface for a in st.attachments] == [st.default_interface]
            and st.retained
            and [ip.split("/")[0] for ip in st.retained] == [p["status"]["podIP"]]
        ):
            done.append(p)
    return done if len(done) == PODS == len(items) else None


def _kill_agent(lab: Lab) -> int:
    """SIGKILL the agent's process (this node's agent container, found through its CRI)."""
    listing = lab.node.runtime.crictl("ps", "--name", "^agent$", "-o", "json")
    (container,) = json.loads(listing.stdout)["containers"]
    info = json.loads(lab.node.runtime.crictl("inspect", container["id"]).stdout)
    pid = int(info["info"]["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_remove_keeps_probes_services_and_streams_on_the_reported_ip_and_holds_it(
    lab: Lab,
) -> None:
    kube, ns = lab.kube, lab.namespace
    kube.create(f"/apis/apps/v1/namespaces/{ns}/deployments", _web())
    svc = kube.create(
        f"/api/v1/namespaces/{ns}/services",
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": HTTP_PORT}]},
        },
    )
    born = wait_for(
        lambda: items if len(items := [p for p in lab.pods() if _ready(p)]) == PODS else None,
        120,
        what="3 web pods Ready on the cluster network",
    )
    pod_ips = {p["metadata"]["uid"]: p["status"]["podIP"] for p in born}
    assert set(pod_ips.values()) <= store_addresses(lab.node.ipam_dir)

    http = HttpLoop(f"http://{svc['spec']['clusterIP']}/")
    http.wait_ok(20)
    streams = [
        Stream(None, lab.topo.routed_client, ip, port=ECHO_PORT, timeout=2.0)
        for ip in pod_ips.values()
    ]
    watch = Watch(lab)
    name = f"rm-{ns}"
    timeline: list[str] = []
    t0 = time.monotonic()
    try:
        kube.create(
            PROFILES,
            namespace_profile(
                name, ns, "ptp", maxConcurrent=PODS, oldDefault="Remove", drainSeconds=DRAIN
            ),
        )

        def on_ptp_draining() -> bool:
            return all(
                (st := podstatus.parse_status(p["metadata"].get("annotations") or {}))
                and st.default_network == lab.network("ptp")
                for p in lab.pods()
            )

        eventually(on_ptp_draining, 60, "the pods switched to ptp (eth0 draining)")
        killed = _kill_agent(lab)
        timeline.append(
            f"switched to ptp, agent pid {killed} killed at {time.monotonic() - t0:.1f}s"
        )
        on_ptp = wait_for(lambda: _switched(lab, "ptp"), DRAIN + 120, what="eth0 retired")
        timeline.append(f"eth0 retired by {time.monotonic() - t0:.1f}s")
        for p in on_ptp:
            pname = p["metadata"]["name"]
            assert ipv4_of(lab.cluster, ns, pname, "eth0") == [], "eth0 is still there"
        held = store_addresses(lab.node.ipam_dir)
        assert set(pod_ips.values()) <= held, ("released while reported", held)
        ptp_ips = store_addresses(lab.stores["ptp"])
        assert len(ptp_ips) == PODS

        kube.patch_merge(f"{PROFILES}/{name}", {"spec": {"defaultNetwork": lab.network("br")}})
        on_br = wait_for(lambda: _switched(lab, "br"), DRAIN + 120, what="pods on br, ptp gone")
        timeline.append(f"on br, ptp released by {time.monotonic() - t0:.1f}s")
        eventually(lambda: not store_addresses(lab.stores["ptp"]), 30, "ptp's addresses released")
        assert set(pod_ips.values()) <= store_addresses(lab.node.ipam_dir)

        for stream in streams:
            assert stream.alive, f"stream to {stream.host}: {stream.error}"
        results = [s.stop() for s in streams]
        ok, failed = http.stop()
        problems = watch.stop()
        print(
            f"Remove cluster>ptp (agent SIGKILL)>br: {ok} Service requests, failed {failed[:3]}, "
            f"streams {results}, watch {watch.reads} reads: {problems}; {timeline}"
        )
        assert not failed and not problems, (failed[:5], problems)
        assert all(r["alive"] for r in results), results
        assert {p["metadata"]["uid"] for p in on_br} == set(pod_ips), "pods were recreated"
        for p in on_br:
            assert p["status"]["podIP"] == pod_ips[p["metadata"]["uid"]]
            assert _restarts(p) == 0

        kube.delete(f"/apis/apps/v1/namespaces/{ns}/deployments/web")
        eventually(lambda: not lab.pods(), 90, "the pods deleted")
        eventually(
            lambda: not (set(pod_ips.values()) & store_addresses(lab.node.ipam_dir)),
            60,
            "the reported addresses released once the pods were gone",
        )
        eventually(lambda: not store_addresses(lab.stores["br"]), 60, "br's addresses released")
    finally:
        http.stop()
        watch.stop()
        for s in streams:
            s.stop()
        with contextlib.suppress(ApiError):
            kube.delete(f"{PROFILES}/{name}")
