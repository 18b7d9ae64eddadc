"""The real node: a kubelet on containerd, Multus as the primary CNI, kube-proxy for Services.

Everything here runs real containers from the locally built images on the session's
real-node cluster (tests/realnode/conftest.py).
"""

from __future__ import annotations

import ipaddress
import urllib.request

from localcluster import realnode
from localcluster.binaries import pinned_versions
from localcluster.cluster import LocalCluster
from localcluster.realnode import RealNode
from netshift.kube import Kube, wait_for
from support.realnode import busybox_pod, create_running, exec_in, ipv4_of, network_status


def test_the_node_is_ready_on_containerd_2(real_cluster: LocalCluster, real_kube: Kube) -> None:
    node = real_kube.get(f"/api/v1/nodes/{real_cluster.nodes[0].name}")
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", ready
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://2."), info
    assert info["kubeletVersion"] == pinned_versions()["KUBE_VERSION"], info
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    # The bridge's gateway: a local address in the node's own subnet (no loopback node IP).
    assert addresses.get("InternalIP") == real_cluster.single_node(RealNode).node_ip, addresses


def test_netshift_and_multus_run_as_pods_from_local_images(real_kube: Kube) -> None:
    pods = real_kube.get("/api/v1/pods")["items"]
    by_app: dict[str, list[str]] = {}
    for pod in pods:
        ns = pod["metadata"]["namespace"]
        if ns not in ("netshift-system", "kube-system"):
            continue
        assert pod["status"].get("phase") == "Running", (pod["metadata"]["name"], pod["status"])
        labels = pod["metadata"].get("labels", {})
        app = labels.get("app.kubernetes.io/component") or labels.get("app.kubernetes.io/name")
        images = [c["image"] for c in pod["spec"]["containers"]]
        by_app.setdefault(str(app), []).extend(images)
    netshift = realnode.image_name("NETSHIFT_IMAGE")
    assert by_app.get("webhook") == [netshift, netshift], by_app
    assert by_app.get("agent") == [netshift], by_app
    assert netshift in by_app.get("controller", []), by_app
    assert by_app.get("multus") == [realnode.image_name("MULTUS_IMAGE")], by_app


def test_a_pod_runs_with_eth0_from_multus_and_kubectl_exec_works(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str
) -> None:
    pod = create_running(real_kube, real_namespace, busybox_pod("plain"))
    assert exec_in(real_cluster, real_namespace, "plain", "echo", "hello").strip() == "hello"
    addresses = ipv4_of(real_cluster, real_namespace, "plain", "eth0")
    subnet = ipaddress.ip_network(real_cluster.nodes[0].pod_subnet)
    assert len(addresses) == 1 and ipaddress.ip_address(addresses[0]) in subnet, addresses
    assert pod["status"]["podIP"] == addresses[0]
    # Multus wrote the creation-time status: eth0 on the cluster network, the default.
    status = network_status(pod)
    defaults = [e for e in status if e.get("default")]
    assert len(defaults) == 1, status
    assert defaults[0]["interface"] == "eth0" and defaults[0]["ips"] == addresses, status
    assert defaults[0]["name"].endswith(realnode.CLUSTER_NETWORK), status


def test_a_service_cluster_ip_answers_from_the_host_and_from_a_pod(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str
) -> None:
    server = busybox_pod(
        "web",
        command=[
            "sh",
            "-c",
            "mkdir -p /www && echo served-by-web > /www/index.html && "
            "exec httpd -f -p 8080 -h /www",
        ],
    )
    create_running(real_kube, real_namespace, server)
    create_running(real_kube, real_namespace, busybox_pod("client"))
    svc = real_kube.create(
        f"/api/v1/namespaces/{real_namespace}/services",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )
    cluster_ip = svc["spec"]["clusterIP"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def from_host() -> str | None:
        try:
            with opener.open(f"http://{cluster_ip}/", timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            return None

    # kube-proxy programs the Service once its EndpointSlice exists.
    body = wait_for(from_host, 60, what=f"http://{cluster_ip}/ from the host")
    assert body.strip() == "served-by-web"

    def from_pod() -> str | None:
        done = real_cluster.kubectl(
            "-n",
            real_namespace,
            "exec",
            "client",
            "--",
            # (no -T: this busybox's wget crashes with a timeout option)
            "wget",
            "-q",
            "-O",
            "-",
            f"http://{cluster_ip}/",
            check=False,
        )
        return done.stdout if done.returncode == 0 else None

    assert wait_for(from_pod, 30, what="the Service from a pod").strip() == "served-by-web"
