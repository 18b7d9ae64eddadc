"""Where the real node's programs come from: the node binaries cache and Debian's tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from localcluster import binaries

NODE_BINARIES = (
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "crictl",
    "kubelet",
    "kube-proxy",
    "multus-daemon",
    "multus-shim",
)
# Debian packages on the host (scripts/setup.sh installs them).
HOST_TOOLS = {"runc": "runc", "conntrack": "conntrack", "iptables": "iptables"}


def node_bin_dir() -> Path:
    """The cache directory scripts/build-node.sh fills (it prints the same path)."""
    override = os.environ.get("NETSHIFT_NODE_BIN")
    if override:
        return Path(override)
    v = binaries.pinned_versions()
    name = (
        f"node-containerd-{v.get('CONTAINERD_VERSION', '?')}-kube-{v['KUBE_VERSION']}"
        f"-crictl-{v.get('CRICTL_VERSION', '?')}-multus-{v.get('MULTUS_VERSION', '?')}"
    )
    return binaries.cache_dir() / "bin" / name


def find_node_binary(name: str) -> str:
    path = node_bin_dir() / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    raise binaries.MissingBinary(
        f"{name} not found in {node_bin_dir()}; run scripts/build-node.sh "
        "(it builds the pinned node binaries from the Go module proxy)"
    )


def host_tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise binaries.MissingBinary(
            f"{name} not found; install Debian's {HOST_TOOLS.get(name, name)} (scripts/setup.sh)"
        )
    return found


def node_path() -> str:
    """$PATH for the node's processes: containerd finds containerd-shim-runc-v2 on it,
    kube-proxy iptables and conntrack."""
    return f"{node_bin_dir()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing_binaries() -> list[str]:
    """What of the node's programs this machine lacks, one sentence each."""
    missing: list[str] = []
    for name in NODE_BINARIES:
        try:
            find_node_binary(name)
        except binaries.MissingBinary as err:
            missing.append(str(err))
    for name in HOST_TOOLS:
        try:
            host_tool(name)
        except binaries.MissingBinary as err:
            missing.append(str(err))
    return missing
