"""The real node's own processes: containerd, the kubelet and kube-proxy (argv, health)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from localcluster.procs import Proc, http_ok
from localcluster.realnode.layout import Layout
from localcluster.realnode.tools import find_node_binary, node_path

NAMES = ("containerd", "kubelet", "kube-proxy")


def containerd(layout: Layout, *, ready: Callable[[], bool]) -> Proc:
    return Proc(
        "containerd",
        [
            find_node_binary("containerd"),
            f"--config={layout.containerd_dir / 'config.toml'}",
            "--log-level=warn",
        ],
        env={"PATH": node_path()},
        healthy=ready,
    )


def kubelet(layout: Layout, *, name: str, node_ips: Sequence[str], healthz_port: int) -> Proc:
    """`node_ips`: one per IP family of the cluster (a dual-stack Node has both)."""
    d = layout.kubelet_dir
    return Proc(
        "kubelet",
        [
            find_node_binary("kubelet"),
            f"--config={d / 'config.yaml'}",
            f"--kubeconfig={d / 'kubeconfig'}",
            f"--root-dir={d / 'root'}",
            f"--cert-dir={layout.kubelet_pki}",
            f"--hostname-override={name}",
            f"--node-ip={','.join(node_ips)}",
            "--v=1",
        ],
        env={"PATH": node_path()},
        healthy=lambda: http_ok(f"http://127.0.0.1:{healthz_port}/healthz"),
    )


def kube_proxy(layout: Layout, *, healthz_port: int) -> Proc:
    return Proc(
        "kube-proxy",
        [find_node_binary("kube-proxy"), f"--config={layout.proxy_dir / 'config.yaml'}", "--v=1"],
        env={"PATH": node_path()},
        healthy=lambda: http_ok(f"http://127.0.0.1:{healthz_port}/livez"),
    )
