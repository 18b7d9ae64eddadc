"""Helpers for the agent's cluster tests: the agent as a real process, networks, pods, host links.

The agent runs as `netshift agent` in a subprocess (as the DaemonSet would run
it), against the session's real apiserver and the node simulator's network
namespaces. Every network a test makes has its own bridge (or veth master),
its own subnet inside 10.250.0.0/16 and its own host-local `dataDir`, so a test
can read the IPAM store and know that every file in it is its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent import netlink
from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env, free_port, log_tail
from netshift import keys, podstatus
from netshift.kube import ApiError, Kube, pod_path, wait_for
from support.builders import bridge_config, create_nad, unique
from support.require import CNI_DIR

NETNS_TEMPLATE = "/var/run/netns/netshift-{uid}"
NETWORKS = keys.NETWORKS_KEY
DEFAULT_NETWORK = keys.DEFAULT_NETWORK_KEY
NETWORK_STATUS = keys.NETWORK_STATUS_KEY
STATUS = keys.STATUS_KEY
SWITCH_POLICY = keys.SWITCH_POLICY_KEY

# Subnets handed out to test networks: 10.250.<n>.0/24, from a random start so that
# leftovers of an interrupted run do not share a subnet with this one.
_third_octet = itertools.count(random.randrange(1, 200))


def next_subnet() -> str:
    return f"10.250.{next(_third_octet) % 250 + 1}.0/24"


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


# --- the agent process --------------------------------------------------------------------


class AgentProcess:
    """`netshift agent` for the test cluster's node, started and stopped by the tests.

    Records, ready file, timing log and the process's log live under `workdir`,
    which survives restarts: a restarted agent finds its records again.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        workdir: Path,
        *,
        extra_bin_dirs: tuple[str, ...] = (),
        resync_seconds: float = 60.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """`extra_args`: more flags of `netshift agent` (e.g. its retry backoff)."""
        self.cluster = cluster
        self.workdir = workdir
        self.records_dir = workdir / "records"
        self.ready_file = workdir / "ready"
        self.timing_log = workdir / "timings.jsonl"
        self.log_path = workdir / "agent.log"
        # Its node's Multus conf dir: where a NAD without spec.config finds its conf file.
        self.node_conf_dir = workdir / "node-conf.d"
        self.extra_bin_dirs = extra_bin_dirs
        self.resync_seconds = resync_seconds
        self.extra_args = extra_args
        self.health_port = free_port()  # /healthz, /readyz, /metrics
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        bin_dirs: list[str] = []
        for d in (*self.extra_bin_dirs, CNI_DIR):
            bin_dirs += ["--cni-bin-dir", d]
        return [
            sys.executable,
            "-m",
            "cli.main",
            "--log-format=text",
            "agent",
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--node",
            self.cluster.nodes[0].name,
            "--records-dir",
            str(self.records_dir),
            "--cluster-network-conf",
            str(self.cluster.nodes[0].cluster_conflist),
            "--netns-template",
            NETNS_TEMPLATE,
            "--node-conf-dir",
            str(self.node_conf_dir),
            *bin_dirs,
            "--resync-seconds",
            str(self.resync_seconds),
            "--ready-file",
            str(self.ready_file),
            "--timing-log",
            str(self.timing_log),
            "--health-bind-address=127.0.0.1",
            f"--health-port={self.health_port}",
            *self.extra_args,
        ]

    def metrics(self) -> str:
        """The agent's /metrics, as a scraper reads it."""
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as resp:
            return str(resp.read().decode())

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        assert not self.running(), "the agent is running already"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.node_conf_dir.mkdir(exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as logf:
            logf.write(f"--- agent starting at {time.strftime('%H:%M:%S')}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=clean_env({"PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}),
                cwd=str(Path(__file__).resolve().parents[2]),  # the repository
            )
        pid = str(self.proc.pid)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the agent exited during start-up:\n{self.log_tail()}")
            try:
                return self.ready_file.read_text().strip() == pid
            except OSError:
                return False

        wait_for(ready, timeout, what=f"the agent's ready file ({self.ready_file})")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the agent (its own pid only) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def timings(self) -> list[dict[str, Any]]:
        try:
            text = self.timing_log.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def record_files(self, uid: str) -> list[str]:
        pod_dir = self.records_dir / uid
        if not pod_dir.exists():
            return []
        return sorted(p.name for p in pod_dir.iterdir())

    def records(self, uid: str) -> dict[str, dict[str, Any]]:
        """The agent's attachment records of one pod, by interface."""
        out: dict[str, dict[str, Any]] = {}
        pod_dir = self.records_dir / uid
        for path in sorted(pod_dir.glob("*.json")) if pod_dir.exists() else []:
            with contextlib.suppress(ValueError, OSError):
                out[path.stem] = json.loads(path.read_text())
        return out


# --- CNI configs and NADs -----------------------------------------------------------------


def macvlan_config(name: str, master: str, subnet: str, data_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "macvlan",
        "master": master,
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "dataDir": str(data_dir),
        },
    }


def ipam_ips(data_dir: Path, network: str) -> set[str]:
    """The addresses host-local holds reserved for `network` (one file per address)."""
    store = data_dir / network
    if not store.exists():
        return set()
    found = set()
    for path in store.iterdir():
        with contextlib.suppress(ValueError):
            found.add(str(ipaddress.ip_address(path.name)))
    return found


def ipam_owners(data_dir: Path, network: str) -> dict[str, tuple[str, str]]:
    """address -> (container id, ifname) as host-local wrote them."""
    out: dict[str, tuple[str, str]] = {}
    for ip in ipam_ips(data_dir, network):
        lines = (data_dir / network / ip).read_text().split()
        out[ip] = (lines[0] if lines else "", lines[1] if len(lines) > 1 else "")
    return out


class HostLinks:
    """Host links a test made (bridges the plugins create, veth masters); deleted at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def bridge(self, prefix: str = "nsb") -> str:
        name = unique(prefix)
        self.names.append(name)  # the bridge plugin makes it on first ADD
        return name

    def veth_master(self, prefix: str = "nsm") -> str:
        """One end of a fresh host veth pair, up: a master for macvlan (there is no dummy driver)."""
        name, peer = unique(prefix), unique(prefix + "p")
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        self.names.append(name)
        sh("ip", "link", "set", name, "up")
        sh("ip", "link", "set", peer, "up")
        return name

    def cleanup(self) -> None:
        for name in reversed(self.names):
            sh("ip", "link", "del", name, check=False)


# --- pods -----------------------------------------------------------------------------------


def pod_manifest(name: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": dict(annotations or {})},
        "spec": {
            "containers": [{"name": "app", "image": "example.invalid/app:1"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def create_running_pod(
    kube: Kube, namespace: str, name: str, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    kube.create(pod_path(namespace), pod_manifest(name, annotations))
    return wait_running(kube, namespace, name)


def wait_running(kube: Kube, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        pod = kube.get(pod_path(namespace, name))
        if (pod.get("status") or {}).get("phase") == "Running" and Path(netns_of(pod)).exists():
            return pod
        return None

    pod: dict[str, Any] = wait_for(running, timeout, what=f"pod {namespace}/{name} Running")
    return pod


def get_pod(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get(pod_path(namespace, name))


def netns_of(pod: Mapping[str, Any]) -> str:
    return NETNS_TEMPLATE.format(uid=pod["metadata"]["uid"])


def annotate(kube: Kube, namespace: str, name: str, changes: Mapping[str, str | None]) -> None:
    """As `kubectl annotate` does: a merge patch of the annotations (None removes a key)."""
    kube.patch_merge(pod_path(namespace, name), {"metadata": {"annotations": dict(changes)}})


def annotations_of(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict(pod["metadata"].get("annotations") or {})


def agent_status(pod: Mapping[str, Any]) -> podstatus.PodNetStatus | None:
    return podstatus.parse_status(annotations_of(pod))


def network_status(pod: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """network-status entries by interface."""
    raw = annotations_of(pod).get(NETWORK_STATUS, "[]")
    return {e.get("interface", ""): e for e in json.loads(raw)}


def wait_settled(
    kube: Kube, namespace: str, name: str, phase: str | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Until the agent's status is about the pod's current wish and settled (in `phase`)."""
    last: list[Any] = [None]

    def settled() -> dict[str, Any] | None:
        pod = get_pod(kube, namespace, name)
        annotations = annotations_of(pod)
        status = podstatus.parse_status(annotations)
        last[0] = status
        done, _failed = podstatus.is_settled(annotations)
        if not done or status is None:
            return None
        if phase is not None and status.phase != phase:
            return None
        return pod

    try:
        pod: dict[str, Any] = wait_for(settled, timeout, interval=0.1, what="settled")
    except TimeoutError:
        raise AssertionError(
            f"pod {namespace}/{name} did not settle{f' in {phase}' if phase else ''} "
            f"within {timeout:.0f}s; last netshift.io/status: {last[0]}"
        ) from None
    return pod


def attachment(status: podstatus.PodNetStatus, interface: str) -> podstatus.AttachmentStatus:
    found = [a for a in status.attachments if a.interface == interface]
    assert found, f"no attachment {interface} in {status}"
    return found[0]


def pod_events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get(
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.name={name},involvedObject.kind=Pod",
    )["items"]
    return sorted(items, key=lambda e: e.get("metadata", {}).get("creationTimestamp", ""))


def has_event(kube: Kube, namespace: str, name: str, reason: str, type_: str = "") -> bool:
    """Whether the pod has an Event with that reason (and type), within 10 s.

    The agent records Events after its status patch, from a background sender, so a
    test that just saw the status waits a little for them.
    """

    def found() -> bool:
        return any(
            e["reason"] == reason and (not type_ or e["type"] == type_)
            for e in pod_events(kube, namespace, name)
        )

    try:
        wait_for(found, 10, interval=0.1, what=f"a {reason} Event on {namespace}/{name}")
    except TimeoutError:
        return False
    return True


def delete_pod_and_wait(kube: Kube, namespace: str, name: str, timeout: float = 60) -> None:
    try:
        kube.delete(pod_path(namespace, name))
    except ApiError as err:
        if err.status != 404:
            raise

    def gone() -> bool:
        try:
            kube.get(pod_path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                return True
            raise
        return False

    wait_for(gone, timeout, what=f"pod {namespace}/{name} deleted")


# --- inside the pod's network namespace ----------------------------------------------------


def interfaces(netns: str) -> dict[str, netlink.IfaceState]:
    return {i.name: i for i in netlink.list_interfaces(netns)}


def v4_addresses(state: netlink.IfaceState) -> list[str]:
    return [a for a in state.addresses if ":" not in a]


def default_route_ifnames(netns: str) -> list[str]:
    """Interfaces of the main table's IPv4 default routes."""
    return [r.ifname or "" for r in netlink.default_routes(netns) if r.family == socket.AF_INET]


def route_get(netns: str, dst: str, src: str | None = None) -> str:
    """`ip route get` inside the namespace: which way a packet to `dst` would leave."""
    args = ["ip", "-n", Path(netns).name, "-o", "route", "get", dst]
    if src:
        args += ["from", src]
    return sh(*args).stdout.strip()


def ping(netns: str, address: str, count: int = 1) -> bool:
    done = sh(
        "ip",
        "netns",
        "exec",
        Path(netns).name,
        "ping",
        "-n",
        "-q",
        "-c",
        str(count),
        "-W",
        "2",
        address,
        check=False,
    )
    return done.returncode == 0


@contextlib.contextmanager
def slow_plugin_dir(base: Path, name: str = "slowbridge") -> Iterator[tuple[Path, Path, Path]]:
    """A plugin dir with `name`: the real bridge plugin, plus a pause after a successful ADD.

    While the flag file exists, ADD runs the real bridge, touches the marker
    file (the address is reserved and the link is up by then) and waits for
    the flag to go (at most a minute) before it prints the result: a window to
    kill the agent with the attachment made but its result unknown to the
    agent. Yields (dir, flag, marker).
    """
    plugin_dir = base / "plugins"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    flag, marker = base / "slow.flag", base / "add-done.marker"
    script = plugin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        "# Test plugin: the real bridge, pausing after ADD while the flag file exists.\n"
        f'if [ "$CNI_COMMAND" = ADD ] && [ -e {flag} ]; then\n'
        f"  out=$({CNI_DIR}/bridge) || {{ rc=$?; printf '%s' \"$out\"; exit $rc; }}\n"
        f"  touch {marker}\n"
        "  i=0\n"
        f"  while [ -e {flag} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done\n"
        "  printf '%s' \"$out\"\n"
        "  exit 0\n"
        "fi\n"
        f"exec {CNI_DIR}/bridge\n"
    )
    script.chmod(0o755)
    yield plugin_dir, flag, marker


def recording_plugin(plugin_dir: Path, name: str = "recbridge") -> Path:
    """Put `name` into `plugin_dir`: the real bridge plugin, logging each call first.

    Each call appends "<command> <container id> <ifname> <network>" to the
    returned log, so a test can read the order in which the agent ran ADD and DEL.
    """
    plugin_dir.mkdir(parents=True, exist_ok=True)
    log = plugin_dir / f"{name}.calls"
    log.touch()
    script = plugin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        "# Test plugin: the real bridge, recording every call.\n"
        "conf=$(cat)\n"
        'net=$(printf \'%s\' "$conf" | grep -o \'"name": *"[^"]*"\' | head -n 1 '
        "| sed 's/.*: *\"//; s/\"$//')\n"
        f'echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $net" >> {log}\n'
        f"printf '%s' \"$conf\" | exec {CNI_DIR}/bridge\n"
    )
    script.chmod(0o755)
    return log


def plugin_calls(log: Path, container_id: str) -> list[tuple[str, str, str]]:
    """(command, ifname, network) of each call a `recording_plugin` saw for one pod, in order."""
    calls = []
    for line in log.read_text().splitlines():
        command, cid, ifname, network = [*line.split(" ", 3), "", "", ""][:4]
        if cid == container_id:
            calls.append((command, ifname, network))
    return calls


# --- per-test networks ---------------------------------------------------------------------


class Networks:
    """NADs of one test, each on its own bridge (or veth master), subnet and IPAM dataDir."""

    def __init__(self, kube: Kube, namespace: str, workdir: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.workdir = workdir
        self.links = HostLinks()
        self.data_dirs: dict[str, Path] = {}  # NAD name -> host-local dataDir
        self.subnets: dict[str, str] = {}

    def _data_dir(self, nad: str) -> Path:
        path = self.workdir / "ipam" / nad
        path.mkdir(parents=True, exist_ok=True)
        self.data_dirs[nad] = path
        return path

    def bridge(
        self,
        nad: str,
        *,
        default_route: bool = False,
        is_gateway: bool = False,
        plugin_type: str = "bridge",
        capabilities: Mapping[str, bool] | None = None,
    ) -> str:
        subnet = next_subnet()
        self.subnets[nad] = subnet
        config = bridge_config(
            nad,
            self.links.bridge(),
            subnet,
            self._data_dir(nad),
            default_route=default_route,
            is_gateway=is_gateway,
            plugin_type=plugin_type,
            capabilities=capabilities,
        )
        create_nad(self.kube, self.namespace, nad, config)
        return nad

    def macvlan(self, nad: str) -> str:
        subnet = next_subnet()
        self.subnets[nad] = subnet
        master = self.links.veth_master()
        create_nad(
            self.kube, self.namespace, nad, macvlan_config(nad, master, subnet, self._data_dir(nad))
        )
        return nad

    def raw(self, nad: str, config: Mapping[str, Any] | str) -> str:
        create_nad(self.kube, self.namespace, nad, config)
        return nad

    def ips(self, nad: str) -> set[str]:
        """Addresses host-local holds for the NAD (its config's name is the NAD's)."""
        return ipam_ips(self.data_dirs[nad], nad)

    def owners(self, nad: str) -> dict[str, tuple[str, str]]:
        return ipam_owners(self.data_dirs[nad], nad)

    def in_subnet(self, nad: str, address: str) -> bool:
        ip = ipaddress.ip_interface(address).ip
        return ip in ipaddress.ip_network(self.subnets[nad])


# --- the bodies of the test modules' fixtures --------------------------------------------


@contextlib.contextmanager
def running_agent(
    cluster: LocalCluster, workdir: Path, extra_bin_dirs: tuple[str, ...] = ()
) -> Iterator[AgentProcess]:
    proc = AgentProcess(cluster, workdir, extra_bin_dirs=extra_bin_dirs)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def networks_for_test(
    request: pytest.FixtureRequest,
    kube: Kube,
    namespace: str,
    agent: AgentProcess,
    workdir: Path,
) -> Iterator[Networks]:
    """A test's networks; at the end its pods are deleted and released, then its links."""
    failed_before = request.session.testsfailed
    networks = Networks(kube, namespace, workdir)
    yield networks
    if request.session.testsfailed > failed_before and sys.__stderr__ is not None:
        # Shown in the terminal whatever the capture mode: the agent's side of the failure.
        sys.__stderr__.write(f"\n--- agent log ({agent.log_path}):\n{agent.log_tail(80)}\n")
    if not agent.running():
        agent.start()  # a test that stopped it must not leave its pods unreleased
    # Delete the test's pods while the agent runs and the bridges and masters exist: it
    # releases them (a macvlan DEL fails once its master is gone).
    try:
        for pod in kube.get(pod_path(namespace))["items"]:
            delete_pod_and_wait(kube, namespace, pod["metadata"]["name"])
            uid = pod["metadata"]["uid"]

            def released(uid: str = uid) -> bool:
                return not (agent.records_dir / uid).exists()

            wait_for(released, 30, what=f"the agent to release pod {uid}")
    finally:
        networks.links.cleanup()
