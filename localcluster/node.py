"""A real node for the local cluster: containerd + runc, a kubelet, kube-proxy and Multus thick.

`RealNode` is what `netshift up --node real` (the default) brings up next to the
plane. Its processes are started like the plane's (pid files in run/, logs in
logs/, reused while they run); everything they write lives under
``<state dir>/realnode/`` where the software lets us choose:

    realnode/containerd/   config.toml, containerd.sock, root/, state/
    realnode/kubelet/      config.yaml, kubeconfig, pki/, root/ (its --root-dir)
    realnode/kube-proxy/   config.yaml, kubeconfig
    realnode/cni/bin/      multus-shim (installed by Multus's init container)
    realnode/cni/net.d/    containerd's CNI conf dir: only Multus's 00-multus.conf
    realnode/cni/cluster.d/ Multus's confDir: the cluster network conflist (its default
                           delegate) and the conf files of networks defined per node
                           (NADs without spec.config); the agent reads it too
    realnode/cni/networks/ host-local store of the cluster network
    realnode/multus/       the Multus daemon's socket and cache
    realnode/agent/        netshift agent's attachment records (a hostPath of its DaemonSet)
    realnode/manifests/    the generated Multus manifest and the netshift kustomize overlay

Pod network namespaces stay where containerd puts them (/var/run/netns/cni-*),
and the kubelet's cgroups where it puts them (kubepods/): only one real node
runs on a machine at a time; a second plane (e.g. a test session) uses the
node simulator or waits.

Multus runs as users run it: a DaemonSet in kube-system, from an image built here
out of the pinned multus-daemon and multus-shim (plus busybox for its init
container). netshift runs as pods from its own image, installed with
``kubectl apply -k`` of manifests/overlays/local plus a generated overlay that
holds what depends on this state dir (paths, apiserver port).

The pods reach the apiserver, which listens on 127.0.0.1 only, through the
bridge's gateway address: one DNAT rule for that address and port on this
bridge, and ``route_localnet`` on this bridge alone. Host-network pods (the
agent, Multus) use 127.0.0.1 directly. Nothing is masqueraded.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from localcluster import binaries
from localcluster.topology import bridge_mac
from netshift import pki

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster
    from localcluster.procs import Proc

CLUSTER_NETWORK = "netshift-cluster"
CLUSTER_CONFLIST = "10-netshift-cluster.conflist"
MULTUS_CONF = "00-multus.conf"
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
DEFAULT_IMAGES = {
    "PAUSE_IMAGE": "netshift.local/pause:3.10",
    "BUSYBOX_IMAGE": "netshift.local/busybox:1.35",
    "NETSHIFT_IMAGE": "netshift.local/netshift:dev",
    "MULTUS_IMAGE": "netshift.local/multus:v4.2.3",
}
IMAGES = tuple(DEFAULT_IMAGES)
# Where scripts/build-images.sh puts the Multus binaries in its image.
MULTUS_BIN = "/usr/src/multus-cni/bin"
MODES = ("real", "sim")


class NodeError(RuntimeError):
    pass


# -- where things come from ------------------------------------------------------


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


def missing_prerequisites() -> list[str]:
    """What a real node lacks on this machine, one sentence each (empty: all there)."""
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
    for key in IMAGES:
        if image_tar(key) is None:
            missing.append(
                f"no image archive for {image_name(key)} in {images_dir()}; "
                "run scripts/build-images.sh"
            )
    return missing


def image_name(key: str) -> str:
    """An image reference pinned in versions.env (PAUSE_IMAGE, BUSYBOX_IMAGE, NETSHIFT_IMAGE)."""
    return binaries.pinned_versions().get(key, DEFAULT_IMAGES[key])


def images_dir() -> Path:
    return binaries.cache_dir() / "images"


def image_tar(key: str) -> Path | None:
    """The OCI archive scripts/build-images.sh last built for this checkout (build/images.env),
    else the newest it wrote for one image (``<name>-<key over its inputs>.tar``)."""
    short = image_name(key).rsplit("/", 1)[-1].split(":", 1)[0]
    with contextlib.suppress(OSError):
        for line in (binaries.REPO / "build" / "images.env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name == f"{short.upper()}_TAR" and Path(value).is_file():
                return Path(value)
    found = [p for p in images_dir().glob(f"{short}-*.tar") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# -- the node ---------------------------------------------------------------------


def stored_mode(state_dir: str | Path) -> str | None:
    """The node mode a state dir was first brought up with, if any."""
    try:
        data = json.loads((Path(state_dir) / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    mode = data.get("nodeMode") if isinstance(data, dict) else None
    return mode if isinstance(mode, str) else None


def ensure_plane_pki(pki_dir: Path) -> None:
    """Certificates the plane needs for a real node, added to an existing pki/ when missing:
    the apiserver's client certificate for the kubelets (exec, logs, port-forward)."""
    if (pki_dir / "apiserver-kubelet-client.crt").exists():
        return
    ca = pki.KeyPair.from_pem((pki_dir / "ca.crt").read_bytes(), (pki_dir / "ca.key").read_bytes())
    pair = pki.issue(
        ca, "kube-apiserver-kubelet-client", organizations=["system:masters"], client=True
    )
    _write_pair(pki_dir, "apiserver-kubelet-client", pair)


def ensure_apiserver_ip(pki_dir: Path, ip: str) -> None:
    """Reissue the apiserver's serving certificate if it lacks `ip` (pods reach it there).
    The apiserver reloads its serving certificate from the file while it runs."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((pki_dir / "apiserver.crt").read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    if ip in ips:
        return
    ca = pki.KeyPair.from_pem((pki_dir / "ca.crt").read_bytes(), (pki_dir / "ca.key").read_bytes())
    pair = pki.issue(
        ca,
        "kube-apiserver",
        dns_names=san.get_values_for_type(x509.DNSName),
        ip_addresses=[*ips, ip],
        server=True,
    )
    _write_pair(pki_dir, "apiserver", pair)


def _base_args(manifest: str, container: str) -> list[str]:
    """The args of one container in manifests/ (what an overlay's patch must keep)."""
    doc = yaml.safe_load((binaries.REPO / "manifests" / manifest).read_text())
    for c in doc["spec"]["template"]["spec"]["containers"]:
        if c["name"] == container:
            return [str(a) for a in c.get("args", [])]
    return []


def _write_pair(directory: Path, stem: str, pair: pki.KeyPair) -> None:
    for suffix, data in ((".key", pair.key_pem), (".crt", pair.cert_pem)):
        tmp = directory / f".{stem}{suffix}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(directory / f"{stem}{suffix}")


class RealNode:
    """containerd, kubelet, kube-proxy and Multus for one LocalCluster, plus netshift as pods."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.root = cluster.state_dir / "realnode"
        self.containerd_dir = self.root / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.kubelet_dir = self.root / "kubelet"
        self.proxy_dir = self.root / "kube-proxy"
        self.cni_bin = self.root / "cni" / "bin"
        self.cni_conf = self.root / "cni" / "net.d"
        self.cluster_conf_dir = self.root / "cni" / "cluster.d"
        self.ipam_dir = self.root / "cni" / "networks"
        self.multus_dir = self.root / "multus"
        self.agent_dir = self.root / "agent"
        self.manifests_dir = self.root / "manifests"
        net = ipaddress.ip_network(cluster.pod_subnet)
        self.gateway = str(next(net.hosts()))

    @property
    def name(self) -> str:
        return self.cluster.node

    @property
    def node_ip(self) -> str:
        """The Node's InternalIP: the bridge's gateway address, a local address of this
        machine in the project's own subnet (the kubelet refuses a loopback node IP)."""
        return self.gateway

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def cluster_conflist(self) -> Path:
        return self.cluster_conf_dir / CLUSTER_CONFLIST

    # -- files ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Write every config, certificate and kubeconfig the node's processes read."""
        for d in (
            self.containerd_dir,
            self.kubelet_dir / "root",
            self.proxy_dir,
            self.cni_bin,
            self.cni_conf,
            self.cluster_conf_dir,
            self.ipam_dir,
            self.multus_dir / "run",
            self.multus_dir / "cache",
            self.agent_dir,
            self.manifests_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        self._node_pki()
        # Only when changed: kube-proxy exits when its config file is written.
        _write_if_changed(self.containerd_dir / "config.toml", self.containerd_config())
        _write_if_changed(self.kubelet_dir / "config.yaml", yaml.safe_dump(self.kubelet_config()))
        _write_if_changed(self.proxy_dir / "config.yaml", yaml.safe_dump(self.kube_proxy_config()))
        _write_if_changed(self.cluster_conflist, json.dumps(self.cluster_network(), indent=2))

    def _node_pki(self) -> None:
        from localcluster.procs import write_kubeconfig

        c = self.cluster
        ca = pki.KeyPair.from_pem(
            (c.pki_dir / "ca.crt").read_bytes(), (c.pki_dir / "ca.key").read_bytes()
        )
        kpki = self.kubelet_dir / "pki"
        kpki.mkdir(parents=True, exist_ok=True)
        wanted: dict[str, Callable[[], pki.KeyPair]] = {
            # The Node authorizer knows a kubelet by this name and group.
            "kubelet-client": lambda: pki.issue(
                ca, f"system:node:{self.name}", organizations=["system:nodes"], client=True
            ),
            "kubelet-serving": lambda: pki.issue(
                ca,
                self.name,
                dns_names=[self.name],
                ip_addresses=[self.gateway, "127.0.0.1"],
                server=True,
            ),
            # Bound to system:node-proxier by the apiserver's default policy.
            "kube-proxy": lambda: pki.issue(ca, "system:kube-proxy", client=True),
        }
        for stem, make in wanted.items():
            if not (kpki / f"{stem}.crt").exists():
                _write_pair(kpki, stem, make())
        write_kubeconfig(
            self.kubelet_dir / "kubeconfig",
            c.server,
            c.pki_dir / "ca.crt",
            kpki / "kubelet-client.crt",
            kpki / "kubelet-client.key",
            f"system:node:{self.name}",
        )
        write_kubeconfig(
            self.proxy_dir / "kubeconfig",
            c.server,
            c.pki_dir / "ca.crt",
            kpki / "kube-proxy.crt",
            kpki / "kube-proxy.key",
            "system:kube-proxy",
        )

    def containerd_config(self) -> str:
        """containerd v2 configuration (version 3): CRI with runc, overlayfs, our CNI dirs."""
        d = self.containerd_dir
        runc = host_tool("runc")
        lines = [
            "version = 3",
            f"root = {_toml(d / 'root')}",
            f"state = {_toml(d / 'state')}",
            "imports = []",  # nothing from /etc/containerd
            "",
            "[grpc]",
            f"  address = {_toml(self.socket)}",
            "[ttrpc]",
            f"  address = {_toml(str(self.socket) + '.ttrpc')}",
            "",
            "[plugins.'io.containerd.internal.v1.opt']",
            f"  path = {_toml(d / 'opt')}",
            "[plugins.'io.containerd.image-verifier.v1.bindir']",
            f"  bin_dir = {_toml(d / 'image-verifier')}",
            # NRI would open a socket under /var/run/nri for the whole machine.
            "[plugins.'io.containerd.nri.v1.nri']",
            "  disable = true",
            "",
            "[plugins.'io.containerd.cri.v1.images']",
            "  snapshotter = 'overlayfs'",
            "  [plugins.'io.containerd.cri.v1.images'.pinned_images]",
            f"    sandbox = {_toml(image_name('PAUSE_IMAGE'))}",
            "",
            "[plugins.'io.containerd.cri.v1.runtime']",
            # Root in this VM lacks CAP_SYS_RESOURCE: a negative oom_score_adj is EPERM,
            # and every sandbox would fail in runc without this.
            "  restrict_oom_score_adj = true",
            "  enable_selinux = false",
            "  [plugins.'io.containerd.cri.v1.runtime'.containerd]",
            "    default_runtime_name = 'runc'",
            "    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]",
            "      runtime_type = 'io.containerd.runc.v2'",
            "      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]",
            f"        BinaryName = {_toml(runc)}",
            "        SystemdCgroup = false",
            "  [plugins.'io.containerd.cri.v1.runtime'.cni]",
            f"    bin_dirs = [{_toml(self.cni_bin)}, '/usr/lib/cni']",
            f"    conf_dir = {_toml(self.cni_conf)}",
            "    max_conf_num = 1",
            "",
            "[plugins.'io.containerd.grpc.v1.cri']",
            "  disable_tcp_service = true",
            "  stream_server_address = '127.0.0.1'",
            "  stream_server_port = '0'",
            "",
        ]
        return "\n".join(lines)

    def kubelet_config(self) -> dict[str, Any]:
        kpki = self.kubelet_dir / "pki"
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The node's address (see node_ip): the apiserver dials it for exec and logs.
            "address": self.node_ip,
            "port": self.cluster.port("kubelet"),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.cluster.port("kubelet-healthz"),
            "tlsCertFile": str(kpki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(kpki / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cluster.pki_dir / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            # This machine kind has a cgroup v1 (hybrid) hierarchy.
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": self.endpoint,
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "registerNode": True,
            "serializeImagePulls": False,
            # A development machine's disk may be fuller than a node's would be.
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
            "shutdownGracePeriod": "0s",
        }

    def kube_proxy_config(self) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.proxy_dir / "kubeconfig")},
            "mode": "iptables",
            "hostnameOverride": self.name,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{self.cluster.port('kube-proxy-healthz')}",
            "metricsBindAddress": f"127.0.0.1:{self.cluster.port('kube-proxy-metrics')}",
            # No cluster CIDR: nothing is masqueraded for coming from "outside" it.
            "clusterCIDR": "",
            "iptables": {
                "masqueradeAll": False,
                # Else kube-proxy sets route_localnet for every interface of the machine.
                "localhostNodePorts": False,
                "syncPeriod": "30s",
                "minSyncPeriod": "0s",
            },
            # NodePorts on the node's own address on the bridge only.
            "nodePortAddresses": [f"{self.node_ip}/32"],
            # 0: leave the machine's conntrack sysctls as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }

    def cluster_network(self) -> dict[str, Any]:
        """The cluster network (Multus's default delegate): bridge + host-local, no masquerading."""
        return {
            "cniVersion": "1.0.0",
            "name": CLUSTER_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.cluster.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.cluster.pod_subnet, "gateway": self.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.ipam_dir),
                    },
                }
            ],
        }

    def multus_daemon_config(self) -> dict[str, Any]:
        run = str(self.multus_dir / "run")
        return {
            # Delegates run in Multus's container (no chrootDir: this machine's root mount
            # is private, so the host's root cannot be mounted HostToContainer); every
            # path they use is mounted at the same path (see multus_manifest).
            "cniVersion": "1.0.0",
            "logLevel": "verbose",
            "logToStderr": True,
            "cniConfigDir": str(self.cni_conf),
            "multusAutoconfigDir": str(self.cluster_conf_dir),
            "multusConfigFile": "auto",
            "socketDir": run,
            "daemonSocketDir": run,
            # The cluster network by name, loaded from confDir: in auto mode Multus
            # otherwise passes a lossy copy of it on DEL and eth0's address leaks.
            "clusterNetwork": CLUSTER_NETWORK,
            "confDir": str(self.cluster_conf_dir),
            "binDir": "/usr/lib/cni",
            "cniDir": str(self.multus_dir / "cache"),
        }

    # -- processes -----------------------------------------------------------------

    def procs(self) -> list[Proc]:
        from localcluster.procs import Proc, http_ok

        bindir = str(node_bin_dir())
        # containerd finds containerd-shim-runc-v2 on PATH; kube-proxy wants iptables, conntrack.
        env = {"PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        containerd = Proc(
            "containerd",
            [
                find_node_binary("containerd"),
                f"--config={self.containerd_dir / 'config.toml'}",
                "--log-level=warn",
            ],
            env=env,
            healthy=self._containerd_ready,
        )
        kubelet = Proc(
            "kubelet",
            [
                find_node_binary("kubelet"),
                f"--config={self.kubelet_dir / 'config.yaml'}",
                f"--kubeconfig={self.kubelet_dir / 'kubeconfig'}",
                f"--root-dir={self.kubelet_dir / 'root'}",
                f"--cert-dir={self.kubelet_dir / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                "--v=1",
            ],
            env=env,
            healthy=lambda: http_ok(
                f"http://127.0.0.1:{self.cluster.port('kubelet-healthz')}/healthz"
            ),
        )
        proxy = Proc(
            "kube-proxy",
            [
                find_node_binary("kube-proxy"),
                f"--config={self.proxy_dir / 'config.yaml'}",
                "--v=1",
            ],
            env=env,
            healthy=lambda: http_ok(
                f"http://127.0.0.1:{self.cluster.port('kube-proxy-healthz')}/livez"
            ),
        )
        return [containerd, kubelet, proxy]

    def _containerd_ready(self) -> bool:
        done = self.ctr("version", check=False, timeout=5)
        return done.returncode == 0

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run(
            [find_node_binary("ctr"), f"--address={self.socket}", "--namespace=k8s.io", *args],
            check=check,
            timeout=timeout,
        )

    def crictl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._run(
            [find_node_binary("crictl"), f"--runtime-endpoint={self.endpoint}", *args],
            check=check,
            timeout=timeout,
        )

    @staticmethod
    def _run(
        argv: Sequence[str], *, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        from localcluster.procs import clean_env

        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, env=clean_env(), timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            if check:
                raise NodeError(f"{' '.join(argv[:3])} timed out after {timeout:.0f}s") from err
            return subprocess.CompletedProcess(list(argv), 124, "", "timed out")
        if check and done.returncode != 0:
            raise NodeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-1500:]}")
        return done

    # -- up --------------------------------------------------------------------------

    def up(self, say: Callable[[str], None] = print, timeout: float = 180) -> None:
        missing = missing_prerequisites()
        if missing:
            raise NodeError("the real node cannot start:\n  " + "\n  ".join(missing))
        others = [pid for pid in kubelet_pids() if pid != self.cluster.pid("kubelet")]
        if others:
            # Two kubelets would share (and clean up) the same kubepods cgroups.
            raise NodeError(
                f"another kubelet runs on this machine (pid {others[0]}); one real node at a "
                "time: `netshift down` it, or use --node sim"
            )
        self.prepare()
        self._host_network()
        c = self.cluster
        procs = self.procs()
        containerd, kubelet, proxy = procs
        say(c.start(containerd))
        c.wait_healthy(containerd, timeout=60)
        replaced = self.import_images(say)
        for proc in (kubelet, proxy):
            say(c.start(proc))
        for proc in (kubelet, proxy):
            c.wait_healthy(proc, timeout=60)
        deadline = time.monotonic() + timeout
        self._wait(lambda: self._node() is not None, deadline, "the kubelet to register its Node")
        self.apply_multus()
        self._wait(
            lambda: (self.cni_conf / MULTUS_CONF).exists(), deadline, "Multus to write its config"
        )
        self._wait(self.node_ready, deadline, f"Node {self.name} Ready")
        say(f"node {self.name}: Ready ({self.runtime_version()})")
        if "MULTUS_IMAGE" in replaced:
            self.cluster.kubectl("-n", "kube-system", "rollout", "restart", "daemonset/multus")
        self.apply_netshift()
        if "NETSHIFT_IMAGE" in replaced:
            # A rebuilt image under the same name: running pods keep the old one until restarted.
            say("netshift: new image, restarting its pods")
            self.cluster.kubectl(
                "-n",
                "netshift-system",
                "rollout",
                "restart",
                "daemonset/netshift-agent",
                "deployment/netshift-webhook",
                "deployment/netshift-controller",
            )
        self._wait_rollouts(deadline)
        say("netshift: webhook, controller and agent pods ready")

    def _wait(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        while not check():
            crashed = [
                n for n in ("containerd", "kubelet", "kube-proxy") if not self.cluster.running(n)
            ]
            if crashed:
                raise NodeError(f"{', '.join(crashed)} exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise NodeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def _host_network(self) -> None:
        """The bridge, made before the first pod so that its settings are ours: the pods'
        path to the apiserver (DNAT of the gateway's apiserver port to 127.0.0.1, allowed by
        route_localnet on this bridge only)."""
        bridge = self.cluster.bridge
        if subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        # An address of its own: else the gateway's MAC follows the bridge's lowest port
        # and every pod's cached one goes stale when a pod comes or goes.
        subprocess.run(["ip", "link", "set", bridge, "address", bridge_mac(bridge)], check=True)
        prefix = ipaddress.ip_network(self.cluster.pod_subnet).prefixlen
        subprocess.run(
            ["ip", "addr", "replace", f"{self.gateway}/{prefix}", "dev", bridge], check=True
        )
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1\n")
        _shared_netns_dir()
        rule = self._dnat_rule()
        iptables = host_tool("iptables")
        if subprocess.run([iptables, "-t", "nat", "-C", *rule], capture_output=True).returncode:
            subprocess.run([iptables, "-t", "nat", "-A", *rule], check=True)

    def _dnat_rule(self) -> list[str]:
        port = str(self.cluster.port("apiserver"))
        return [
            "PREROUTING",
            "-i",
            self.cluster.bridge,
            "-d",
            self.gateway,
            "-p",
            "tcp",
            "--dport",
            port,
            "-m",
            "comment",
            "--comment",
            f"netshift: pods to the local apiserver ({self.cluster.state_dir})",
            "-j",
            "DNAT",
            "--to-destination",
            f"127.0.0.1:{port}",
        ]

    # -- images ------------------------------------------------------------------------

    def import_images(self, say: Callable[[str], None] = print) -> list[str]:
        """Import the OCI archives into containerd's k8s.io namespace (only new or changed
        ones); return the keys of images that replaced an older import of the same name."""
        stamp_file = self.root / "images.json"
        try:
            stamps: dict[str, list[Any]] = json.loads(stamp_file.read_text())
        except (OSError, ValueError):
            stamps = {}
        present = set(self.ctr("images", "ls", "-q").stdout.split())
        replaced = []
        for key in IMAGES:
            tar = image_tar(key)
            if tar is None:
                raise NodeError(
                    f"no image archive for {image_name(key)}; run scripts/build-images.sh"
                )
            st = tar.stat()
            stamp = [str(tar), st.st_size, st.st_mtime]
            if stamps.get(key) == stamp and image_name(key) in present:
                continue
            started = time.monotonic()
            self.ctr("images", "import", "--snapshotter=overlayfs", str(tar), timeout=300)
            if key in stamps:
                replaced.append(key)
            stamps[key] = stamp
            stamp_file.write_text(json.dumps(stamps))
            say(f"image {tar.name}: imported in {time.monotonic() - started:.1f}s")
        return replaced

    # -- Multus and netshift -------------------------------------------------------

    def multus_manifest(self) -> list[dict[str, Any]]:
        ns = "kube-system"
        labels = {"app.kubernetes.io/name": "multus"}
        # Host paths mounted at the same path: the node's files, the CNI plugins (Debian's,
        # linked against the image's glibc), the default host-local store of NADs.
        same = [
            ("node-root", str(self.root), "DirectoryOrCreate"),
            ("cni-plugins", "/usr/lib/cni", "Directory"),
            ("cni-state", "/var/lib/cni", "DirectoryOrCreate"),
        ]
        shim_tmp = f"{self.cni_bin}/.multus-shim.new"
        return [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "multus", "namespace": ns},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "multus"},
                "rules": [
                    {
                        "apiGroups": ["k8s.cni.cncf.io"],
                        "resources": ["network-attachment-definitions"],
                        "verbs": ["get", "list", "watch"],
                    },
                    {
                        "apiGroups": [""],
                        "resources": ["pods", "pods/status"],
                        "verbs": ["get", "list", "watch", "update", "patch"],
                    },
                    {
                        "apiGroups": ["", "events.k8s.io"],
                        "resources": ["events"],
                        "verbs": ["create", "patch", "update"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "multus"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "multus",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "multus", "namespace": ns}],
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "multus-daemon-config", "namespace": ns},
                "data": {"daemon-config.json": json.dumps(self.multus_daemon_config(), indent=2)},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "multus", "namespace": ns, "labels": labels},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "serviceAccountName": "multus",
                            "hostNetwork": True,
                            "hostPID": True,
                            "priorityClassName": "system-node-critical",
                            "tolerations": [{"operator": "Exists"}],
                            "terminationGracePeriodSeconds": 10,
                            "initContainers": [
                                {
                                    "name": "install-shim",
                                    "image": image_name("MULTUS_IMAGE"),
                                    "imagePullPolicy": "Never",
                                    "command": [
                                        "/bin/sh",
                                        "-c",
                                        f"cp {MULTUS_BIN}/multus-shim {shim_tmp} && "
                                        f"mv {shim_tmp} {self.cni_bin}/multus-shim",
                                    ],
                                    "securityContext": {"privileged": True},
                                    "volumeMounts": [
                                        {"name": n, "mountPath": p} for n, p, _ in same
                                    ],
                                }
                            ],
                            "containers": [
                                {
                                    "name": "multus",
                                    "image": image_name("MULTUS_IMAGE"),
                                    "imagePullPolicy": "Never",
                                    "command": [
                                        f"{MULTUS_BIN}/multus-daemon",
                                        "-config=/etc/multus/daemon-config.json",
                                    ],
                                    "env": [
                                        {
                                            "name": "MULTUS_NODE_NAME",
                                            "valueFrom": {
                                                "fieldRef": {"fieldPath": "spec.nodeName"}
                                            },
                                        },
                                        *self._host_apiserver_env(),
                                    ],
                                    "securityContext": {"privileged": True},
                                    "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}},
                                    "volumeMounts": [
                                        *({"name": n, "mountPath": p} for n, p, _ in same),
                                        {
                                            "name": "netns",
                                            "mountPath": "/run/netns",
                                            "mountPropagation": "HostToContainer",
                                        },
                                        {
                                            "name": "config",
                                            "mountPath": "/etc/multus",
                                            "readOnly": True,
                                        },
                                    ],
                                }
                            ],
                            "volumes": [
                                *(
                                    {"name": n, "hostPath": {"path": p, "type": t}}
                                    for n, p, t in same
                                ),
                                {
                                    "name": "netns",
                                    "hostPath": {"path": "/run/netns", "type": "DirectoryOrCreate"},
                                },
                                {"name": "config", "configMap": {"name": "multus-daemon-config"}},
                            ],
                        },
                    },
                },
            },
        ]

    def _host_apiserver_env(self) -> list[dict[str, str]]:
        """In-cluster clients on the host network: the apiserver on loopback."""
        return [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.cluster.port("apiserver"))},
        ]

    def _pod_apiserver_env(self) -> list[dict[str, str]]:
        """In-cluster clients on the pod network: the apiserver through the bridge's gateway."""
        return [
            {"name": "KUBERNETES_SERVICE_HOST", "value": self.gateway},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.cluster.port("apiserver"))},
        ]

    def apply_multus(self) -> None:
        path = self.manifests_dir / "multus.yaml"
        path.write_text(yaml.safe_dump_all(self.multus_manifest(), sort_keys=False))
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))

    def netshift_overlay(self) -> Path:
        """A kustomization on top of manifests/overlays/local with this state dir's settings."""
        out = self.manifests_dir / "netshift"
        out.mkdir(parents=True, exist_ok=True)
        base = binaries.REPO / "manifests" / "overlays" / "local"
        ref = image_name("NETSHIFT_IMAGE")
        image, _, tag = ref.rpartition(":")
        agent_patch = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "netshift-agent", "namespace": "netshift-system"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "agent",
                                # Strategic merge replaces a list of strings: keep the base's.
                                "args": [
                                    *_base_args("agent/daemonset.yaml", "agent"),
                                    f"--health-bind-address={self.node_ip}",
                                    f"--cri-socket={self.endpoint}",
                                    f"--cluster-network-conf={self.cluster_conflist}",
                                    "--records-dir=/var/lib/netshift/records",
                                ],
                                "env": self._host_apiserver_env(),
                                "volumeMounts": [
                                    {"name": "node-root", "mountPath": str(self.root)},
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "state",
                                "hostPath": {
                                    "path": str(self.agent_dir),
                                    "type": "DirectoryOrCreate",
                                },
                            },
                            {
                                "name": "node-root",
                                "hostPath": {"path": str(self.root), "type": "Directory"},
                            },
                            # Multus's confDir here: the agent reads it where the
                            # DaemonSet mounts a node's (a NAD without spec.config).
                            {
                                "name": "multus-conf",
                                "hostPath": {
                                    "path": str(self.cluster_conf_dir),
                                    "type": "Directory",
                                },
                            },
                        ],
                    }
                }
            },
        }

        def env_patch(kind: str, name: str, container: str) -> dict[str, Any]:
            return {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": "netshift-system"},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": container, "env": self._pod_apiserver_env()}]
                        }
                    }
                },
            }

        patches = {
            "agent.yaml": agent_patch,
            "webhook.yaml": env_patch("Deployment", "netshift-webhook", "webhook"),
            "controller.yaml": env_patch("Deployment", "netshift-controller", "controller"),
        }
        for fname, patch in patches.items():
            (out / fname).write_text(yaml.safe_dump(patch, sort_keys=False))
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(base, out)],
            "images": [{"name": "netshift", "newName": image, "newTag": tag}],
            "patches": [{"path": fname} for fname in patches],
        }
        (out / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        return out

    def apply_netshift(self) -> None:
        overlay = self.netshift_overlay()
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(overlay))

    def _wait_rollouts(self, deadline: float) -> None:
        for obj in (
            "daemonset/netshift-agent",
            "deployment/netshift-webhook",
            "deployment/netshift-controller",
        ):
            left = max(5, int(deadline - time.monotonic()))
            done = self.cluster.kubectl(
                "-n",
                "netshift-system",
                "rollout",
                "status",
                obj,
                f"--timeout={left}s",
                check=False,
                timeout=left + 10,
            )
            if done.returncode != 0:
                raise NodeError(f"{obj} not ready: {done.stderr.strip()}\n" + self._pods_report())

    def _pods_report(self) -> str:
        done = self.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False)
        return done.stdout + done.stderr

    # -- state -------------------------------------------------------------------------

    def _node(self) -> dict[str, Any] | None:
        from netshift.kube import ApiError

        try:
            return self.cluster.kube().get(f"/api/v1/nodes/{self.name}")
        except ApiError:
            return None
        except OSError:
            return None

    def node_ready(self) -> bool:
        node = self._node()
        if node is None:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def runtime_version(self) -> str:
        node = self._node() or {}
        return str(node.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion", "?"))

    # -- down --------------------------------------------------------------------------

    def down(self, say: Callable[[str], None] = print) -> None:
        """Stop the node and release what its pods held (IPAM addresses, netns, mounts)."""
        from localcluster.procs import pid_alive

        c = self.cluster
        # No restarts from here on: the kubelet goes first.
        self._stop("kubelet", say)
        if c.running("containerd"):
            self._stop_pods(say)
        for name in ("kube-proxy", "containerd"):
            self._stop(name, say)
        self._close_dead_pod_connections(say)
        # The shims outlive containerd when it is killed; end those of this node.
        for pid in self._shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.05)
        unmounted = self._unmount_under(self.root)
        if unmounted:
            say(f"node: unmounted {unmounted} mount(s) under {self.root}")
        with contextlib.suppress(binaries.MissingBinary, OSError):
            if c.log_dir.exists():
                with open(c.log_dir / "kube-proxy.log", "ab") as log:
                    subprocess.run(
                        [find_node_binary("kube-proxy"), "--cleanup"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=60,
                        check=False,
                    )
        with contextlib.suppress(binaries.MissingBinary, OSError):
            iptables = host_tool("iptables")
            while (
                subprocess.run(
                    [iptables, "-t", "nat", "-D", *self._dnat_rule()], capture_output=True
                ).returncode
                == 0
            ):
                pass
            _remove_kubelet_chains(iptables)
            with contextlib.suppress(binaries.MissingBinary):
                _remove_kubelet_chains(host_tool("ip6tables"))
        gone = subprocess.run(["ip", "link", "del", c.bridge], capture_output=True)
        if gone.returncode == 0:
            say(f"node network: removed bridge {c.bridge}")

    def apiserver_pod_connections(self, *, close: bool = False) -> list[str]:
        """The peers (address:port) of the apiserver's connections from the pod subnet;
        with `close`, those connections are closed on the apiserver's side (`ss -K`)."""
        c = self.cluster
        done = subprocess.run(
            [
                "ss", *(["-K"] if close else []), "-tn", "state", "established",
                "dst", c.pod_subnet, "and", "sport", "=", f":{c.port('apiserver')}",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if done.returncode != 0:
            return []
        return [line.split()[-1] for line in done.stdout.splitlines()[1:] if line.strip()]

    def _close_dead_pod_connections(self, say: Callable[[str], None]) -> None:
        """Close the apiserver's connections from pod addresses: no pod is left, so their
        peers are gone, and one that vanished without a FIN or RST (a pod frozen and then
        killed, a netns torn down under a process) would hold the apiserver's graceful
        shutdown until it is killed."""
        if not self.cluster.running("kube-apiserver"):
            return
        closed = len(self.apiserver_pod_connections(close=True))
        if closed:
            say(f"node: closed {closed} apiserver connection(s) left by pods that are gone")

    def _stop(self, name: str, say: Callable[[str], None], timeout: float = 20) -> None:
        self.cluster.stop_process(name, say, timeout)

    def _stop_pods(self, say: Callable[[str], None]) -> None:
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
        sandboxes = self._sandboxes()
        if not sandboxes:
            return
        agent = [
            s
            for s in sandboxes
            if s["labels"].get("app.kubernetes.io/component") == "agent"
            and s["namespace"] == "netshift-system"
        ]
        multus = [
            s
            for s in sandboxes
            if s["namespace"] == "kube-system"
            and s["labels"].get("app.kubernetes.io/name") == "multus"
        ]
        for s in agent:
            self.crictl("stopp", s["id"], check=False)
        others = [s for s in sandboxes if s not in agent and s not in multus]
        for s in others:
            done = self.crictl("stopp", s["id"], check=False)
            if done.returncode != 0:
                say(
                    f"node: stopping pod {s['namespace']}/{s['name']} failed: {done.stderr.strip()}"
                )
        self._release_agent_records(say)
        for s in multus:
            self.crictl("stopp", s["id"], check=False)
        self.crictl("rmp", "--all", "--force", check=False, timeout=120)
        say(f"node: stopped and removed {len(sandboxes)} pod sandbox(es)")

    def _sandboxes(self) -> list[dict[str, Any]]:
        done = self.crictl("pods", "-o", "json", check=False)
        if done.returncode != 0:
            return []
        out = []
        for item in json.loads(done.stdout or "{}").get("items", []):
            meta = item.get("metadata", {})
            out.append(
                {
                    "id": item["id"],
                    "name": meta.get("name", ""),
                    "namespace": meta.get("namespace", ""),
                    "labels": item.get("labels", {}),
                }
            )
        return out

    def _release_agent_records(self, say: Callable[[str], None]) -> None:
        from localcluster.procs import clean_env, main_python

        records = self.agent_dir / "records"
        if not records.exists() or not any(records.iterdir()):
            return
        done = subprocess.run(
            [
                *main_python(),
                "agent",
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--node={self.name}",
                f"--records-dir={records}",
                f"--cluster-network-conf={self.cluster_conflist}",
                f"--cri-socket={self.endpoint}",
                "--release-all",
            ],
            capture_output=True,
            text=True,
            env=clean_env({"PATH": f"{node_bin_dir()}:{os.environ.get('PATH', '')}"}),
            cwd=self.cluster.state_dir,
            timeout=300,
        )
        if done.returncode != 0:
            say(f"agent: could not release everything:\n{done.stderr[-2000:]}")

    def _shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 processes started for this node's containerd."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmd
                and cmd[0].endswith(b"containerd-shim-runc-v2")
                and str(self.socket).encode() in cmd
            ):
                pids.append(int(entry.name))
        return pids

    @staticmethod
    def _unmount_under(top: Path) -> int:
        count = 0
        for target in sorted(_mounts_under(top), key=len, reverse=True):
            if subprocess.run(["umount", "-l", target], capture_output=True).returncode == 0:
                count += 1
        return count

    # -- facts for tests and reports ---------------------------------------------

    def host_local_stores(self) -> list[Path]:
        """Every host-local store a pod's address may sit in: the cluster network's and the
        default one that NADs without a dataDir use."""
        return [self.ipam_dir, Path("/var/lib/cni/networks")]

    def process_rss(self) -> dict[str, int]:
        """Resident memory in KiB of the node's processes, the shims and the pods' processes."""
        out: dict[str, int] = {}
        for name in ("containerd", "kubelet", "kube-proxy"):
            pid = self.cluster.pid(name)
            if pid is not None:
                out[name] = _rss_kib(pid)
        for i, pid in enumerate(self._shim_pids()):
            out[f"shim-{i}"] = _rss_kib(pid)
        return out


# The chains the kubelet makes (kube-proxy --cleanup removes kube-proxy's).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def _remove_kubelet_chains(iptables: str) -> None:
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


def _shared_netns_dir() -> None:
    """Make /run/netns a shared mount, as `ip netns add` does: pod netns files that
    containerd makes later then reach the agent's and Multus's containers
    (mountPropagation: HostToContainer needs a shared mount)."""
    netns = Path("/run/netns")
    netns.mkdir(parents=True, exist_ok=True)
    if any(m == str(netns) for m in _mount_targets()):
        return
    subprocess.run(["mount", "--bind", str(netns), str(netns)], check=True)
    subprocess.run(["mount", "--make-shared", str(netns)], check=True)


def _mount_targets() -> Iterator[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            yield line.split()[4].replace("\\040", " ")


REAL_NODE_LOCK = "/run/netshift-realnode.lock"


@contextlib.contextmanager
def machine_lock(timeout: float = 1800) -> Iterator[None]:
    """One real node per machine: short-lived users (test sessions, benches, e.g. from
    two worktrees) take turns, each holding this lock while its real node runs; a second
    one waits for it (up to `timeout`) instead of failing on the first one's kubelet."""
    with open(REAL_NODE_LOCK, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{REAL_NODE_LOCK} held for {timeout:.0f}s") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def kubelet_pids() -> list[int]:
    """Every running kubelet on this machine (ours or anyone's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if os.path.basename(argv0) == b"kubelet":
            pids.append(int(entry.name))
    return pids


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _mounts_under(top: Path) -> Iterator[str]:
    prefix = str(top).rstrip("/") + "/"
    return (t for t in _mount_targets() if t.startswith(prefix))


def _toml(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
