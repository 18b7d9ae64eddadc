"""Where one real node keeps everything, under its root `<state>/nodes/<name>/` (pure).

    containerd/    config.toml, containerd.sock, root/, state/
    kubelet/       config.yaml, kubeconfig, pki/, root/ (its --root-dir)
    kube-proxy/    config.yaml, kubeconfig
    cni/bin/       multus-shim (installed by Multus's init container)
    cni/net.d/     containerd's CNI conf dir: only Multus's 00-multus.conf
    cni/cluster.d/ Multus's confDir: the cluster network conflist (its default delegate)
                   and the conf files of networks defined per node (NADs without
                   spec.config); the agent reads it too (its --node-conf-dir)
    cni/networks/  host-local store of the cluster network
    multus/        the Multus daemon's socket (run/) and cache
    agent/         netshift agent's attachment records (a hostPath of its DaemonSet)
    manifests/     the filled Multus manifest and the netshift kustomize overlay
    run/, logs/    pid files and logs of containerd, the kubelet and kube-proxy
    images.json    what was imported into containerd (archive, size, mtime)

What the software fixes stays where it puts it: pods' netns files in `netns_dir`
(/run/netns) and the kubelet's cgroups (kubepods/), which is why one real node runs
on a machine at a time (see machine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CLUSTER_CONFLIST = "10-netshift-cluster.conflist"
MULTUS_CONF = "00-multus.conf"
# A unix socket's path must fit in sun_path (108 bytes with its NUL).
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class Layout:
    root: Path
    netns_dir: Path = Path("/run/netns")

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        """containerd's CRI endpoint (the kubelet's, crictl's and the agent's)."""
        return f"unix://{self.socket}"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_pki(self) -> Path:
        return self.kubelet_dir / "pki"

    @property
    def proxy_dir(self) -> Path:
        return self.root / "kube-proxy"

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cluster_conf_dir(self) -> Path:
        return self.root / "cni" / "cluster.d"

    @property
    def cluster_conflist(self) -> Path:
        return self.cluster_conf_dir / CLUSTER_CONFLIST

    @property
    def ipam_dir(self) -> Path:
        return self.root / "cni" / "networks"

    @property
    def multus_dir(self) -> Path:
        return self.root / "multus"

    @property
    def agent_dir(self) -> Path:
        return self.root / "agent"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def images_stamp(self) -> Path:
        return self.root / "images.json"

    def dirs(self) -> list[Path]:
        """Every directory the node's processes expect to exist."""
        return [
            self.containerd_dir,
            self.kubelet_dir / "root",
            self.proxy_dir,
            self.cni_bin,
            self.cni_conf,
            self.cluster_conf_dir,
            self.ipam_dir,
            self.multus_dir / "run",
            self.multus_dir / "cache",
            self.agent_dir,
            self.manifests_dir,
        ]

    def too_long_socket(self) -> str | None:
        """The longest unix socket path the node makes, if it is too long to bind."""
        longest = f"{self.socket}.ttrpc"
        return longest if len(longest) > MAX_SOCKET_PATH else None
