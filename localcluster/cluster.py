"""The local cluster: a real etcd, kube-apiserver, controller-manager and scheduler on loopback.

`netshift up` starts it (plus netshift's own processes, see `localcluster.services`)
as detached processes whose pids, ports and logs live in a state directory, so
that a second `up` finds and reuses a running plane and `down` stops exactly
what was started. A process that died is reported with the tail of its log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from localcluster import binaries, services
from localcluster.procs import (
    Proc,
    clean_env,
    free_port,
    http_ok,
    indent,
    log_tail,
    pid_alive,
    write_kubeconfig,
)
from netshift import pki
from netshift.kube import ApiError, Kube
from netshift.records import RecordStore

MANIFESTS = binaries.REPO / "manifests"
SERVICE_CIDR = "10.0.0.0/24"


class ClusterError(RuntimeError):
    pass


def node_name() -> str:
    raw = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in raw).strip("-")
    return cleaned or "netshift-node"


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """The node's pod network, chosen when a state dir is first used (then kept in it)."""
    parser.add_argument("--pod-subnet", default=None, help="default 10.244.0.0/24")
    parser.add_argument("--bridge", default=None, help="default nsbr0")


class LocalCluster:
    """The processes and files of one local cluster, rooted at `state_dir`."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        pod_subnet: str | None = None,
        bridge: str | None = None,
        node: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.pki_dir = self.state_dir / "pki"
        self.run_dir = self.state_dir / "run"
        self.log_dir = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.state_file = self.state_dir / "cluster.json"
        self._state: dict[str, Any] = {}
        if self.state_file.exists():
            self._state = json.loads(self.state_file.read_text())
        # The node's pod network; a second cluster on the same machine needs its own.
        self.pod_subnet: str = self._state.setdefault("podSubnet", pod_subnet or "10.244.0.0/24")
        self.bridge: str = self._state.setdefault("bridge", bridge or "nsbr0")
        # "real": kubelet + containerd + Multus (localcluster.node); "sim": the node simulator.
        if node is not None and self._state.get("nodeMode", node) != node and self.status():
            raise ClusterError(
                f"{self.state_dir} runs a --node {self._state['nodeMode']} cluster; "
                "`netshift down` it first or use another --state-dir"
            )
        self.node_mode: str = node or self._state.get("nodeMode") or "sim"
        self._state["nodeMode"] = self.node_mode

    # -- state ---------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        ports: dict[str, int] = self._state.setdefault("ports", {})
        return ports

    def port(self, name: str) -> int:
        if name not in self.ports:
            self.ports[name] = free_port()
            self._save()
        return self.ports[name]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port('apiserver')}"

    @property
    def node(self) -> str:
        name: str = self._state.setdefault("node", node_name())
        return name

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(self._state, indent=2))

    def kube(self) -> Kube:
        return Kube.from_kubeconfig(str(self.kubeconfig))

    # -- certificates ----------------------------------------------------------

    def _ensure_pki(self) -> None:
        d = self.pki_dir
        if (d / "admin.crt").exists():
            return
        d.mkdir(parents=True, exist_ok=True)
        ca = pki.make_ca("netshift-local-ca")
        files: dict[str, bytes] = {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}
        serving = pki.issue(
            ca,
            "kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", "10.0.0.1"],
            server=True,
        )
        files["apiserver.crt"], files["apiserver.key"] = serving.cert_pem, serving.key_pem
        users = {
            "admin": ("netshift-admin", ["system:masters"]),
            "controller-manager": ("system:kube-controller-manager", []),
            "scheduler": ("system:kube-scheduler", []),
        }
        for short, (cn, orgs) in users.items():
            pair = pki.issue(ca, cn, organizations=orgs, client=True)
            files[f"{short}.crt"], files[f"{short}.key"] = pair.cert_pem, pair.key_pem
        sa_key = pki.new_key()
        files["sa.key"] = pki.KeyPair(ca.cert, sa_key).key_pem
        files["sa.pub"] = pki.public_key_pem(sa_key)
        for fname, data in files.items():
            (d / fname).write_bytes(data)
            (d / fname).chmod(0o600)

    def _write_kubeconfigs(self) -> None:
        d = self.pki_dir
        write_kubeconfig(
            self.kubeconfig, self.server, d / "ca.crt", d / "admin.crt", d / "admin.key", "admin"
        )
        for short in ("controller-manager", "scheduler"):
            write_kubeconfig(
                self.state_dir / f"{short}.kubeconfig",
                self.server,
                d / "ca.crt",
                d / f"{short}.crt",
                d / f"{short}.key",
                short,
            )

    # -- processes -------------------------------------------------------------

    def plane_procs(self) -> list[Proc]:
        d = self.pki_dir
        etcd_url = f"http://127.0.0.1:{self.port('etcd')}"
        peer_url = f"http://127.0.0.1:{self.port('etcd-peer')}"
        etcd = Proc(
            "etcd",
            [
                binaries.find("etcd"),
                "--name=netshift",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=netshift={peer_url}",
                "--unsafe-no-fsync=true",  # a throwaway local store; speed over durability
                "--log-level=warn",
            ],
            healthy=lambda: http_ok(f"{etcd_url}/health"),
        )
        apiserver = Proc(
            "kube-apiserver",
            [
                binaries.find("kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port('apiserver')}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={d / 'apiserver.crt'}",
                f"--tls-private-key-file={d / 'apiserver.key'}",
                f"--client-ca-file={d / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                # Node: kubelets may read only what their pods need (a real node's kubelet).
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
                # The node's InternalIP is 127.0.0.1; its Hostname would need /etc/hosts.
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
            healthy=self._apiserver_ready,
        )
        common = [
            "--authentication-kubeconfig={kc}",
            "--authorization-kubeconfig={kc}",
            "--kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--v=1",
        ]

        def component_args(short: str) -> list[str]:
            kc = str(self.state_dir / f"{short}.kubeconfig")
            return [a.replace("{kc}", kc) for a in common]

        kcm = Proc(
            "kube-controller-manager",
            [
                binaries.find("kube-controller-manager"),
                *component_args("controller-manager"),
                f"--secure-port={self.port('controller-manager')}",
                f"--cert-dir={self.state_dir / 'kcm-certs'}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={d / 'ca.crt'}",
                f"--cluster-signing-cert-file={d / 'ca.crt'}",
                f"--cluster-signing-key-file={d / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
            ],
            healthy=lambda: http_ok(f"https://127.0.0.1:{self.port('controller-manager')}/healthz"),
        )
        scheduler = Proc(
            "kube-scheduler",
            [
                binaries.find("kube-scheduler"),
                *component_args("scheduler"),
                f"--secure-port={self.port('scheduler')}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
            ],
            healthy=lambda: http_ok(f"https://127.0.0.1:{self.port('scheduler')}/healthz"),
        )
        return [etcd, apiserver, kcm, scheduler]

    def netshift_procs(self) -> list[Proc]:
        """netshift's own processes on the local cluster (see localcluster.services)."""
        return services.local_procs(self)

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            return int(self._pidfile(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and pid_alive(pid)

    def start(self, proc: Proc) -> str:
        """Start `proc` unless it already runs; say what happened."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{proc.name}.log"
        note = ""
        pid = self.pid(proc.name)
        if pid is not None:
            if pid_alive(pid):
                return f"{proc.name}: already running (pid {pid})"
            note = (
                f"{proc.name}: had died since it was started (pid {pid}); last log lines:\n"
                + indent(log_tail(log_path))
                + "\n"
            )
        with open(log_path, "ab") as logf:
            child = subprocess.Popen(
                proc.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=clean_env(proc.env),
                start_new_session=True,  # survives `netshift up`, stopped by `netshift down`
                cwd=self.state_dir,
            )
        self._pidfile(proc.name).write_text(f"{child.pid}\n")
        return note + f"{proc.name}: started (pid {child.pid})"

    def wait_healthy(self, proc: Proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid(proc.name)
            if pid is None or not pid_alive(pid):
                raise ClusterError(
                    f"{proc.name} exited during start-up; last log lines:\n"
                    + indent(log_tail(self.log_dir / f"{proc.name}.log"))
                )
            if proc.healthy is None or proc.healthy():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{proc.name} not healthy after {timeout:.0f}s; last log lines:\n"
                    + indent(log_tail(self.log_dir / f"{proc.name}.log"))
                )
            time.sleep(0.1)

    def _apiserver_ready(self) -> bool:
        try:
            self.kube().request("GET", "/readyz", timeout=2)
            return True
        except Exception:
            return False

    # -- up / down -------------------------------------------------------------

    def up(
        self,
        *,
        services: Sequence[str] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        """Start what is not running; `services` picks netshift's processes (None: all)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_pki()
        from localcluster import node as realnode

        realnode.ensure_plane_pki(self.pki_dir)
        if self.node_mode == "real":
            realnode.ensure_apiserver_ip(self.pki_dir, realnode.RealNode(self).gateway)
        self._write_kubeconfigs()
        self._save()
        plane = self.plane_procs()
        for proc in plane:
            say(self.start(proc))
            self.wait_healthy(proc, timeout=60)
        self.install_crds()
        if self.node_mode == "real":
            if services is None or services:
                realnode.RealNode(self).up(say)
            return
        self.ensure_node()
        self.ensure_namespace("netshift-system")
        chosen = [p for p in self.netshift_procs() if services is None or p.name in services]
        # One after the other: the agent reads the cluster network config the node
        # simulator writes, and the webhook must be up before it is registered.
        for proc in chosen:
            say(self.start(proc))
            self.wait_healthy(proc, timeout=60)
            if proc.after_healthy is not None:
                proc.after_healthy()

    def install_crds(self) -> None:
        # The NAD CRD is apart from manifests/ (netshift's uninstall never deletes it): a
        # real cluster has it from Multus; the local one installs it here.
        for crds in (MANIFESTS / "crds" / "nad", MANIFESTS / "crds"):
            self.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(crds))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/network-attachment-definitions.k8s.cni.cncf.io",
            "crd/networkprofiles.netshift.io",
        )

    def ensure_node(self) -> None:
        """Register the Node object for this machine (its status is kept by the node simulator)."""
        kube = self.kube()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "netshift.io/simulated": "true",
                },
            },
        }
        try:
            kube.create("/api/v1/nodes", node)
        except ApiError as err:
            if err.status != 409:
                raise

    def ensure_namespace(self, name: str) -> None:
        try:
            self.kube().create("/api/v1/namespaces", {"metadata": {"name": name}})
        except ApiError as err:
            if err.status != 409:
                raise

    def kubectl_command(self) -> list[str]:
        """The pinned kubectl pointed at this cluster, for a caller that runs it itself."""
        return [binaries.find("kubectl"), f"--kubeconfig={self.kubeconfig}"]

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.kubectl_command(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def status(self) -> list[tuple[str, int | None, bool]]:
        return [(n, self.pid(n), self.running(n)) for n in self._started_names()]

    def _started_names(self) -> list[str]:
        """Every process with a pid file, the plane first."""
        found = {p.stem for p in self.run_dir.glob("*.pid")} if self.run_dir.exists() else set()
        order = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        return [n for n in order + sorted(found - set(order)) if n in found]

    def crashed(self) -> list[str]:
        """Names of started processes that are no longer running."""
        return [n for n, pid, alive in self.status() if pid is not None and not alive]

    def stop_process(self, name: str, say: Callable[[str], None], timeout: float = 15) -> None:
        """SIGTERM the process group of `name`, SIGKILL it after `timeout`; forget its pid."""
        pid = self.pid(name)
        if pid is None:
            return
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                say(f"{name}: killed (pid {pid}) after {timeout:.0f}s")
            else:
                say(f"{name}: stopped (pid {pid})")
        else:
            say(f"{name}: was not running (pid {pid})")
        self._pidfile(name).unlink(missing_ok=True)

    def down(self, say: Callable[[str], None] = print, timeout: float = 15) -> None:
        if self.node_mode == "real":
            from localcluster.node import RealNode

            RealNode(self).down(say)
        # Stop netshift's processes first (they clean up against the apiserver), the plane last.
        for name in reversed(self._started_names()):
            if self.pid(name) is not None:
                self.stop_process(name, say, timeout)
        if self.node_mode == "sim":
            self._remove_node_network(say)

    def _remove_node_network(self, say: Callable[[str], None]) -> None:
        """Release what the node's pods hold: the agent's attachments (their IPAM addresses
        included), then the node simulator's sandboxes, then the cluster bridge."""
        pods_dir = self.state_dir / "node" / "pods"  # the node simulator's records
        sandboxes = len(RecordStore(pods_dir).pods()) if pods_dir.exists() else 0
        procs = {p.name: p for p in self.netshift_procs()}
        # The agent first: its DELs need the namespaces the simulator then removes.
        for name, records in (("agent", "agent/records"), ("nodesim", "node/pods")):
            proc = procs.get(name)
            if proc is not None and (self.state_dir / records).exists():
                done = subprocess.run(
                    [*proc.argv, "--release-all"],
                    capture_output=True,
                    text=True,
                    env=clean_env(),
                    cwd=self.state_dir,
                    timeout=300,
                )
                if done.returncode != 0:
                    say(
                        f"{proc.name}: could not release everything:\n{indent(done.stderr[-2000:])}"
                    )
        gone = subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        if sandboxes or gone.returncode == 0:
            say(f"node network: released {sandboxes} pod sandbox(es) and bridge {self.bridge}")
