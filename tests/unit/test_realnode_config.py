"""What the real node is configured with, read from the files it writes (no processes run).

The settings this machine kind needs and the rules the project keeps (loopback and
its own subnets, nothing masqueraded) are checked in the generated configs and in
the kustomize overlay that deploys netshift's pods.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from localcluster import binaries, planepki, realnode
from localcluster.cluster import LocalCluster
from localcluster.realnode import RealNode
from support.require import require


@pytest.fixture
def node(tmp_path: Path) -> RealNode:
    runc = shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin")
    require(runc is not None, "needs Debian's runc (named in containerd's config)")
    cluster = LocalCluster(tmp_path, pod_subnet="10.246.77.0/24", bridge="nscfg0", node="real")
    planepki.ensure(cluster.plane.pki_dir)
    n = cluster.single_node(RealNode)
    n.prepare()
    return n


def test_containerd_restricts_oom_score_adj_and_uses_our_dirs(node: RealNode) -> None:
    text = (node.layout.containerd_dir / "config.toml").read_text()
    assert "version = 3" in text
    assert "restrict_oom_score_adj = true" in text
    assert "SystemdCgroup = false" in text
    assert "snapshotter = 'overlayfs'" in text
    assert f'conf_dir = "{node.cni_conf_dir}"' in text
    assert f'address = "{node.layout.socket}"' in text
    assert realnode.image_name("PAUSE_IMAGE") in text


def test_kubelet_admits_only_authenticated_and_authorized_clients(node: RealNode) -> None:
    config = yaml.safe_load((node.layout.kubelet_dir / "config.yaml").read_text())
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["x509"]["clientCAFile"].endswith("pki/ca.crt")
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert (config["cgroupDriver"], config["failCgroupV1"], config["failSwapOn"]) == (
        "cgroupfs",
        False,
        False,
    )
    assert config["address"] == node.node_ip == "10.246.77.1"


def test_kubelet_client_certificate_names_the_node(node: RealNode) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(
        (node.layout.kubelet_dir / "pki" / "kubelet-client.crt").read_bytes()
    )
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert (cn, orgs) == (f"system:node:{node.name}", ["system:nodes"])


def test_nothing_is_masqueraded(node: RealNode) -> None:
    proxy = yaml.safe_load((node.layout.proxy_dir / "config.yaml").read_text())
    assert proxy["mode"] == "iptables"
    assert proxy["clusterCIDR"] == ""
    assert proxy["iptables"]["masqueradeAll"] is False
    assert proxy["iptables"]["localhostNodePorts"] is False
    conflist = json.loads(node.cluster_conflist.read_text())
    (bridge,) = conflist["plugins"]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.246.77.0/24", "gateway": "10.246.77.1"}]]
    assert bridge["ipam"]["dataDir"] == str(node.ipam_dir)


def test_multus_names_the_cluster_network_and_writes_into_containerds_conf_dir(
    node: RealNode,
) -> None:
    config = node.multus_daemon_config()
    assert config["multusConfigFile"] == "auto"
    # By name, with confDir: the auto-mode DEL of a path-named cluster network leaks eth0.
    assert (
        config["clusterNetwork"]
        == realnode.CLUSTER_NETWORK
        == json.loads(node.cluster_conflist.read_text())["name"]
    )
    assert config["confDir"] == config["multusAutoconfigDir"] == str(node.layout.cluster_conf_dir)
    assert config["cniConfigDir"] == str(node.cni_conf_dir)
    (ds,) = [o for o in node.multus_manifest() if o["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["containers"][0]["image"] == realnode.image_name("MULTUS_IMAGE")
    assert spec["containers"][0]["imagePullPolicy"] == "Never"


def test_the_overlay_runs_netshift_from_the_local_image(node: RealNode) -> None:
    try:
        binaries.find("kubectl")
    except binaries.MissingBinary as err:
        require(False, str(err))
    out = node.plane.kubectl("kustomize", str(node.netshift_overlay())).stdout
    workloads = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in yaml.safe_load_all(out)
        if d and d["kind"] in ("Deployment", "DaemonSet")
    }
    assert set(workloads) == {"netshift-agent", "netshift-webhook", "netshift-controller"}
    port = str(node.plane.ports("apiserver"))
    for name, spec in workloads.items():
        (container,) = spec["containers"]
        assert container["image"] == realnode.image_name("NETSHIFT_IMAGE"), name
        assert container["imagePullPolicy"] == "Never", name
        env = {e["name"]: e.get("value") for e in container["env"]}
        host = "127.0.0.1" if spec.get("hostNetwork") else node.gateway
        assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == (host, port)
    agent = workloads["netshift-agent"]["containers"][0]
    assert f"--cri-socket={node.endpoint}" in agent["args"]
    base = yaml.safe_load((binaries.REPO / "manifests" / "agent" / "daemonset.yaml").read_text())
    base_args = base["spec"]["template"]["spec"]["containers"][0].get("args", [])
    assert agent["args"][: len(base_args)] == base_args  # the base's flags are kept
    volumes = {v["name"]: v for v in workloads["netshift-agent"]["volumes"]}
    assert volumes["state"]["hostPath"]["path"] == str(node.layout.agent_dir)
    # Mounted where the base mounts a node's Multus conf dir (--node-conf-dir).
    assert volumes["multus-conf"]["hostPath"]["path"] == str(node.layout.cluster_conf_dir)


def test_a_dual_stack_node_has_both_families_everywhere(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path,
        pod_subnet="10.246.78.0/24",
        pod_subnet6="fd6e:7368:78::/64",
        bridge="nscfg1",
        node="real",
        ip_family="dual",
    )
    planepki.ensure(cluster.plane.pki_dir)
    node = cluster.single_node(RealNode)
    node.prepare()
    conflist = json.loads(node.cluster_conflist.read_text())
    ipam = conflist["plugins"][0]["ipam"]
    assert ipam["ranges"] == [
        [{"subnet": "10.246.78.0/24", "gateway": "10.246.78.1"}],
        [{"subnet": "fd6e:7368:78::/64", "gateway": "fd6e:7368:78::1"}],
    ]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    proxy = yaml.safe_load((node.layout.proxy_dir / "config.yaml").read_text())
    assert proxy["nodePortAddresses"] == ["10.246.78.1/32", "fd6e:7368:78::1/128"]
    try:
        kubelet = node.procs()[1]
        apiserver, manager = cluster.plane.procs()[1:3]
    except binaries.MissingBinary as err:
        require(False, str(err))
    assert "--node-ip=10.246.78.1,fd6e:7368:78::1" in kubelet.argv
    ranges = "--service-cluster-ip-range=10.0.0.0/24,fd6e:7368:5e::/112"
    assert ranges in apiserver.argv and ranges in manager.argv
