"""Small helpers for node tests: real network namespaces, links and cgroups.

Every name carries a random suffix (and stays within the 15 bytes of an
interface name) so parallel runs and leftovers never collide; every helper
cleans up after itself, also when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

CNI_DIR = "/usr/lib/cni"
NETNS_DIR = "/var/run/netns"

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_MISSING = [
    why
    for ok, why in (
        (os.geteuid() == 0, "root (network namespaces)"),
        (os.path.isfile(os.path.join(CNI_DIR, "bridge")), f"the CNI plugins in {CNI_DIR}"),
        (shutil.which("ip") is not None, "iproute2"),
    )
    if not ok
]
# As in conftest.py: skipped on a developer machine, never in CI (where it must fail).
_skip_unless_node = pytest.mark.skipif(
    bool(_MISSING) and not IN_CI, reason="needs " + ", ".join(_MISSING)
)

F = TypeVar("F", bound=Callable[..., Any])


def requires_node(test: F) -> F:
    """Mark a test as a node test (``-m node``); skip it where it cannot run."""
    marked: F = pytest.mark.node(_skip_unless_node(test))
    return marked


def unique(prefix: str) -> str:
    """``prefix`` plus a random suffix, at most 15 bytes (an interface name)."""
    suffix = secrets.token_hex(4)
    return (prefix[: 15 - len(suffix)] + suffix)[:15]


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


@contextlib.contextmanager
def netns(prefix: str = "nst") -> Iterator[str]:
    """A fresh named network namespace; yields its name."""
    name = unique(prefix)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        if os.path.exists(netns_path(name)):  # a test may have deleted it already
            subprocess.run(["ip", "netns", "delete", name], check=True)


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
