"""The real node's ordered stop: nothing restarts, every pod's network is released.

The order, and why (docs/architecture.md, "The real node"):

1. the kubelet first: from here on nothing restarts a pod or a container;
2. the pods' sandboxes (`Shutdown.stop_pods`): the agent's pod, then every other pod
   through Multus (which DELs what it attached), then netshift's agent releases what it
   attached (Multus never will), then Multus's own pod;
3. kube-proxy and containerd, then the apiserver's connections from pod addresses
   (`ss -K`), the shims containerd left, the mounts under the node's root;
4. kube-proxy's, the DNAT's and the kubelet's iptables rules, then the bridge.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass

from localcluster.binaries import MissingBinary
from localcluster.node import Say
from localcluster.plane import Plane
from localcluster.procs import clean_env, pid_alive
from localcluster.realnode.hostnet import HostNetwork, unmount_under
from localcluster.realnode.layout import Layout
from localcluster.realnode.runtime import Runtime, Sandbox
from localcluster.realnode.tools import find_node_binary, node_bin_dir
from localcluster.supervisor import Supervisor

STOP_TIMEOUT = 20  # seconds a node process gets after SIGTERM


@dataclass
class Shutdown:
    layout: Layout
    plane: Plane
    supervisor: Supervisor
    runtime: Runtime
    hostnet: HostNetwork
    agent_release: list[str]  # `netshift agent ... --release-all` for this node

    def run(self, say: Say) -> None:
        self.supervisor.stop("kubelet", say, STOP_TIMEOUT)
        if self.supervisor.running("containerd"):
            self.stop_pods(say)
        for name in ("kube-proxy", "containerd"):
            self.supervisor.stop(name, say, STOP_TIMEOUT)
        self.close_dead_pod_connections(say)
        self.end_shims()
        unmounted = unmount_under(self.layout.root)
        if unmounted:
            say(f"node: unmounted {unmounted} mount(s) under {self.layout.root}")
        self.kube_proxy_cleanup()
        self.hostnet.remove_rules()
        if self.hostnet.remove_bridge():
            say(f"node network: removed bridge {self.hostnet.bridge}")

    def stop_pods(self, say: Say) -> None:
        """Every sandbox down, the CNI DELs done: the agent's pod first (it must not act on
        what follows), then the other pods, each through Multus, which DELs what it attached;
        then netshift's agent releases what it attached (Multus never will), and Multus's own
        pod goes last.

        The other pods go before the agent's release: it DELs every attachment it holds,
        eth0s it adopted from Multus too, and a running pod whose eth0 is gone can no longer
        close its connections. Its processes would die without a FIN, and the apiserver's
        graceful shutdown would wait for those connections until it is killed. With the
        sandboxes stopped first, each pod's processes end while its network is there, and the
        agent's DELs find the netns gone and release the IPAM addresses."""
        sandboxes = self.runtime.sandboxes()
        if not sandboxes:
            return
        agent = [s for s in sandboxes if _is_agent(s)]
        multus = [s for s in sandboxes if _is_multus(s)]
        for s in agent:
            self.runtime.crictl("stopp", s.id, check=False)
        for s in sandboxes:
            if s in agent or s in multus:
                continue
            done = self.runtime.crictl("stopp", s.id, check=False)
            if done.returncode != 0:
                say(f"node: stopping pod {s.namespace}/{s.name} failed: {done.stderr.strip()}")
        self.release_agent_records(say)
        for s in multus:
            self.runtime.crictl("stopp", s.id, check=False)
        self.runtime.crictl("rmp", "--all", "--force", check=False, timeout=120)
        say(f"node: stopped and removed {len(sandboxes)} pod sandbox(es)")

    def release_agent_records(self, say: Say) -> None:
        records = self.layout.agent_dir / "records"
        if not records.exists() or not any(records.iterdir()):
            return
        done = subprocess.run(
            self.agent_release,
            capture_output=True,
            text=True,
            env=clean_env({"PATH": f"{node_bin_dir()}:{os.environ.get('PATH', '')}"}),
            cwd=self.plane.state_dir,
            timeout=300,
        )
        if done.returncode != 0:
            say(f"agent: could not release everything:\n{done.stderr[-2000:]}")

    def apiserver_pod_connections(self, *, close: bool = False) -> list[str]:
        """The peers (address:port) of the apiserver's connections from the pod subnet;
        with `close`, those connections are closed on the apiserver's side (`ss -K`)."""
        done = subprocess.run(
            [
                "ss", *(["-K"] if close else []), "-tn", "state", "established",
                "dst", self.hostnet.pod_subnet,
                "and", "sport", "=", f":{self.hostnet.apiserver_port}",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if done.returncode != 0:
            return []
        return [line.split()[-1] for line in done.stdout.splitlines()[1:] if line.strip()]

    def close_dead_pod_connections(self, say: Say) -> None:
        """Close the apiserver's connections from pod addresses: no pod is left, so their
        peers are gone, and one that vanished without a FIN or RST (a pod frozen and then
        killed, a netns torn down under a process) would hold the apiserver's graceful
        shutdown until it is killed."""
        if not self.plane.running("kube-apiserver"):
            return
        closed = len(self.apiserver_pod_connections(close=True))
        if closed:
            say(f"node: closed {closed} apiserver connection(s) left by pods that are gone")

    def end_shims(self) -> None:
        """The shims outlive containerd when it is killed; end those of this node."""
        for pid in self.runtime.shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.05)

    def kube_proxy_cleanup(self) -> None:
        """`kube-proxy --cleanup`: its iptables chains, logged with kube-proxy's own log."""
        log_dir = self.supervisor.log_dir
        with contextlib.suppress(MissingBinary, OSError):
            if log_dir.exists():
                with open(log_dir / "kube-proxy.log", "ab") as log:
                    subprocess.run(
                        [find_node_binary("kube-proxy"), "--cleanup"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=60,
                        check=False,
                    )


def _is_agent(s: Sandbox) -> bool:
    return (
        s.labels.get("app.kubernetes.io/component") == "agent" and s.namespace == "netshift-system"
    )


def _is_multus(s: Sandbox) -> bool:
    return s.namespace == "kube-system" and s.labels.get("app.kubernetes.io/name") == "multus"
