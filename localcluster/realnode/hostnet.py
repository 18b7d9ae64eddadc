"""The real node's network on the host: its bridge and the pods' path to the apiserver.

The apiserver listens on 127.0.0.1 only. Pods on the pod network reach it at the
bridge's gateway address: one DNAT rule for that address and port on this bridge, and
`route_localnet` on this bridge alone. Nothing is masqueraded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localcluster.binaries import MissingBinary
from localcluster.realnode.tools import host_tool
from localcluster.topology import bridge_mac

# The chains the kubelet makes (kube-proxy --cleanup removes kube-proxy's).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


@dataclass(frozen=True)
class HostNetwork:
    bridge: str
    pod_subnet: str
    gateway: str
    apiserver_port: int
    owner: str  # said in the DNAT rule's comment: whose rule it is (the state dir)
    netns_dir: Path
    # A dual-stack node's IPv6 pod subnet: its gateway (host 1) is on the bridge too.
    # Pods reach the apiserver over IPv4 alone (the DNAT rule).
    other_subnets: tuple[str, ...] = ()

    def dnat_rule(self) -> list[str]:
        """The nat PREROUTING rule (without -A/-D) that sends pods' apiserver traffic to loopback."""
        port = str(self.apiserver_port)
        return [
            "PREROUTING",
            *("-i", self.bridge, "-d", self.gateway, "-p", "tcp", "--dport", port),
            *(
                "-m",
                "comment",
                "--comment",
                f"netshift: pods to the local apiserver ({self.owner})",
            ),
            *("-j", "DNAT", "--to-destination", f"127.0.0.1:{port}"),
        ]

    def ensure(self) -> None:
        """The bridge, made before the first pod so that its settings are ours, with the
        gateway's address; the DNAT rule; a shared netns dir."""
        bridge = self.bridge
        if subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        # An address of its own: else the gateway's MAC follows the bridge's lowest port
        # and every pod's cached one goes stale when a pod comes or goes.
        subprocess.run(["ip", "link", "set", bridge, "address", bridge_mac(bridge)], check=True)
        prefix = ipaddress.ip_network(self.pod_subnet).prefixlen
        subprocess.run(
            ["ip", "addr", "replace", f"{self.gateway}/{prefix}", "dev", bridge], check=True
        )
        for subnet in self.other_subnets:
            net = ipaddress.ip_network(subnet)
            # nodad: the gateway answers at once, not after duplicate address detection.
            address = f"{next(net.hosts())}/{net.prefixlen}"
            subprocess.run(["ip", "addr", "replace", address, "dev", bridge, "nodad"], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1\n")
        shared_netns_dir(self.netns_dir)
        rule = self.dnat_rule()
        iptables = host_tool("iptables")
        if subprocess.run([iptables, "-t", "nat", "-C", *rule], capture_output=True).returncode:
            subprocess.run([iptables, "-t", "nat", "-A", *rule], check=True)

    def remove_rules(self) -> None:
        """The DNAT rule (every copy) and the kubelet's chains."""
        with contextlib.suppress(MissingBinary, OSError):
            iptables = host_tool("iptables")
            delete = [iptables, "-t", "nat", "-D", *self.dnat_rule()]
            while subprocess.run(delete, capture_output=True).returncode == 0:
                pass
            remove_kubelet_chains(iptables)
            with contextlib.suppress(MissingBinary):
                remove_kubelet_chains(host_tool("ip6tables"))

    def remove_bridge(self) -> bool:
        return (
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True).returncode == 0
        )


def remove_kubelet_chains(iptables: str) -> None:
    for table in ("filter", "nat", "mangle"):
        listing = subprocess.run([iptables, "-t", table, "-S"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            words = line.split()
            if (
                words[:1] == ["-A"]
                and words[1] not in KUBELET_CHAINS
                and any(f"-j {chain}" in line for chain in KUBELET_CHAINS)
            ):
                subprocess.run([iptables, "-t", table, "-D", *words[1:]], capture_output=True)
        for chain in KUBELET_CHAINS:
            subprocess.run([iptables, "-t", table, "-F", chain], capture_output=True)
            subprocess.run([iptables, "-t", table, "-X", chain], capture_output=True)


def shared_netns_dir(netns: Path) -> None:
    """Make the netns dir a shared mount, as `ip netns add` does: pod netns files that
    containerd makes later then reach the agent's and Multus's containers
    (mountPropagation: HostToContainer needs a shared mount)."""
    netns.mkdir(parents=True, exist_ok=True)
    if any(m == str(netns) for m in mount_targets()):
        return
    subprocess.run(["mount", "--bind", str(netns), str(netns)], check=True)
    subprocess.run(["mount", "--make-shared", str(netns)], check=True)


def mount_targets() -> Iterator[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            yield line.split()[4].replace("\\040", " ")


def unmount_under(top: Path) -> int:
    """Lazily unmount everything mounted under `top`, the deepest first; how many."""
    prefix = str(top).rstrip("/") + "/"
    targets = [t for t in mount_targets() if t.startswith(prefix)]
    count = 0
    for target in sorted(targets, key=len, reverse=True):
        if subprocess.run(["umount", "-l", target], capture_output=True).returncode == 0:
            count += 1
    return count
