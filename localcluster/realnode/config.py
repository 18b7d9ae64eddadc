"""The real node's configuration files, rendered from per-node values (pure: no I/O).

Each renderer takes what differs between nodes as parameters (its layout, addresses,
ports, subnets) and returns the file's content; node.py writes them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localcluster.realnode.layout import Layout

CLUSTER_NETWORK = "netshift-cluster"


def gateway(subnet: str) -> str:
    """The first address of a pod subnet: its bridge's address and its pods' gateway."""
    return str(next(ipaddress.ip_network(subnet).hosts()))


def containerd_config(layout: Layout, *, runc: str, pause_image: str) -> str:
    """containerd v2 configuration (version 3): CRI with runc, overlayfs, the node's CNI dirs."""
    d, cri = layout.containerd_dir, "plugins.'io.containerd.cri.v1.runtime'"
    lines = [
        "version = 3",
        f"root = {_toml(d / 'root')}",
        f"state = {_toml(d / 'state')}",
        "imports = []",  # nothing from /etc/containerd
        "",
        "[grpc]",
        f"  address = {_toml(layout.socket)}",
        "[ttrpc]",
        f"  address = {_toml(str(layout.socket) + '.ttrpc')}",
        "",
        "[plugins.'io.containerd.internal.v1.opt']",
        f"  path = {_toml(d / 'opt')}",
        "[plugins.'io.containerd.image-verifier.v1.bindir']",
        f"  bin_dir = {_toml(d / 'image-verifier')}",
        # NRI would open a socket under /var/run/nri for the whole machine.
        "[plugins.'io.containerd.nri.v1.nri']",
        "  disable = true",
        "",
        "[plugins.'io.containerd.cri.v1.images']",
        "  snapshotter = 'overlayfs'",
        "  [plugins.'io.containerd.cri.v1.images'.pinned_images]",
        f"    sandbox = {_toml(pause_image)}",
        "",
        f"[{cri}]",
        # Root in this VM lacks CAP_SYS_RESOURCE: a negative oom_score_adj is EPERM,
        # and every sandbox would fail in runc without this.
        "  restrict_oom_score_adj = true",
        "  enable_selinux = false",
        f"  [{cri}.containerd]",
        "    default_runtime_name = 'runc'",
        f"    [{cri}.containerd.runtimes.runc]",
        "      runtime_type = 'io.containerd.runc.v2'",
        f"      [{cri}.containerd.runtimes.runc.options]",
        f"        BinaryName = {_toml(runc)}",
        "        SystemdCgroup = false",
        f"  [{cri}.cni]",
        f"    bin_dirs = [{_toml(layout.cni_bin)}, '/usr/lib/cni']",
        f"    conf_dir = {_toml(layout.cni_conf)}",
        "    max_conf_num = 1",
        "",
        "[plugins.'io.containerd.grpc.v1.cri']",
        "  disable_tcp_service = true",
        "  stream_server_address = '127.0.0.1'",
        "  stream_server_port = '0'",
        "",
    ]
    return "\n".join(lines)


def kubelet_config(
    layout: Layout, *, node_ip: str, port: int, healthz_port: int, client_ca: Path
) -> dict[str, Any]:
    kpki = layout.kubelet_pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The node's address: the apiserver dials it for exec and logs.
        "address": node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(kpki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(kpki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        # This machine kind has a cgroup v1 (hybrid) hierarchy.
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": layout.endpoint,
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
        "serializeImagePulls": False,
        # A development machine's disk may be fuller than a node's would be.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "shutdownGracePeriod": "0s",
    }


def host_cidr(address: str) -> str:
    """One address as a CIDR of its own: 10.244.0.1/32, fd6e:7368:244::1/128."""
    return str(ipaddress.ip_network(address))


def kube_proxy_config(
    layout: Layout, *, name: str, node_ips: Sequence[str], healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    """`node_ips`: one per IP family of the cluster. kube-proxy programs every family the
    machine has (iptables and ip6tables), the Node's first address's as the primary one."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.proxy_dir / "kubeconfig")},
        "mode": "iptables",
        "hostnameOverride": name,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # No cluster CIDR: nothing is masqueraded for coming from "outside" it.
        "clusterCIDR": "",
        "iptables": {
            "masqueradeAll": False,
            # Else kube-proxy sets route_localnet for every interface of the machine.
            "localhostNodePorts": False,
            "syncPeriod": "30s",
            "minSyncPeriod": "0s",
        },
        # NodePorts on the node's own addresses on the bridge only: a family without one
        # here would get NodePorts on every address of the machine.
        "nodePortAddresses": [host_cidr(ip) for ip in node_ips],
        # 0: leave the machine's conntrack sysctls as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def cluster_network(*, bridge: str, subnets: Sequence[str], data_dir: Path) -> dict[str, Any]:
    """The cluster network (Multus's default delegate): bridge + host-local, no masquerading;
    one range per pod subnet (one per IP family), each with its default route."""
    families = [ipaddress.ip_network(s).version for s in subnets]
    return {
        "cniVersion": "1.0.0",
        "name": CLUSTER_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": s, "gateway": gateway(s)}] for s in subnets],
                    "routes": [{"dst": "0.0.0.0/0" if v == 4 else "::/0"} for v in families],
                    "dataDir": str(data_dir),
                },
            }
        ],
    }


def multus_daemon_config(layout: Layout) -> dict[str, Any]:
    run = str(layout.multus_dir / "run")
    return {
        # Delegates run in Multus's container (no chrootDir: this machine's root mount
        # is private, so the host's root cannot be mounted HostToContainer); every
        # path they use is mounted at the same path (see manifests/multus.yaml).
        "cniVersion": "1.0.0",
        "logLevel": "verbose",
        "logToStderr": True,
        "cniConfigDir": str(layout.cni_conf),
        "multusAutoconfigDir": str(layout.cluster_conf_dir),
        "multusConfigFile": "auto",
        "socketDir": run,
        "daemonSocketDir": run,
        # The cluster network by name, loaded from confDir: in auto mode Multus
        # otherwise passes a lossy copy of it on DEL and eth0's address leaks.
        "clusterNetwork": CLUSTER_NETWORK,
        "confDir": str(layout.cluster_conf_dir),
        "binDir": "/usr/lib/cni",
        "cniDir": str(layout.multus_dir / "cache"),
    }


def _toml(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
