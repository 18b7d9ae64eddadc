"""The local cluster: the plane and its nodes, rooted at a state directory.

`netshift up` starts the plane (localcluster/plane.py: etcd, kube-apiserver,
controller-manager, scheduler on loopback), then every node (localcluster/node.py:
a real node or the node simulator, with netshift on it), as detached processes whose
pids, ports and logs live in the state dir, so that a second `up` finds and reuses what
runs and `down` stops exactly what was started. A process that died is reported with
the tail of its log.

    <state>/cluster.json          the plane's ports, each node's settings (state.py)
    <state>/pki/, kubeconfig      the plane's certificates, the admin kubeconfig
    <state>/run/, logs/           the plane's pid files and logs
    <state>/nodes/<name>/         everything of one node (its own run/ and logs/ too)
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from localcluster import nodekinds
from localcluster.errors import ClusterError
from localcluster.node import Node
from localcluster.plane import Plane
from localcluster.state import (
    DEFAULT_BRIDGE,
    DEFAULT_POD_SUBNET,
    DEFAULT_POD_SUBNET6,
    DUAL,
    IP_FAMILIES,
    SERVICE_CIDRS,
    ClusterState,
    NodeSpec,
    node_name,
)
from localcluster.supervisor import ProcStatus
from netshift.kube import Kube

Say = Callable[[str], None]
N = TypeVar("N")


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """The node's pod network, chosen when a state dir is first used (then kept in it)."""
    parser.add_argument("--pod-subnet", default=None, help=f"default {DEFAULT_POD_SUBNET}")
    parser.add_argument("--bridge", default=None, help=f"default {DEFAULT_BRIDGE}")
    parser.add_argument(
        "--ip-family",
        choices=IP_FAMILIES,
        default=None,
        help="ipv4 (default) or dual: an IPv6 pod subnet besides the IPv4 one "
        f"(--pod-subnet6, default {DEFAULT_POD_SUBNET6}), Services with both families "
        "(real node only)",
    )
    parser.add_argument("--pod-subnet6", default=None, help=f"default {DEFAULT_POD_SUBNET6}")


def _check_subnets(spec: NodeSpec, asked6: str | None) -> None:
    """A new node's subnets are of the families they are for (errors a user can act on)."""
    if asked6 is not None and spec.pod_subnet6 is None:
        raise ClusterError("--pod-subnet6 is for a dual-stack cluster: add --ip-family dual")
    for subnet, version in ((spec.pod_subnet, 4), (spec.pod_subnet6, 6)):
        if subnet is None:
            continue
        try:
            ok = ipaddress.ip_network(subnet).version == version
        except ValueError:
            ok = False
        if not ok:
            flag = "--pod-subnet" if version == 4 else "--pod-subnet6"
            raise ClusterError(
                f"{flag} {subnet} is not an IPv{version} network (e.g. {_EXAMPLE[version]})"
            )


_EXAMPLE = {4: DEFAULT_POD_SUBNET, 6: DEFAULT_POD_SUBNET6}


class LocalCluster:
    """The plane and the nodes of one local cluster, rooted at `state_dir`.

    A new state dir gets one node of kind `node` ("real" or "sim"; "sim" when None)
    with `pod_subnet` and `bridge` and, with `ip_family` "dual", `pod_subnet6`; an
    existing one keeps what it was made with (its IP family too), and changes its node's
    kind to `node` only while nothing runs."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        pod_subnet: str | None = None,
        bridge: str | None = None,
        node: str | None = None,
        ip_family: str | None = None,
        pod_subnet6: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state = ClusterState(self.state_dir)
        made = self.state.node_specs()
        if not made and ip_family is not None:
            self.state.ip_family = ip_family
        elif ip_family is not None and ip_family != self.state.ip_family:
            raise ClusterError(
                f"{self.state_dir} was made with --ip-family {self.state.ip_family}; a state "
                "dir keeps its IP family: `netshift down` it and use another --state-dir"
            )
        self.ip_family = self.state.ip_family
        self.plane = Plane(
            self.state_dir, self.state.plane_ports, service_cidrs=SERVICE_CIDRS[self.ip_family]
        )
        dual = self.ip_family == DUAL
        specs = made or [
            NodeSpec(
                name=node_name(),
                kind=node or "sim",
                pod_subnet=pod_subnet or DEFAULT_POD_SUBNET,
                bridge=bridge or DEFAULT_BRIDGE,
                pod_subnet6=(pod_subnet6 or DEFAULT_POD_SUBNET6) if dual else None,
            )
        ]
        if not made:
            _check_subnets(specs[0], pod_subnet6)
        kinds = {node} if node is not None else {s.kind for s in specs}
        if dual and kinds != {"real"}:
            # The node simulator wires IPv4 only.
            raise ClusterError(
                "a dual-stack local cluster runs on the real node only (--node real)"
            )
        self.nodes = self._make_nodes(specs)
        if node is not None and any(s.kind != node for s in specs):
            if self.status():
                raise ClusterError(
                    f"{self.state_dir} runs a --node {specs[0].kind} cluster; "
                    "`netshift down` it first or use another --state-dir"
                )
            self.nodes = self._make_nodes([replace(s, kind=node) for s in specs])

    def single_node(self, kind: type[N]) -> N:
        """The cluster's one node, which must be a `kind` (for callers that run one node)."""
        if len(self.nodes) != 1 or not isinstance(self.nodes[0], kind):
            kinds = ", ".join(type(n).__name__ for n in self.nodes)
            raise ClusterError(f"{self.state_dir} has nodes {kinds}, not one {kind.__name__}")
        return self.nodes[0]

    def _make_nodes(self, specs: list[NodeSpec]) -> list[Node]:
        self.state.set_node_specs(specs)
        return [
            nodekinds.make(
                spec,
                self.plane,
                self.state.node_ports(spec.name),
                self.state_dir / "nodes" / spec.name,
            )
            for spec in specs
        ]

    # -- the plane, for callers that talk to the cluster -------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def port(self, name: str) -> int:
        """One of the plane's ports (e.g. "apiserver")."""
        return self.plane.ports(name)

    @property
    def ports(self) -> dict[str, int]:
        """The plane's ports (each node keeps its own)."""
        return self.plane.ports.as_dict()

    def kube(self) -> Kube:
        return self.plane.kube()

    def kubectl_command(self) -> list[str]:
        return self.plane.kubectl_command()

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, check=check, input=input, timeout=timeout)

    # -- up / down -------------------------------------------------------------

    def up(self, *, services: Sequence[str] | None = None, say: Say = print) -> None:
        """Start what is not running: the plane, then each node. `services`: None for
        everything, [] for the plane alone, else the node simulator's processes to start."""
        if self.state.legacy and self.status():
            raise ClusterError(self._legacy_message())
        self.state.save()
        self.plane.up(say, serving_ips=[ip for n in self.nodes for ip in n.apiserver_ips()])
        for node in self.nodes:
            node.up(services, say)

    def down(self, say: Say = print, timeout: float = 15) -> None:
        """Every node (its pods' networks released while the apiserver still runs), then
        the plane."""
        if self.state.legacy and self.status():
            say(self._legacy_message())
        for node in self.nodes:
            node.down(say)
        self.plane.down(say, timeout)

    def _legacy_message(self) -> str:
        return (
            f"{self.state_dir} was brought up by a netshift from before nodes/ (its node's "
            "files are in realnode/ or node/ and agent/); stop it with that netshift's "
            "`netshift down` first: this one stops its processes but cannot release its "
            "pods' addresses and netns"
        )

    # -- what runs -------------------------------------------------------------

    def status(self) -> list[ProcStatus]:
        """The plane's processes, then each node's."""
        return [*self.plane.status(), *(row for n in self.nodes for row in n.status())]

    def pid(self, name: str) -> int | None:
        """The pid of a process of the plane or, else, of the first node that has one."""
        for pid in (self.plane.supervisor.pid(name), *(n.pid(name) for n in self.nodes)):
            if pid is not None:
                return pid
        return None

    def crashed(self) -> list[str]:
        """Names of started processes that are no longer running."""
        return [n for n, pid, alive in self.status() if pid is not None and not alive]
