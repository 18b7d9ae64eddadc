"""The real node's configs and manifests are rendered from per-node values (pure, no files).

Two nodes with their own roots, subnets, bridges and ports get configs that name only
their own; the manifests shipped as YAML are filled without leaving a placeholder and
without a value changing the documents' structure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster.realnode import config, deploy, templates
from localcluster.realnode.hostnet import HostNetwork
from localcluster.realnode.layout import Layout

A = Layout(Path("/state/nodes/a"))
B = Layout(Path("/state/nodes/b"), netns_dir=Path("/state/nodes/b/netns"))


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_every_path_of_a_node_is_under_its_own_root() -> None:
    for layout in (A, B):
        paths = [
            *layout.dirs(),
            layout.socket,
            layout.cluster_conflist,
            layout.run_dir,
            layout.log_dir,
            layout.images_stamp,
        ]
        assert all(p.is_relative_to(layout.root) for p in paths), paths
    assert A.endpoint == "unix:///state/nodes/a/containerd/containerd.sock"


def test_a_socket_path_too_long_to_bind_is_named() -> None:
    assert A.too_long_socket() is None
    deep = Layout(Path("/" + "d" * 80))
    assert deep.too_long_socket() == f"/{'d' * 80}/containerd/containerd.sock.ttrpc"


def test_containerd_and_kubelet_name_only_their_own_node() -> None:
    ca = Path("/state/pki/ca.crt")
    rendered = {
        layout.root.name: (
            config.containerd_config(layout, runc="/usr/sbin/runc", pause_image="p:1"),
            config.kubelet_config(
                layout, node_ip=ip, port=port, healthz_port=port + 1, client_ca=ca
            ),
        )
        for layout, ip, port in ((A, "10.246.1.1", 41000), (B, "10.246.2.1", 42000))
    }
    toml_a, kubelet_a = rendered["a"]
    toml_b, kubelet_b = rendered["b"]
    assert '"/state/nodes/a/containerd/containerd.sock"' in toml_a
    assert "/state/nodes/b" not in toml_a and "/state/nodes/a" not in toml_b
    assert 'BinaryName = "/usr/sbin/runc"' in toml_a and 'sandbox = "p:1"' in toml_a
    assert (kubelet_a["address"], kubelet_a["port"], kubelet_a["healthzPort"]) == (
        "10.246.1.1",
        41000,
        41001,
    )
    assert kubelet_b["containerRuntimeEndpoint"] == B.endpoint
    assert kubelet_b["tlsCertFile"] == "/state/nodes/b/kubelet/pki/kubelet-serving.crt"
    assert kubelet_a["authentication"]["x509"]["clientCAFile"] == str(ca)


def test_kube_proxy_serves_nodeports_on_its_node_address_only() -> None:
    proxy = config.kube_proxy_config(
        B, name="b", node_ips=["10.246.2.1"], healthz_port=7, metrics_port=8
    )
    assert proxy["hostnameOverride"] == "b"
    assert proxy["nodePortAddresses"] == ["10.246.2.1/32"]
    # Dual-stack: an address per family, else the IPv6 NodePorts open on every address.
    dual = config.kube_proxy_config(
        B, name="b", node_ips=["10.246.2.1", "fd6e:7368:2::1"], healthz_port=7, metrics_port=8
    )
    assert dual["nodePortAddresses"] == ["10.246.2.1/32", "fd6e:7368:2::1/128"]
    assert (proxy["healthzBindAddress"], proxy["metricsBindAddress"]) == (
        "127.0.0.1:7",
        "127.0.0.1:8",
    )
    assert proxy["clientConnection"]["kubeconfig"] == "/state/nodes/b/kube-proxy/kubeconfig"


def test_the_cluster_network_has_a_range_and_a_default_route_per_pod_subnet() -> None:
    one = config.cluster_network(bridge="nsa", subnets=["10.246.1.0/24"], data_dir=A.ipam_dir)
    (bridge,) = one["plugins"]
    assert (bridge["bridge"], bridge["ipMasq"], bridge["isGateway"]) == ("nsa", False, True)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.246.1.0/24", "gateway": "10.246.1.1"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    assert bridge["ipam"]["dataDir"] == "/state/nodes/a/cni/networks"
    dual = config.cluster_network(
        bridge="nsa", subnets=["10.246.1.0/24", "fd00:246:1::/64"], data_dir=A.ipam_dir
    )
    ipam = dual["plugins"][0]["ipam"]
    assert ipam["ranges"][1] == [{"subnet": "fd00:246:1::/64", "gateway": "fd00:246:1::1"}]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]


def test_multus_is_filled_with_its_nodes_paths_and_no_placeholder_is_left() -> None:
    objects = deploy.multus_objects(B, apiserver_port=6443)
    assert not [s for s in _strings(objects) if "${" in s]
    (ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["node-root"]["hostPath"]["path"] == "/state/nodes/b"
    assert volumes["netns"]["hostPath"]["path"] == "/state/nodes/b/netns"
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "6443")
    shim = spec["initContainers"][0]["command"][-1]
    assert shim.endswith(
        "&& mv /state/nodes/b/cni/bin/.multus-shim.new /state/nodes/b/cni/bin/multus-shim"
    )
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert json.loads(cm["data"]["daemon-config.json"]) == config.multus_daemon_config(B)


def test_the_overlay_keeps_the_bases_agent_args_and_adds_the_nodes() -> None:
    files = deploy.netshift_overlay(
        A, agent_args=["--cri-socket=x"], apiserver_port=6443, pod_apiserver_host="10.246.1.1"
    )
    assert not [s for s in _strings(files) if "${" in s]
    (agent,) = files["agent.yaml"]["spec"]["template"]["spec"]["containers"]
    base = deploy.base_args("agent/daemonset.yaml", "agent")
    assert agent["args"] == [*base, "--cri-socket=x"]
    (webhook,) = files["webhook.yaml"]["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e["value"] for e in webhook["env"]} == {
        "KUBERNETES_SERVICE_HOST": "10.246.1.1",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    assert [p["path"] for p in files["kustomization.yaml"]["patches"]] == [
        "agent.yaml",
        "webhook.yaml",
        "controller.yaml",
    ]


def test_a_placeholder_alone_takes_the_values_type_and_a_value_cannot_add_structure() -> None:
    doc = {"args": "${args}", "cmd": "cp ${src} ${dst}", "n": 3, "keep": "$$HOME"}
    filled = templates.fill(doc, {"args": ["-a", "-b"], "src": "x", "dst": "y: {z: 1}"})
    assert filled == {"args": ["-a", "-b"], "cmd": "cp x y: {z: 1}", "n": 3, "keep": "$HOME"}


def test_a_missing_value_names_the_placeholder() -> None:
    with pytest.raises(templates.TemplateError, match=r"\$\{port\}"):
        templates.fill({"value": "127.0.0.1:${port}"}, {})


def test_the_dnat_rule_sends_only_this_bridges_gateway_port_to_loopback() -> None:
    net = HostNetwork(
        bridge="nsa",
        pod_subnet="10.246.1.0/24",
        gateway="10.246.1.1",
        apiserver_port=6443,
        owner="/state",
        netns_dir=Path("/run/netns"),
    )
    rule = net.dnat_rule()
    assert rule[:9] == [
        "PREROUTING",
        "-i",
        "nsa",
        "-d",
        "10.246.1.1",
        "-p",
        "tcp",
        "--dport",
        "6443",
    ]
    assert rule[-4:] == ["-j", "DNAT", "--to-destination", "127.0.0.1:6443"]
    assert "netshift: pods to the local apiserver (/state)" in rule
