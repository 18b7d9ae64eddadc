"""What a state dir keeps between `netshift up` and `down`: cluster.json.

The plane's ports at the top; one entry per node with what is its own (name, kind,
pod subnet, bridge, ports). A state dir keeps the settings it was first brought up
with, so that a second `up` or a `down` finds the same cluster.

    {"ports": {"etcd": 41234, "apiserver": 41235, ...},
     "nodes": [{"name": "vm", "kind": "real", "podSubnet": "10.244.0.0/24",
                "bridge": "nsbr0", "ports": {"kubelet": 41240, ...}}]}

A dual-stack cluster (`--ip-family dual`) says so at the top ("ipFamily": "dual") and
each node has an IPv6 pod subnet besides its IPv4 one ("podSubnet6"); an IPv4 cluster's
file has neither, as before.

A state file of a netshift from before nodes/ (one node, its settings at the top
level) is read as that one node; its node's files were elsewhere, so it must have
been taken down with that netshift first (see `LocalCluster`).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster.procs import free_port

STATE_FILE = "cluster.json"
DEFAULT_POD_SUBNET = "10.244.0.0/24"
DEFAULT_BRIDGE = "nsbr0"
DEFAULT_POD_SUBNET6 = "fd6e:7368:244::/64"  # a ULA range of the project's own ("ns" = 6e73)

# `--ip-family`: what a cluster's Services and pods get. The family is this value, kept in
# the state; everything that depends on it reads the lists below or a node's pod_subnets.
IPV4, DUAL = "ipv4", "dual"
IP_FAMILIES = (IPV4, DUAL)
# The Services' ranges, the cluster's primary (IPv4) family first. The IPv6 one is a /112
# (the apiserver takes none larger than a /108), apart from every pod subnet.
SERVICE_CIDRS = {IPV4: ("10.0.0.0/24",), DUAL: ("10.0.0.0/24", "fd6e:7368:5e::/112")}


@dataclass(frozen=True)
class NodeSpec:
    """What makes one node of the local cluster itself, kept in the state dir."""

    name: str
    kind: str  # "real" or "sim" (`--node`)
    pod_subnet: str  # its pods' IPv4 addresses
    bridge: str  # its cluster network's bridge
    pod_subnet6: str | None = None  # its pods' IPv6 addresses in a dual-stack cluster

    @property
    def pod_subnets(self) -> list[str]:
        """Its pod subnets, one per IP family of the cluster, IPv4 first."""
        return [self.pod_subnet, *([self.pod_subnet6] if self.pod_subnet6 else [])]

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "podSubnet": self.pod_subnet,
            "bridge": self.bridge,
        }
        if self.pod_subnet6:
            out["podSubnet6"] = self.pod_subnet6
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeSpec:
        return cls(
            data["name"], data["kind"], data["podSubnet"], data["bridge"], data.get("podSubnet6")
        )


def node_name() -> str:
    """This machine's name as a Node name (lower case, no dots)."""
    raw = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in raw).strip("-")
    return cleaned or "netshift-node"


class Ports:
    """Named loopback ports, each chosen once (a free one) and kept in the state file."""

    def __init__(self, ports: dict[str, int], save: Callable[[], None]) -> None:
        self._ports = ports
        self._save = save

    def __call__(self, name: str) -> int:
        if name not in self._ports:
            self._ports[name] = free_port()
            self._save()
        return self._ports[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ports)

    def as_dict(self) -> dict[str, int]:
        return dict(self._ports)


class ClusterState:
    """cluster.json of one state dir, read once and written on every change."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self.data: dict[str, Any] = read(state_dir)
        self.legacy = "nodes" not in self.data and "podSubnet" in self.data
        if self.legacy:
            self.data = from_legacy(self.data)
        self.plane_ports = Ports(self.data.setdefault("ports", {}), self.save)

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)

    @property
    def ip_family(self) -> str:
        """The cluster's IP family (one of IP_FAMILIES); IPv4 for a file without one."""
        return str(self.data.get("ipFamily", IPV4))

    @ip_family.setter
    def ip_family(self, family: str) -> None:
        if family not in IP_FAMILIES:
            raise ValueError(f"no IP family {family!r}; one of {', '.join(IP_FAMILIES)}")
        if family == IPV4:
            self.data.pop("ipFamily", None)  # an IPv4 cluster's file stays as it was
        else:
            self.data["ipFamily"] = family

    def node_specs(self) -> list[NodeSpec]:
        return [NodeSpec.from_json(entry) for entry in self.data.get("nodes", [])]

    def set_node_specs(self, specs: list[NodeSpec]) -> None:
        """The nodes from now on; each keeps the ports it had under its name."""
        before = {entry["name"]: entry for entry in self.data.get("nodes", [])}
        self.data["nodes"] = [
            {**spec.to_json(), "ports": before.get(spec.name, {}).get("ports", {})}
            for spec in specs
        ]

    def node_ports(self, name: str) -> Ports:
        (entry,) = [e for e in self.data["nodes"] if e["name"] == name]
        return Ports(entry.setdefault("ports", {}), self.save)


def read(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def from_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """The one node of a state file from before nodes/, as an entry of "nodes"."""
    spec = NodeSpec(
        name=data.get("node") or node_name(),
        kind=data.get("nodeMode") or "sim",
        pod_subnet=data["podSubnet"],
        bridge=data.get("bridge") or DEFAULT_BRIDGE,
    )
    return {"ports": data.get("ports", {}), "nodes": [{**spec.to_json(), "ports": {}}]}


def stored_kind(state_dir: str | Path) -> str | None:
    """The node kind a state dir was first brought up with, if any."""
    state = ClusterState(Path(state_dir))
    specs = state.node_specs()
    return specs[0].kind if specs else None
