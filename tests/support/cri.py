"""A private containerd (CRI) for node tests: real sandboxes with real network namespaces.

`private_containerd` starts a containerd of its own: every path is private (root, state,
gRPC socket, shim socket dir, runc root, opt dir; NRI off), so it never meets the node's
containerd on /run/containerd or another test run. Its CNI is a bridge + host-local conflist
of a private subnet whose host-local store is a directory of its own (so a test can check
what is reserved). Sandboxes are made with `crictl runp`, labelled as the kubelet labels them.

A missing prerequisite skips on a developer machine and fails in CI (`require`). Everything
is cleaned up: sandboxes stopped and removed, containerd stopped, its mounts unmounted, its
dirs removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster import binaries
from support.builders import bridge_config
from support.require import CNI_DIR, require

REPO = Path(__file__).resolve().parents[2]
RUNC = "/usr/sbin/runc"
PAUSE_IMAGE = "docker.io/netshift/pause:1.0"


def node_bin_dir() -> Path:
    """Where scripts/build-node.sh puts containerd, ctr, the shim and crictl."""
    v = binaries.pinned_versions()
    return (
        binaries.cache_dir()
        / "bin"
        / (
            f"node-containerd-{v['CONTAINERD_VERSION']}-kube-{v['KUBE_VERSION']}"
            f"-crictl-{v['CRICTL_VERSION']}-multus-{v['MULTUS_VERSION']}"
        )
    )


def _node_bin(name: str) -> str:
    path = node_bin_dir() / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    return shutil.which(name) or ""


@dataclass
class Containerd:
    """One private containerd and the sandboxes a test made in it."""

    dir: Path
    run: Path
    socket: str
    crictl_bin: str
    subnet: str
    bridge: str
    network: str  # the conflist's name (host-local keeps its reservations under it)
    ipam_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    sandboxes: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log: Any = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"containerd exited: {(self.dir / 'containerd.log').read_text()[-2000:]}"
                )
            if os.path.exists(self.socket):
                with contextlib.suppress(RuntimeError):
                    self.crictl("version", timeout=10)
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("containerd did not answer in 30 s")
            time.sleep(0.1)

    def restart(self) -> None:
        """Stop containerd (its shims and sandboxes keep running, as on a node) and start it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.start()

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def crictl(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [self.crictl_bin, "--runtime-endpoint", self.endpoint, "--timeout", "30s", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"crictl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def runp(self, uid: str, name: str, namespace: str = "default", attempt: int = 0) -> str:
        """A pod sandbox as the kubelet makes it (labels, metadata); its id."""
        config = {
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "attempt": attempt},
            "labels": {
                "io.kubernetes.pod.uid": uid,
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": namespace,
            },
            "log_directory": str(self.dir / "logs" / uid),
        }
        path = self.dir / f"pod-{uid}-{attempt}.json"
        path.write_text(json.dumps(config))
        sandbox = self.crictl("runp", str(path))
        self.sandboxes.append(sandbox)
        return sandbox

    def stopp(self, sandbox: str) -> None:
        self.crictl("stopp", sandbox)

    def rmp(self, sandbox: str) -> None:
        self.crictl("rmp", "-f", sandbox)
        with contextlib.suppress(ValueError):
            self.sandboxes.remove(sandbox)

    def netns(self, sandbox: str) -> str:
        info = json.loads(self.crictl("inspectp", "-o", "json", sandbox))
        for ns in info["info"]["runtimeSpec"]["linux"]["namespaces"]:
            if ns.get("type") == "network":
                return str(ns["path"])
        raise AssertionError(f"sandbox {sandbox} has no network namespace")

    def reserved(self) -> dict[str, str]:
        """host-local's reservations: address -> the container id that holds it."""
        store = self.ipam_dir / self.network
        if not store.is_dir():
            return {}
        out = {}
        for entry in store.iterdir():
            if entry.name[0].isdigit() or ":" in entry.name:
                out[entry.name] = entry.read_text().splitlines()[0].strip()
        return out


def _config(d: Path, run: Path) -> str:
    return f"""version = 3
root = "{d}/root"
state = "{run}/state"
[grpc]
  address = "{run}/containerd.sock"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
        Root = "{run}/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_DIR}"]
    conf_dir = "{d}/cni"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "{run}/s"
"""


def _pause_tar() -> str:
    done = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh"), "pause"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("PAUSE_TAR="):
            return line.split("=", 1)[1]
    return ""


@contextlib.contextmanager
def private_containerd() -> Iterator[Containerd]:
    bins = {n: _node_bin(n) for n in ("containerd", "containerd-shim-runc-v2", "ctr", "crictl")}
    require(os.geteuid() == 0, "needs root (containerd, network namespaces)")
    missing = [n for n, p in bins.items() if not p]
    require(not missing, f"needs {', '.join(missing)} (scripts/build-node.sh)")
    require(os.access(RUNC, os.X_OK), f"needs runc at {RUNC}")
    require(os.path.isfile(os.path.join(CNI_DIR, "bridge")), "needs containernetworking-plugins")
    tar = _pause_tar()
    require(bool(tar), "needs the pause image (scripts/build-images.sh pause)")

    tag = secrets.token_hex(3)
    d = Path(tempfile.mkdtemp(prefix="netshift-cri-"))
    run = Path(f"/run/nsc{tag}")  # short: the shim's socket paths must stay short
    run.mkdir(mode=0o700)
    n = os.getpid() % 250
    c = Containerd(
        dir=d,
        run=run,
        socket=f"{run}/containerd.sock",
        crictl_bin=bins["crictl"],
        subnet=f"10.247.{n}.0/24",
        bridge=f"nsc{tag}",
        network=f"nsc-{tag}",
        ipam_dir=d / "ipam",
    )
    (d / "cni").mkdir()
    (d / "cni" / "10-test.conflist").write_text(json.dumps(cluster_conflist(c)))
    (d / "config.toml").write_text(_config(d, run))
    env = dict(os.environ)
    env["PATH"] = f"{os.path.dirname(bins['containerd-shim-runc-v2'])}:{env.get('PATH', '')}"
    log = open(d / "containerd.log", "wb")  # noqa: SIM115 - closed in the finally below
    try:
        c.argv = [bins["containerd"], "--config", str(d / "config.toml")]
        c.env = env
        c.log = log
        c.start()
        subprocess.run(
            [bins["ctr"], "--address", c.socket, "-n", "k8s.io", "images", "import", tar],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield c
    finally:
        _teardown(c, log)


def cluster_conflist(c: Containerd) -> dict[str, Any]:
    """The runtime's own network: a gateway on its bridge and a default route."""
    return bridge_config(
        c.network, c.bridge, c.subnet, c.ipam_dir, default_route=True, is_gateway=True
    )


def _teardown(c: Containerd, log: Any) -> None:
    if c.proc is not None and c.proc.poll() is None:
        for sandbox in list(c.sandboxes):
            with contextlib.suppress(Exception):
                c.crictl("stopp", sandbox)
                c.crictl("rmp", "-f", sandbox)
        with contextlib.suppress(ProcessLookupError):
            c.proc.send_signal(signal.SIGTERM)
        try:
            c.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait(timeout=10)
    # Shims of sandboxes that could not be stopped: only those under this instance's dirs.
    _kill_own_shims(c)
    log.close()
    for base in (c.run, c.dir):
        _unmount_below(base)
    shutil.rmtree(c.run, ignore_errors=True)
    shutil.rmtree(c.dir, ignore_errors=True)
    subprocess.run(["ip", "link", "del", c.bridge], capture_output=True, check=False)


def _kill_own_shims(c: Containerd) -> None:
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"containerd-shim-runc-v2")
            and any(str(c.socket).encode() in arg for arg in cmdline)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_dir.name), signal.SIGKILL)


def _unmount_below(base: Path) -> None:
    prefix = str(base) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def new_uid() -> str:
    return str(uuid.uuid4())
