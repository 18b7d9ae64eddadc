"""Real network namespaces for the node tier: made, wired, used and removed again.

Namespaces, host links (bridges, macvlan masters), a process inside a namespace and
real cgroup directories; the two-network lab of the netlink tests (10.98.0.0/16 and
fd98::/64 only) and a TCP echo server. Every name carries a random suffix
(`builders.unique`), so parallel runs and leftovers never collide; everything is
deleted when its context ends, also when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from localcluster.probe import socket_in
from support.builders import unique

NETNS_DIR = "/var/run/netns"


def sh(*args: str, check: bool = True) -> str:
    """Run a command (30 s at most); its stdout. A failure raises, with its stderr."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def in_ns(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


@contextlib.contextmanager
def netns(prefix: str = "nst") -> Iterator[str]:
    """A fresh named network namespace with loopback up; yields its name. Removed on the
    way out unless the test deleted it already."""
    name = unique(prefix)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        if os.path.exists(netns_path(name)):
            sh("ip", "netns", "delete", name)


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], check=True)


def host_link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def delete_host_link(name: str) -> None:
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            ipr.link("del", index=index)


@contextlib.contextmanager
def host_link_cleanup(*names: str) -> Iterator[None]:
    """Delete these host links (e.g. the bridge a plugin creates) on the way out."""
    try:
        yield
    finally:
        for name in names:
            delete_host_link(name)


@contextlib.contextmanager
def dummy_link(prefix: str = "nsd") -> Iterator[str]:
    """A link in the host namespace to serve as a macvlan master; yields its name.

    A dummy link where the kernel has the driver; otherwise (CONFIG_DUMMY is
    off on some test VMs) one end of a veth pair, which is as good a master.
    """
    name = unique(prefix)
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind="dummy")
        except NetlinkError as err:
            if err.code != errno.EOPNOTSUPP:
                raise
            ipr.link("add", ifname=name, kind="veth", peer=unique("nsp"))
        (index,) = ipr.link_lookup(ifname=name)
        ipr.link("set", index=index, state="up")
    try:
        yield name
    finally:
        delete_host_link(name)  # a veth peer goes with it


@dataclass
class LinkInfo:
    name: str
    kind: str | None
    mac: str
    mtu: int
    addresses: list[str]  # CIDRs, link-local ones left out


def links_in(ns_name: str) -> dict[str, LinkInfo]:
    """The links of a namespace, by name, with their addresses."""
    with NetNS(ns_name) as ns:
        out: dict[str, LinkInfo] = {}
        by_index: dict[int, LinkInfo] = {}
        for link in ns.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            li = LinkInfo(
                name=link.get_attr("IFLA_IFNAME"),
                kind=kind,
                mac=link.get_attr("IFLA_ADDRESS") or "",
                mtu=link.get_attr("IFLA_MTU") or 0,
                addresses=[],
            )
            out[li.name] = li
            by_index[link["index"]] = li
        for addr in ns.get_addr():
            owner = by_index.get(addr["index"])
            ip = addr.get_attr("IFA_ADDRESS")
            if owner is not None and not ipaddress.ip_address(ip).is_link_local:
                owner.addresses.append(f"{ip}/{addr['prefixlen']}")
        return out


def host_local_allocations(data_dir: str) -> list[str]:
    """IP addresses host-local holds in ``data_dir`` (one file per address, per network)."""
    found = []
    for _dirpath, _dirnames, filenames in os.walk(data_dir):
        for filename in filenames:
            with contextlib.suppress(ValueError):
                found.append(str(ipaddress.ip_address(filename)))
    return found


@contextlib.contextmanager
def process_in_netns(ns_name: str) -> Iterator[int]:
    """A long sleeping process inside the namespace (a stand-in pause process); yields its pid."""
    # ip netns exec execs the command after entering the namespace: the pid is the sleeper's.
    proc = subprocess.Popen(["ip", "netns", "exec", ns_name, "sleep", "600"])
    try:
        target = os.stat(netns_path(ns_name)).st_ino
        for _ in range(200):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == target:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"ip netns exec {ns_name} exited with {proc.returncode}")
            subprocess.run(["sleep", "0.01"], check=False)
        else:
            raise RuntimeError(f"process {proc.pid} never entered netns {ns_name}")
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def cgroup_mount(fstype: str, controller: str | None = None) -> str | None:
    """Mount point of a cgroup2 hierarchy, or of the v1 hierarchy holding ``controller``."""
    with open("/proc/self/mounts", encoding="ascii") as fh:
        for line in fh:
            _dev, mountpoint, kind, options = line.split()[:4]
            if kind != fstype:
                continue
            if controller is None or controller in options.split(","):
                return mountpoint
    return None


@contextlib.contextmanager
def cgroup_tree(mount: str, rel: str, pid: int) -> Iterator[str]:
    """Create the real cgroup ``mount/rel`` (and its parents), move ``pid`` into it.

    ``mount`` is the hierarchy's mount point (its root cgroup). On the way out
    the pid goes back to the root cgroup and every directory created here is
    removed, deepest first. Yields the cgroup's path.
    """
    created: list[str] = []
    path = mount
    for part in rel.strip("/").split("/"):
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path)
            created.append(path)
    try:
        with open(os.path.join(path, "cgroup.procs"), "w", encoding="ascii") as fh:
            fh.write(str(pid))
        yield path
    finally:
        with (
            contextlib.suppress(OSError),
            open(os.path.join(mount, "cgroup.procs"), "w", encoding="ascii") as fh,
        ):
            fh.write(str(pid))
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def route_dev(ns: str, dst: str, src: str | None = None) -> str:
    """The interface `ip route get` picks in `ns` for `dst` (from `src`)."""
    args = ["ip", "route", "get", dst] + (["from", src] if src else [])
    words = in_ns(ns, *args).split()
    return words[words.index("dev") + 1]


def rules(ns: str) -> list[str]:
    return [
        line.strip()
        for family in ("-4", "-6")
        for line in sh("ip", "-n", ns, family, "rule", "show").splitlines()
        if line.strip()
    ]


@dataclass(frozen=True)
class TwoNetworks:
    """A pod namespace attached to two networks, each ending in a router namespace.

    pod `na` 10.98.1.2/24 fd98::1:2/112 <-> router_a `pa` 10.98.1.1 fd98::1:1
    pod `nb` 10.98.2.2/24 fd98::2:2/112 <-> router_b `pb` 10.98.2.1 fd98::2:1
    router_a also owns the far addresses 10.98.100.1 and fd98::100:1 (on lo), which
    the pod reaches only through a default route via network A. Routers do not
    forward, so a packet for a far address sent into network B is dropped.
    The pod's default routes (v4 and v6) go via network A.
    """

    pod: str
    router_a: str
    router_b: str

    pod_a4 = "10.98.1.2"
    pod_a6 = "fd98::1:2"
    pod_b4 = "10.98.2.2"
    pod_b6 = "fd98::2:2"
    gw_a4 = "10.98.1.1"
    gw_a6 = "fd98::1:1"
    gw_b4 = "10.98.2.1"
    gw_b6 = "fd98::2:1"
    far4 = "10.98.100.1"
    far6 = "fd98::100:1"

    @property
    def pod_path(self) -> str:
        return netns_path(self.pod)


def _wire(pod: str, pod_if: str, router: str, router_if: str, net: int) -> None:
    sh(
        "ip",
        "-n",
        pod,
        "link",
        "add",
        pod_if,
        "type",
        "veth",
        "peer",
        "name",
        router_if,
        "netns",
        router,
    )
    for ns, ifname, host in ((pod, pod_if, 2), (router, router_if, 1)):
        sh("ip", "-n", ns, "addr", "add", f"10.98.{net}.{host}/24", "dev", ifname)
        sh("ip", "-n", ns, "addr", "add", f"fd98::{net}:{host}/112", "dev", ifname, "nodad")
        sh("ip", "-n", ns, "link", "set", ifname, "up")


@contextlib.contextmanager
def two_networks() -> Iterator[TwoNetworks]:
    with contextlib.ExitStack() as stack:
        pod = stack.enter_context(netns("nspod"))
        router_a = stack.enter_context(netns("nsra"))
        router_b = stack.enter_context(netns("nsrb"))
        _wire(pod, "na", router_a, "pa", 1)
        _wire(pod, "nb", router_b, "pb", 2)
        sh("ip", "-n", router_a, "addr", "add", "10.98.100.1/32", "dev", "lo")
        sh("ip", "-n", router_a, "addr", "add", "fd98::100:1/128", "dev", "lo", "nodad")
        sh("ip", "-n", pod, "route", "add", "default", "via", "10.98.1.1", "dev", "na")
        sh("ip", "-n", pod, "-6", "route", "add", "default", "via", "fd98::1:1", "dev", "na")
        yield TwoNetworks(pod=pod, router_a=router_a, router_b=router_b)


class EchoServer:
    """A TCP echo server listening inside a namespace, served by a thread."""

    def __init__(self, ns: str, family: int, address: str) -> None:
        self.sock = socket_in(ns, family)
        self.sock.bind((address, 0))
        self.sock.listen(4)
        self.port: int = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=2)


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send `payload` and read the same number of bytes back (socket timeout applies)."""
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        if not chunk:
            break
        got += chunk
    return got
