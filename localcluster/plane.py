"""The control plane of the local cluster: etcd, kube-apiserver, controller-manager, scheduler.

All on 127.0.0.1, with certificates from `planepki`, RBAC and the Node authorizer on.
Its processes run under a `Supervisor` (pid files in `<state>/run/`, logs in
`<state>/logs/`). Every node is handed the plane: it reaches the apiserver, signs its
certificates with the plane's CA and keeps its ports through it; the plane knows
nothing of the nodes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from localcluster import binaries, planepki
from localcluster.errors import ClusterError
from localcluster.procs import Proc, clean_env, http_ok
from localcluster.state import IPV4, SERVICE_CIDRS, Ports
from localcluster.supervisor import ProcStatus, Supervisor
from netshift.kube import ApiError, Kube, namespace_path

MANIFESTS = binaries.REPO / "manifests"
PROCS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

Say = Callable[[str], None]


class Plane:
    """The plane's processes and files under `state_dir`, its ports kept in `ports`;
    `service_cidrs`: the Services' ranges, one per IP family of the cluster."""

    def __init__(
        self, state_dir: Path, ports: Ports, service_cidrs: Sequence[str] = SERVICE_CIDRS[IPV4]
    ) -> None:
        self.state_dir = state_dir
        self.ports = ports
        self.service_cidrs = list(service_cidrs)
        self.pki_dir = state_dir / "pki"
        self.kubeconfig = state_dir / "kubeconfig"
        self.supervisor = Supervisor(state_dir / "run", state_dir / "logs", state_dir, PROCS)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports('apiserver')}"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    def kube(self) -> Kube:
        return Kube.from_kubeconfig(str(self.kubeconfig))

    # -- up / down -------------------------------------------------------------

    def up(self, say: Say, serving_ips: Sequence[str] = ()) -> None:
        """Start what is not running, each healthy before the next; then netshift's CRDs.
        `serving_ips`: addresses (besides loopback) at which pods reach the apiserver."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        planepki.ensure(self.pki_dir, serving_ips)
        planepki.write_kubeconfigs(self.pki_dir, self.state_dir, self.server)
        self.supervisor.start_all(self.procs(), say)
        self.install_crds()

    def down(self, say: Say, timeout: float = 15) -> None:
        """Stop the plane, the apiserver after the controllers and etcd last."""
        self.supervisor.stop_all(say, timeout)

    def status(self) -> list[ProcStatus]:
        return self.supervisor.status()

    def running(self, name: str) -> bool:
        return self.supervisor.running(name)

    # -- processes -------------------------------------------------------------

    def procs(self) -> list[Proc]:
        return [self._etcd(), self._apiserver(), self._controller_manager(), self._scheduler()]

    def _etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports('etcd')}"

    def _etcd(self) -> Proc:
        url, peer_url = self._etcd_url(), f"http://127.0.0.1:{self.ports('etcd-peer')}"
        return Proc(
            "etcd",
            [
                binaries.find("etcd"),
                "--name=netshift",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=netshift={peer_url}",
                "--unsafe-no-fsync=true",  # a throwaway local store; speed over durability
                "--log-level=warn",
            ],
            healthy=lambda: http_ok(f"{url}/health"),
        )

    def _apiserver(self) -> Proc:
        d = self.pki_dir
        return Proc(
            "kube-apiserver",
            [
                binaries.find("kube-apiserver"),
                f"--etcd-servers={self._etcd_url()}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports('apiserver')}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={d / 'apiserver.crt'}",
                f"--tls-private-key-file={d / 'apiserver.key'}",
                f"--client-ca-file={d / 'ca.crt'}",
                f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                # Node: kubelets may read only what their pods need (a real node's kubelet).
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
                # A real node's InternalIP is its bridge's gateway; its Hostname would need
                # /etc/hosts.
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
            healthy=self._apiserver_ready,
        )

    def _component_args(self, short: str) -> list[str]:
        """The flags the controller-manager and the scheduler share."""
        kc = self.state_dir / f"{short}.kubeconfig"
        return [
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--v=1",
        ]

    def _controller_manager(self) -> Proc:
        d, port = self.pki_dir, self.ports("controller-manager")
        return Proc(
            "kube-controller-manager",
            [
                binaries.find("kube-controller-manager"),
                *self._component_args("controller-manager"),
                f"--secure-port={port}",
                f"--cert-dir={self.state_dir / 'kcm-certs'}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={d / 'ca.crt'}",
                f"--cluster-signing-cert-file={d / 'ca.crt'}",
                f"--cluster-signing-key-file={d / 'ca.key'}",
                f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
                "--controllers=*",
            ],
            healthy=lambda: http_ok(f"https://127.0.0.1:{port}/healthz"),
        )

    def _scheduler(self) -> Proc:
        port = self.ports("scheduler")
        return Proc(
            "kube-scheduler",
            [
                binaries.find("kube-scheduler"),
                *self._component_args("scheduler"),
                f"--secure-port={port}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
            ],
            healthy=lambda: http_ok(f"https://127.0.0.1:{port}/healthz"),
        )

    def _apiserver_ready(self) -> bool:
        try:
            self.kube().request("GET", "/readyz", timeout=2)
            return True
        except Exception:
            return False

    # -- what is in the cluster ------------------------------------------------

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

    def ensure_namespace(self, name: str) -> None:
        try:
            self.kube().create(namespace_path(), {"metadata": {"name": name}})
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
