"""The local cluster behaves like a cluster: real apiserver, CRDs, a Ready node, pods that run."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env, pid_alive
from netshift.kube import ApiError, Kube, has_default_service_account, wait_for
from support.builders import bridge_config, create_nad


def _pods(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kube.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector
    )["items"]
    return pods


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }


def test_kubectl_reports_the_pinned_server_version(cluster: LocalCluster) -> None:
    from localcluster.binaries import pinned_versions

    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == pinned_versions()["KUBE_VERSION"]


def test_both_crds_are_established(cluster: LocalCluster) -> None:
    out = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert (
        "customresourcedefinition.apiextensions.k8s.io/network-attachment-definitions.k8s.cni.cncf.io"
        in out
    )
    assert "customresourcedefinition.apiextensions.k8s.io/networkprofiles.netshift.io" in out


def test_the_local_node_is_registered_and_ready(cluster: LocalCluster, kube: Kube) -> None:
    node = kube.get(f"/api/v1/nodes/{cluster.nodes[0].name}")
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"


def test_deployment_pods_are_scheduled_and_run_with_an_ip(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("web", 3))

    def running() -> list[dict[str, Any]] | None:
        pods = _pods(kube, namespace, "app=web")
        ok = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return pods if len(ok) == 3 and len(pods) == 3 else None

    pods = wait_for(running, 60, what="3 running pods")
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3
    subnet = ipaddress.ip_network(cluster.nodes[0].pod_subnet)
    assert all(ipaddress.ip_address(ip) in subnet for ip in ips), ips
    assert all(p["spec"]["nodeName"] == cluster.nodes[0].name for p in pods)
    for pod in pods:
        assert Path(f"/var/run/netns/netshift-{pod['metadata']['uid']}").exists()


def test_deleting_a_deployment_garbage_collects_its_pods_and_netns(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("gc", 2))
    pods = wait_for(
        lambda: (
            [p for p in _pods(kube, namespace, "app=gc") if p.get("status", {}).get("podIP")]
            if len(_pods(kube, namespace, "app=gc")) == 2
            else None
        ),
        60,
        what="2 pods with IPs",
    )
    uids = [p["metadata"]["uid"] for p in pods]
    kube.delete(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/gc", propagationPolicy="Background"
    )
    wait_for(lambda: not _pods(kube, namespace, "app=gc"), 60, what="pods garbage-collected")
    for uid in uids:

        def netns_gone(uid: str = uid) -> bool:
            return not Path(f"/var/run/netns/netshift-{uid}").exists()

        wait_for(netns_gone, 30, what="netns removed")


def test_a_namespace_finishes_deleting(kube: Kube) -> None:
    name = "t-gone-" + os.urandom(3).hex()
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_for(lambda: has_default_service_account(kube, name), 30, what="default service account")
    kube.create(f"/apis/apps/v1/namespaces/{name}/deployments", deployment("x", 1))
    wait_for(lambda: _pods(kube, name, "app=x"), 60, what="a pod")
    kube.delete(f"/api/v1/namespaces/{name}")

    def gone() -> bool:
        try:
            kube.get(f"/api/v1/namespaces/{name}")
            return False
        except ApiError as err:
            return err.status == 404

    try:
        wait_for(gone, 90, what=f"namespace {name} deleted")
    except TimeoutError:
        left = kube.get(f"/api/v1/namespaces/{name}/pods")["items"]
        raise AssertionError(
            f"namespace status: {kube.get(f'/api/v1/namespaces/{name}').get('status')}; "
            f"pods left: {[(p['metadata']['name'], p['metadata'].get('deletionTimestamp'), p.get('spec', {}).get('nodeName')) for p in left]}"
        ) from None


def test_up_is_idempotent_reports_crashes_and_down_leaves_nothing(cluster: LocalCluster) -> None:
    """A second plane (etcd + apiserver only is enough to show the lifecycle)."""
    state = Path(tempfile.mkdtemp(prefix="netshift-lifecycle-"))
    other = LocalCluster(state, pod_subnet="10.246.0.0/24", bridge="nslife0")
    lines: list[str] = []
    try:
        other.up(services=[], say=lines.append)
        pids = {name: other.pid(name) for name, _, _ in other.status()}
        assert all(pid_alive(p) for p in pids.values() if p)
        ports = dict(other.ports)

        lines.clear()
        other.up(services=[], say=lines.append)
        assert all("already running" in line for line in lines), lines
        assert {name: other.pid(name) for name, _, _ in other.status()} == pids

        victim = pids["kube-scheduler"]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not pid_alive(victim), 10, what="scheduler dead")
        assert other.crashed() == ["kube-scheduler"]
        lines.clear()
        other.up(services=[], say=lines.append)
        assert any("kube-scheduler: had died" in line for line in lines), lines
        pids = {name: other.pid(name) for name, _, _ in other.status()}
    finally:
        other.down(say=lambda _l: None)
    assert not any(pid_alive(p) for p in pids.values() if p)
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
    shutil.rmtree(state, ignore_errors=True)


def test_down_releases_every_address_and_namespace_the_node_holds(cluster: LocalCluster) -> None:
    """A second cluster with the node simulator and the agent: `down` must leak no IPAM address."""
    state = Path(tempfile.mkdtemp(prefix="netshift-down-"))
    other = LocalCluster(state, pod_subnet=f"10.249.{os.getpid() % 250}.0/24", bridge="nsdown0")
    ipam = state / "nad-ipam"
    eth0_store = other.nodes[0].ipam_dir / "netshift-cluster"
    bridge = "nsdownnad0"
    try:
        other.up(services=["nodesim", "agent"], say=lambda _l: None)
        kube = other.kube()
        kube.create("/api/v1/namespaces", {"metadata": {"name": "shop"}})
        wait_for(lambda: has_default_service_account(kube, "shop"), 30, what="service account")
        create_nad(kube, "shop", "storage", bridge_config("storage", bridge, "10.252.9.0/24", ipam))
        kube.create(
            "/api/v1/namespaces/shop/pods",
            {
                "metadata": {
                    "name": "web",
                    "annotations": {"k8s.v1.cni.cncf.io/networks": "storage"},
                },
                "spec": {"containers": [{"name": "c", "image": "example.invalid/c"}]},
            },
        )

        def plugged() -> bool:
            pod = kube.get("/api/v1/namespaces/shop/pods/web")
            return "net1" in pod["metadata"].get("annotations", {}).get(
                "k8s.v1.cni.cncf.io/network-status", ""
            )

        wait_for(plugged, 60, what="net1 attached")
        uid = kube.get("/api/v1/namespaces/shop/pods/web")["metadata"]["uid"]
        assert _addresses(ipam / "storage") and _addresses(eth0_store)
    finally:
        other.down(say=lambda _l: None)
    try:
        assert not _addresses(ipam / "storage"), "the agent's attachment leaked its address"
        assert not _addresses(eth0_store), "eth0 leaked its address"
        assert not Path(f"/var/run/netns/netshift-{uid}").exists()
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def _addresses(store: Path) -> list[str]:
    if not store.exists():
        return []
    found = []
    for entry in store.iterdir():
        try:
            ipaddress.ip_address(entry.name)
        except ValueError:
            continue
        found.append(entry.name)
    return found


def test_netshift_kubectl_runs_the_pinned_kubectl_against_the_local_cluster(
    cluster: LocalCluster,
) -> None:
    from localcluster.binaries import pinned_versions

    env = clean_env()
    env.pop("KUBECONFIG", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "kubectl",
            f"--state-dir={cluster.state_dir}",
            "version",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    versions = json.loads(done.stdout)
    pinned = pinned_versions()["KUBE_VERSION"]
    assert versions["clientVersion"]["gitVersion"] == pinned
    assert versions["serverVersion"]["gitVersion"] == pinned
