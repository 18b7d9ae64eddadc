"""The node simulator as a node of the local cluster (`--node sim`): netshift as host processes.

Its processes, started one after the other under `<root>/run/` and `<root>/logs/`:
the node simulator (`netshift nodesim`, a stand-in for kubelet + runtime + Multus),
netshift's agent, webhook and controller. Its files:

    <root>/sim/     the node simulator's sandbox records (pods/), the cluster network's
                    conflist (net.d/) and its host-local store (ipam/)
    <root>/agent/   the agent's attachment records, ready file and timing log

Pods' network namespaces are /var/run/netns/netshift-<uid>, which the agent finds by
that path template, as it would any runtime's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from localcluster import hostservices
from localcluster.node import Say
from localcluster.plane import Plane
from localcluster.procs import Proc, clean_env, indent, main_python
from localcluster.state import NodeSpec, Ports
from localcluster.supervisor import ProcStatus, Supervisor
from netshift.kube import ApiError, node_path
from netshift.records import RecordStore

NETNS_DIR = Path("/var/run/netns")
NETNS_TEMPLATE = f"{NETNS_DIR}/netshift-{{uid}}"
CLUSTER_CONFLIST = "00-netshift-cluster.conflist"  # the name nodesim writes it under
# One after the other: the agent reads the cluster network conflist the node simulator
# writes, and the webhook must be up before it is registered.
PROCS = ("nodesim", "agent", "webhook", "controller")


class SimNode:
    """One node run by the node simulator, with netshift's processes beside it."""

    kind = "sim"

    def __init__(self, spec: NodeSpec, plane: Plane, ports: Ports, root: Path) -> None:
        self.spec = spec
        self.plane = plane
        self.ports = ports
        self.root = root
        self.sim_dir = root / "sim"
        self.agent_dir = root / "agent"
        self.supervisor = Supervisor(root / "run", root / "logs", plane.state_dir, PROCS)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pod_subnet(self) -> str:
        return self.spec.pod_subnet

    @property
    def bridge(self) -> str:
        return self.spec.bridge

    # -- where its networks live -------------------------------------------------

    @property
    def cni_conf_dir(self) -> Path:
        return self.sim_dir / "net.d"

    @property
    def cluster_conflist(self) -> Path:
        return self.cni_conf_dir / CLUSTER_CONFLIST

    @property
    def ipam_dir(self) -> Path:
        return self.sim_dir / "ipam"

    @property
    def records_dir(self) -> Path:
        """The node simulator's sandboxes (netshift.records, one directory per pod)."""
        return self.sim_dir / "pods"

    def host_local_stores(self) -> list[Path]:
        return [self.ipam_dir]

    @property
    def netns_dir(self) -> Path:
        return NETNS_DIR

    def netns_resolver_args(self) -> list[str]:
        return [f"--netns-template={NETNS_TEMPLATE}"]

    def apiserver_ips(self) -> list[str]:
        return []  # everything runs on the host: loopback

    # -- processes -----------------------------------------------------------------

    def procs(self) -> list[Proc]:
        return [self._nodesim(), self._agent(), *hostservices.procs(self.plane, self.ports)]

    def _nodesim(self) -> Proc:
        return Proc(
            "nodesim",
            [
                *main_python(),
                "nodesim",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--node={self.name}",
                f"--state-dir={self.sim_dir}",
                f"--subnet={self.pod_subnet}",
                f"--bridge={self.bridge}",
            ],
            healthy=lambda: self._wrote_ready("nodesim", self.sim_dir / "ready"),
        )

    def _agent(self) -> Proc:
        self.agent_dir.mkdir(parents=True, exist_ok=True)
        return Proc(
            "agent",
            [
                *main_python(),
                "agent",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--node={self.name}",
                f"--records-dir={self.agent_dir / 'records'}",
                f"--cluster-network-conf={self.cluster_conflist}",
                *self.netns_resolver_args(),
                f"--ready-file={self.agent_dir / 'ready'}",
                f"--timing-log={self.agent_dir / 'timings.jsonl'}",
                "--health-bind-address=127.0.0.1",
                f"--health-port={self.ports('agent-health')}",
            ],
            healthy=lambda: self._wrote_ready("agent", self.agent_dir / "ready"),
        )

    def _wrote_ready(self, name: str, ready_file: Path) -> bool:
        """Ready once the running process itself wrote its pid into its ready file."""
        try:
            return ready_file.read_text().strip() == str(self.supervisor.pid(name))
        except OSError:
            return False

    # -- life ----------------------------------------------------------------------

    def up(self, services: Sequence[str] | None, say: Say) -> None:
        self.register()
        self.plane.ensure_namespace("netshift-system")
        chosen = [p for p in self.procs() if services is None or p.name in services]
        self.supervisor.start_all(chosen, say)

    def register(self) -> None:
        """The Node object (its status is kept by the node simulator)."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "netshift.io/simulated": "true",
                },
            },
        }
        try:
            self.plane.kube().create(node_path(), node)
        except ApiError as err:
            if err.status != 409:
                raise

    def down(self, say: Say) -> None:
        # Its processes first (they clean up against the apiserver, which still runs).
        self.supervisor.stop_all(say)
        self.release(say)

    def release(self, say: Say) -> None:
        """Release what the node's pods hold: the agent's attachments (their IPAM addresses
        included), then the node simulator's sandboxes, then the cluster bridge."""
        sandboxes = len(RecordStore(self.records_dir).pods()) if self.records_dir.exists() else 0
        procs = {p.name: p for p in self.procs()}
        # The agent first: its DELs need the namespaces the simulator then removes.
        for name, records in (("agent", self.agent_dir / "records"), ("nodesim", self.records_dir)):
            if records.exists():
                done = subprocess.run(
                    [*procs[name].argv, "--release-all"],
                    capture_output=True,
                    text=True,
                    env=clean_env(),
                    cwd=self.plane.state_dir,
                    timeout=300,
                )
                if done.returncode != 0:
                    say(f"{name}: could not release everything:\n{indent(done.stderr[-2000:])}")
        gone = subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        if sandboxes or gone.returncode == 0:
            say(f"node network: released {sandboxes} pod sandbox(es) and bridge {self.bridge}")

    def status(self) -> list[ProcStatus]:
        return self.supervisor.status()

    def pid(self, name: str) -> int | None:
        return self.supervisor.pid(name)
