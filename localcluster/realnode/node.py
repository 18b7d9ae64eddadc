"""`RealNode`: containerd + runc, a kubelet, kube-proxy and Multus thick, netshift as pods.

What `netshift up --node real` (the default) brings up next to the plane. Its own
processes run under a `Supervisor` in its root (see layout.py for every file); Multus
and netshift run as pods (deploy.py); the host side of its network is hostnet.py; its
ordered stop is shutdown.py. Only one real node runs on a machine at a time
(machine.py); a second plane (e.g. a test session) uses the node simulator or waits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from localcluster.errors import NodeError
from localcluster.node import Say
from localcluster.plane import Plane
from localcluster.procs import Proc, main_python
from localcluster.realnode import config, deploy, nodepki, processes
from localcluster.realnode.hostnet import HostNetwork
from localcluster.realnode.images import image_name, import_images, missing_images
from localcluster.realnode.layout import MULTUS_CONF, Layout
from localcluster.realnode.machine import kubelet_pids
from localcluster.realnode.runtime import Runtime
from localcluster.realnode.shutdown import Shutdown
from localcluster.realnode.tools import host_tool, missing_binaries
from localcluster.state import NodeSpec, Ports
from localcluster.supervisor import ProcStatus, Supervisor
from netshift.kube import ApiError, node_path


def missing_prerequisites() -> list[str]:
    """What a real node lacks on this machine, one sentence each (empty: all there)."""
    return [*missing_binaries(), *missing_images()]


class RealNode:
    """One real node of the local cluster, rooted at `root`."""

    kind = "real"

    def __init__(self, spec: NodeSpec, plane: Plane, ports: Ports, root: Path) -> None:
        self.spec = spec
        self.plane = plane
        self.ports = ports
        self.root = root
        self.layout = Layout(root)
        self.supervisor = Supervisor(
            self.layout.run_dir, self.layout.log_dir, plane.state_dir, processes.NAMES
        )
        self.runtime = Runtime(self.layout)
        # The bridge's address in each pod subnet (IPv4 first): the pods' gateways and the
        # Node's addresses.
        self.gateways = [config.gateway(s) for s in spec.pod_subnets]
        self.gateway = self.gateways[0]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pod_subnet(self) -> str:
        return self.spec.pod_subnet

    @property
    def bridge(self) -> str:
        return self.spec.bridge

    @property
    def node_ip(self) -> str:
        """The Node's InternalIP: the bridge's gateway address, a local address of this
        machine in the project's own subnet (the kubelet refuses a loopback node IP)."""
        return self.gateway

    @property
    def node_ips(self) -> list[str]:
        """The Node's addresses, one per IP family of the cluster (IPv4 first)."""
        return list(self.gateways)

    @property
    def endpoint(self) -> str:
        return self.layout.endpoint

    # -- where its networks live -------------------------------------------------

    @property
    def cni_conf_dir(self) -> Path:
        return self.layout.cni_conf

    @property
    def cluster_conflist(self) -> Path:
        return self.layout.cluster_conflist

    @property
    def ipam_dir(self) -> Path:
        return self.layout.ipam_dir

    def host_local_stores(self) -> list[Path]:
        """The cluster network's store and the default one that NADs without a dataDir use."""
        return [self.ipam_dir, Path("/var/lib/cni/networks")]

    @property
    def netns_dir(self) -> Path:
        return self.layout.netns_dir

    def netns_resolver_args(self) -> list[str]:
        return [f"--cri-socket={self.endpoint}"]

    def apiserver_ips(self) -> list[str]:
        return [self.gateway]

    # -- its files -----------------------------------------------------------------

    def containerd_config(self) -> str:
        return config.containerd_config(
            self.layout, runc=host_tool("runc"), pause_image=image_name("PAUSE_IMAGE")
        )

    def kubelet_config(self) -> dict[str, Any]:
        return config.kubelet_config(
            self.layout,
            node_ip=self.node_ip,
            port=self.ports("kubelet"),
            healthz_port=self.ports("kubelet-healthz"),
            client_ca=self.plane.ca_file,
        )

    def kube_proxy_config(self) -> dict[str, Any]:
        return config.kube_proxy_config(
            self.layout,
            name=self.name,
            node_ips=self.node_ips,
            healthz_port=self.ports("kube-proxy-healthz"),
            metrics_port=self.ports("kube-proxy-metrics"),
        )

    def cluster_network(self) -> dict[str, Any]:
        return config.cluster_network(
            bridge=self.bridge, subnets=self.spec.pod_subnets, data_dir=self.ipam_dir
        )

    def multus_daemon_config(self) -> dict[str, Any]:
        return config.multus_daemon_config(self.layout)

    def prepare(self) -> None:
        """Write every config, certificate and kubeconfig the node's processes read."""
        for d in self.layout.dirs():
            d.mkdir(parents=True, exist_ok=True)
        nodepki.ensure(self.layout, self.plane, name=self.name, node_ip=self.node_ip)
        lay = self.layout
        # Only when changed: kube-proxy exits when its config file is written.
        _write_if_changed(lay.containerd_dir / "config.toml", self.containerd_config())
        _write_if_changed(lay.kubelet_dir / "config.yaml", yaml.safe_dump(self.kubelet_config()))
        _write_if_changed(lay.proxy_dir / "config.yaml", yaml.safe_dump(self.kube_proxy_config()))
        _write_if_changed(lay.cluster_conflist, json.dumps(self.cluster_network(), indent=2))

    def multus_manifest(self) -> list[dict[str, Any]]:
        return deploy.multus_objects(self.layout, apiserver_port=self.plane.ports("apiserver"))

    def netshift_overlay(self) -> Path:
        """Write the kustomization on top of manifests/overlays/local; its directory."""
        files = deploy.netshift_overlay(
            self.layout,
            agent_args=[
                f"--health-bind-address={self.node_ip}",
                *self.netns_resolver_args(),
                f"--cluster-network-conf={self.cluster_conflist}",
                "--records-dir=/var/lib/netshift/records",
            ],
            apiserver_port=self.plane.ports("apiserver"),
            pod_apiserver_host=self.gateway,
        )
        return deploy.write_overlay(self.layout.manifests_dir / "netshift", files)

    def host_network(self) -> HostNetwork:
        return HostNetwork(
            bridge=self.bridge,
            pod_subnet=self.pod_subnet,
            gateway=self.gateway,
            apiserver_port=self.plane.ports("apiserver"),
            owner=str(self.plane.state_dir),
            netns_dir=self.netns_dir,
            other_subnets=tuple(self.spec.pod_subnets[1:]),
        )

    # -- processes -----------------------------------------------------------------

    def procs(self) -> list[Proc]:
        """containerd, the kubelet, kube-proxy: in the order they start."""
        return [
            processes.containerd(self.layout, ready=self.runtime.ready),
            processes.kubelet(
                self.layout,
                name=self.name,
                node_ips=self.node_ips,
                healthz_port=self.ports("kubelet-healthz"),
            ),
            processes.kube_proxy(self.layout, healthz_port=self.ports("kube-proxy-healthz")),
        ]

    def status(self) -> list[ProcStatus]:
        return self.supervisor.status()

    def pid(self, name: str) -> int | None:
        return self.supervisor.pid(name)

    # -- up --------------------------------------------------------------------------

    def up(self, services: Sequence[str] | None, say: Say, timeout: float = 180) -> None:
        if services is not None and not services:
            return  # the plane alone
        replaced = self.start(say)
        deadline = time.monotonic() + timeout
        self._wait(lambda: self._node() is not None, deadline, "the kubelet to register its Node")
        self.set_pod_cidrs()
        self.deploy(replaced, say, deadline)

    def start(self, say: Say) -> list[str]:
        """The node's own processes, each healthy, its images imported (returns the keys of
        images that replaced an older import: their pods need a restart)."""
        self._check_can_start()
        self.prepare()
        self.host_network().ensure()
        containerd, kubelet, proxy = self.procs()
        say(self.supervisor.start(containerd))
        self.supervisor.wait_healthy(containerd, timeout=60)
        replaced = import_images(self.runtime, self.layout.images_stamp, say)
        for proc in (kubelet, proxy):
            say(self.supervisor.start(proc))
        for proc in (kubelet, proxy):
            self.supervisor.wait_healthy(proc, timeout=60)
        return replaced

    def deploy(self, replaced: Sequence[str], say: Say, deadline: float) -> None:
        """Multus, then netshift, as pods; until the node is Ready and netshift's pods run.
        Multus's conf is the node's only CNI conf: no pod is wired before it is written."""
        multus_yaml = self.layout.manifests_dir / "multus.yaml"
        deploy.apply_multus(self.plane, self.multus_manifest(), multus_yaml)
        multus_conf = self.layout.cni_conf / MULTUS_CONF
        self._wait(multus_conf.exists, deadline, "Multus to write its config")
        self._wait(self.node_ready, deadline, f"Node {self.name} Ready")
        say(f"node {self.name}: Ready ({self.runtime_version()})")
        if "MULTUS_IMAGE" in replaced:
            deploy.restart_multus(self.plane)
        deploy.apply_netshift(self.plane, self.netshift_overlay())
        if "NETSHIFT_IMAGE" in replaced:
            say("netshift: new image, restarting its pods")
            deploy.restart_netshift(self.plane)
        deploy.wait_rollouts(self.plane, deadline)
        say("netshift: webhook, controller and agent pods ready")

    def _check_can_start(self) -> None:
        missing = missing_prerequisites()
        if missing:
            raise NodeError("the real node cannot start:\n  " + "\n  ".join(missing))
        others = [pid for pid in kubelet_pids() if pid != self.supervisor.pid("kubelet")]
        if others:
            # Two kubelets would share (and clean up) the same kubepods cgroups.
            raise NodeError(
                f"another kubelet runs on this machine (pid {others[0]}); one real node at a "
                "time: `netshift down` it, or use --node sim"
            )
        too_long = self.layout.too_long_socket()
        if too_long:
            raise NodeError(
                f"containerd's socket path {too_long} is longer than a unix socket's "
                f"({len(too_long)} > 107 bytes): use a shorter --state-dir"
            )

    def _wait(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        while not check():
            crashed = [n for n in processes.NAMES if not self.supervisor.running(n)]
            if crashed:
                raise NodeError(f"{', '.join(crashed)} exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise NodeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    # -- its Node object -----------------------------------------------------------

    def _node(self) -> dict[str, Any] | None:
        try:
            return self.plane.kube().get(node_path(self.name))
        except (ApiError, OSError):
            return None

    def set_pod_cidrs(self) -> None:
        """The Node's spec.podCIDRs: its pod subnets, one per IP family. The subnets are the
        node's own (its cluster network's ranges), not allocated by the controller-manager
        (no --allocate-node-cidrs); a Node's podCIDRs can be set once, when still empty."""
        node = self._node() or {}
        if not node.get("spec", {}).get("podCIDRs"):
            subnets = self.spec.pod_subnets
            self.plane.kube().patch_merge(
                f"/api/v1/nodes/{self.name}", {"spec": {"podCIDR": subnets[0], "podCIDRs": subnets}}
            )

    def node_ready(self) -> bool:
        node = self._node()
        if node is None:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def runtime_version(self) -> str:
        node = self._node() or {}
        return str(node.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion", "?"))

    # -- down ------------------------------------------------------------------------

    def shutdown(self) -> Shutdown:
        return Shutdown(
            self.layout,
            self.plane,
            self.supervisor,
            self.runtime,
            self.host_network(),
            agent_release=[
                *main_python(),
                "agent",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--node={self.name}",
                f"--records-dir={self.layout.agent_dir / 'records'}",
                f"--cluster-network-conf={self.cluster_conflist}",
                *self.netns_resolver_args(),
                "--release-all",
            ],
        )

    def down(self, say: Say) -> None:
        """Stop the node and release what its pods held (IPAM addresses, netns, mounts)."""
        self.shutdown().run(say)

    def apiserver_pod_connections(self, *, close: bool = False) -> list[str]:
        return self.shutdown().apiserver_pod_connections(close=close)


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
