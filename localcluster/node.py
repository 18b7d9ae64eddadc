"""What every node of the local cluster is: the `Node` interface.

`LocalCluster` holds the plane and a list of nodes and speaks to each through this
interface only; the kinds are `SimNode` (localcluster/simnode.py: the node simulator,
netshift as host processes) and `RealNode` (localcluster/realnode/: containerd, a
kubelet, kube-proxy and Multus, netshift as pods). A node is made from its `NodeSpec`
(localcluster/state.py), the plane it joins, the ports it keeps in the state file and
its root directory, `<state>/nodes/<name>/`, under which it writes everything of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from localcluster.plane import Plane
from localcluster.state import NodeSpec, Ports
from localcluster.supervisor import ProcStatus

Say = Callable[[str], None]


class Node(Protocol):
    """One node: its processes, its files, and how its pods' networks are found."""

    spec: NodeSpec
    root: Path  # everything the node writes where the software lets us choose

    @property
    def name(self) -> str:
        """Its Node object's name."""
        ...

    @property
    def pod_subnet(self) -> str: ...

    @property
    def bridge(self) -> str: ...

    # -- where its networks live -----------------------------------------------

    @property
    def cni_conf_dir(self) -> Path:
        """The CNI conf dir its runtime reads when it wires a sandbox."""
        ...

    @property
    def cluster_conflist(self) -> Path:
        """The cluster network's conflist (what pods get as eth0; the agent's
        --cluster-network-conf)."""
        ...

    @property
    def ipam_dir(self) -> Path:
        """The cluster network's host-local store (its dataDir)."""
        ...

    def host_local_stores(self) -> list[Path]:
        """Every host-local store a pod's address on this node may sit in."""
        ...

    @property
    def netns_dir(self) -> Path:
        """Where its pods' network namespaces are mounted."""
        ...

    def netns_resolver_args(self) -> list[str]:
        """How netshift's agent finds its pods' network namespaces (the agent's flags)."""
        ...

    def apiserver_ips(self) -> list[str]:
        """Addresses, besides loopback, at which its pods reach the apiserver (put in the
        apiserver's serving certificate before the plane starts)."""
        ...

    # -- life ------------------------------------------------------------------

    def up(self, services: Sequence[str] | None, say: Say) -> None:
        """Start what is not running. `services`: None for everything, [] for nothing of the
        node (the plane alone), else the names of the node's processes to start (the node
        simulator's: nodesim, agent, webhook, controller)."""
        ...

    def down(self, say: Say) -> None:
        """Stop it and release what its pods held: every IPAM address, netns and mount,
        its bridge. The plane still runs."""
        ...

    def status(self) -> list[ProcStatus]:
        """Its processes, in start order."""
        ...

    def pid(self, name: str) -> int | None:
        """The pid of one of its processes, if it was started."""
        ...


# How a kind makes a node: (its spec, the plane, its ports, its root) -> the node.
NodeFactory = Callable[[NodeSpec, Plane, Ports, Path], Node]
