"""Real network namespaces for node tests: create, wire, run commands in, clean up.

Everything made here lives in namespaces named with a random suffix, uses only
10.98.0.0/16 and fd98::/64, and is deleted when the context ends.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

import pytest

NETNS_DIR = "/var/run/netns"

# Skipped on a developer machine without root; in CI (CI=true) the test runs and fails.
needs_root_netns = pytest.mark.skipif(
    (os.geteuid() != 0 or shutil.which("ip") is None)
    and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="needs root and iproute2 to create network namespaces",
)

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def unique(prefix: str) -> str:
    """`prefix` plus a random suffix, short enough for an interface or netns name."""
    name = f"{prefix}{secrets.token_hex(3)}"
    assert len(name) <= 15, name
    return name


def sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def in_ns(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@contextmanager
def netns(prefix: str = "nst") -> Iterator[str]:
    """A fresh, empty network namespace with loopback up; yields its name."""
    name = unique(prefix)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def ns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def socket_in(ns: str, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside namespace `ns` (usable from this process)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_open() -> None:
        try:
            fd = os.open(ns_path(ns), os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind))
        except BaseException as err:
            failed.append(err)

    worker = threading.Thread(target=enter_and_open)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]


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
        return ns_path(self.pod)


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


@contextmanager
def two_networks() -> Iterator[TwoNetworks]:
    with ExitStack() as stack:
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
        with suppress(OSError):
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
