"""Netlink inside a pod's network namespace: read interfaces, check them, move routes.

Every function takes the namespace first, either as a path (``/proc/<pid>/ns/net``,
``/var/run/netns/<name>``) or as a bare name, which means ``/var/run/netns/<name>``
as with ``ip netns``. A namespace that does not exist raises :class:`NetnsNotFound`;
it is never created.

Each call opens its own rtnetlink socket in the target namespace and closes it
before returning, so calls for different namespaces may run in parallel threads.
The socket is made by one long-lived helper thread that enters the namespace
with ``setns(2)`` and goes back to its own, rather than by pyroute2's
``IPRoute(netns=...)``, which forks a child for it: forking a threaded agent can
deadlock on locks held by other threads, and pyroute2 creates a missing namespace
unless told otherwise. Reads and changes alike are plain rtnetlink messages on that
socket (`agent.rtnetlink`), not pyroute2: its per-request cost was most of a
default switch's time.

Moving the default route is make-before-break (:func:`switch_default_route`):
the old interface keeps a policy-routing table and ``ip rule from <old address>``
entries, so connections bound to the old address keep leaving through the old
interface until it is detached; the main-table default is replaced in place and
no link is ever set down.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

from agent import rtnetlink as rtnl
from agent.rtnetlink import NetlinkError

__all__ = [
    "MAIN_TABLE",
    "SOURCE_RULE_PRIORITY",
    "IfaceState",
    "LinkNotFound",
    "NetnsNotFound",
    "Route",
    "SourceRule",
    "SwitchRecord",
    "VerifyError",
    "default_routes",
    "delete_link",
    "interface_state",
    "keep_source_routes",
    "list_interfaces",
    "remove_default_routes_via",
    "remove_source_routes",
    "set_default_route_via",
    "switch_default_route",
    "verify_interface",
]

NETNS_RUN_DIR = "/var/run/netns"
MAIN_TABLE = 254
# Below the main table's rule (32766) so that traffic from an old address never
# reaches the main table's new default route.
SOURCE_RULE_PRIORITY = 1000

_CLONE_NEWNET = 0x40000000
_IFF_UP = 0x1
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
_RTN_UNICAST = 1
_RTNH_F_ONLINK = 0x4  # the only route flag worth copying; LINKDOWN etc. are read-only
_RTPROT_STATIC = 4
_RT_SCOPE_UNIVERSE = 0
_RT_SCOPE_LINK = 253
_RESERVED_TABLES = frozenset({0, 253, 254, 255})  # unspec, default, main, local
_FAMILIES: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)
_ANY: dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
_HOST_LEN: dict[int, int] = {socket.AF_INET: 32, socket.AF_INET6: 128}
# Metric the kernel gives a route added without one (IPv6 turns 0 into 1024).
_KERNEL_DEFAULT_METRIC: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 1024}
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)


class NetnsNotFound(FileNotFoundError):
    """The network namespace path does not exist (the pod or sandbox is gone)."""


class LinkNotFound(LookupError):
    """An interface the operation needs is not in the namespace."""

    def __init__(self, netns: str, ifname: str) -> None:
        super().__init__(f"interface {ifname} not found in netns {netns}")
        self.netns = netns
        self.ifname = ifname


class VerifyError(Exception):
    """An interface is not as the agent expects it after an ADD.

    ``problems`` holds one readable sentence per finding.
    """

    def __init__(self, netns: str, ifname: str, problems: Sequence[str]) -> None:
        super().__init__(f"interface {ifname} in netns {netns}: " + "; ".join(problems))
        self.netns = netns
        self.ifname = ifname
        self.problems = list(problems)


@dataclass
class IfaceState:
    name: str
    index: int
    up: bool  # administratively up (IFF_UP)
    oper_state: str  # IFLA_OPERSTATE: UP, DOWN, LOWERLAYERDOWN, UNKNOWN, ...
    mac: str | None
    mtu: int
    addresses: list[str]  # "ip/prefix", IPv6 link-local left out
    tentative: list[str] = field(default_factory=list)  # in `addresses`, DAD not done
    dad_failed: list[str] = field(default_factory=list)  # in `addresses`, DAD failed


@dataclass(frozen=True)
class Route:
    dst: str  # "0.0.0.0/0", "::/0", "10.98.1.0/24", ...
    gateway: str | None
    ifname: str | None  # None for multipath routes and vanished links
    metric: int
    table: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.dst else socket.AF_INET

    def to_json(self) -> dict[str, Any]:
        return {
            "dst": self.dst,
            "gateway": self.gateway,
            "ifname": self.ifname,
            "metric": self.metric,
            "table": self.table,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Route:
        return cls(
            dst=str(data["dst"]),
            gateway=data.get("gateway"),
            ifname=data.get("ifname"),
            metric=int(data.get("metric", 0)),
            table=int(data.get("table", MAIN_TABLE)),
        )


@dataclass(frozen=True)
class SourceRule:
    """``ip rule add from <src> lookup <table> priority <priority>``."""

    src: str  # "ip/32" or "ip/128"
    table: int
    priority: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.src else socket.AF_INET

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "table": self.table, "priority": self.priority}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceRule:
        return cls(src=str(data["src"]), table=int(data["table"]), priority=int(data["priority"]))


@dataclass(frozen=True)
class SwitchRecord:
    """What :func:`switch_default_route` set up, for :func:`remove_source_routes`.

    ``table`` belongs to this switch: cleanup empties it entirely.
    """

    table: int
    old_ifname: str
    new_ifname: str
    rules: tuple[SourceRule, ...]
    routes: tuple[Route, ...]  # copied into `table`
    defaults: tuple[Route, ...]  # the main-table default routes now in force

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "old_ifname": self.old_ifname,
            "new_ifname": self.new_ifname,
            "rules": [r.to_json() for r in self.rules],
            "routes": [r.to_json() for r in self.routes],
            "defaults": [r.to_json() for r in self.defaults],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SwitchRecord:
        return cls(
            table=int(data["table"]),
            old_ifname=str(data.get("old_ifname", "")),
            new_ifname=str(data.get("new_ifname", "")),
            rules=tuple(SourceRule.from_json(r) for r in data.get("rules", ())),
            routes=tuple(Route.from_json(r) for r in data.get("routes", ())),
            defaults=tuple(Route.from_json(r) for r in data.get("defaults", ())),
        )


# --- opening the namespace -------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _netns_path(netns: str) -> str:
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


def _enter_and_open(path: str, protocol: int) -> socket.socket:
    """Move the calling thread into the namespace at `path` and make the socket there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(errno.ENOENT, "network namespace not found", path) from None
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns: {os.strerror(code)}", path)
    finally:
        os.close(fd)
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, protocol)


def _socket_in_new_thread(path: str, protocol: int) -> socket.socket:
    """The fallback: a throwaway thread enters the namespace, makes the socket and ends."""
    box: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            box.append(_enter_and_open(path, protocol))
        except BaseException as err:  # handed to the caller
            box.append(err)

    worker = threading.Thread(target=run, name=f"netns-open {path}", daemon=True)
    worker.start()
    worker.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


_Request = tuple[str, int, list[Any], threading.Event]


class _NetnsOpener:
    """One long-lived thread that makes sockets in other network namespaces.

    Per request it enters the target namespace with setns(2), makes the socket and
    goes back to the namespace it started in (held open as a descriptor), so no
    thread is started per netlink call. A thread that cannot go back is never used
    again: it hands what is queued to the throwaway-thread fallback and ends, and
    the next request starts a new one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[_Request] | None = None

    def open(self, path: str, protocol: int) -> socket.socket:
        box: list[Any] = []
        done = threading.Event()
        with self._lock:
            if self._requests is None:
                self._requests = queue.SimpleQueue()
                threading.Thread(
                    target=self._serve, args=(self._requests,), name="netns-opener", daemon=True
                ).start()
            self._requests.put((path, protocol, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return cast(socket.socket, box[0])

    def _serve(self, requests: queue.SimpleQueue[_Request]) -> None:
        try:
            home: int | None = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            home = None
        while home is not None:
            path, protocol, box, done = requests.get()
            try:
                box.append(_enter_and_open(path, protocol))
            except BaseException as err:  # handed to the caller
                box.append(err)
            if _libc.setns(home, _CLONE_NEWNET) != 0:
                os.close(home)
                home = None
            done.set()
        self._retire(requests)

    def _retire(self, requests: queue.SimpleQueue[_Request]) -> None:
        with self._lock:
            if self._requests is requests:
                self._requests = None  # nothing more is queued here
        while True:
            try:
                path, protocol, box, done = requests.get_nowait()
            except queue.Empty:
                return
            try:
                box.append(_socket_in_new_thread(path, protocol))
            except BaseException as err:  # handed to the caller
                box.append(err)
            done.set()


_opener = _NetnsOpener()


def _socket_in_netns(path: str, protocol: int = socket.NETLINK_ROUTE) -> socket.socket:
    """A netlink socket (NETLINK_ROUTE unless told) that lives in the namespace at `path`.

    A socket stays in the namespace it was made in; setns only moves the calling
    thread, so a helper thread makes it (:class:`_NetnsOpener`).
    """
    return _opener.open(path, protocol)


@contextmanager
def _rtnl(netns: str) -> Iterator[rtnl.Rtnl]:
    """A raw rtnetlink socket in the namespace (agent.rtnetlink); closed on exit."""
    sock = _socket_in_netns(_netns_path(netns))
    sock.settimeout(5.0)  # the kernel answers at once; never let a lost reply hang a worker
    ipr = rtnl.Rtnl(sock)
    try:
        yield ipr
    finally:
        ipr.close()


# --- reading ----------------------------------------------------------------------------


def _link_index(ipr: rtnl.Rtnl, ifname: str) -> int | None:
    return next((i for i, name in ipr.links().items() if name == ifname), None)


def _require_link(ipr: rtnl.Rtnl, netns: str, ifname: str) -> int:
    index = _link_index(ipr, ifname)
    if index is None:
        raise LinkNotFound(netns, ifname)
    return index


# Reading links and addresses is the hot path of every reconcile (observe, verify): two
# plain rtnetlink dumps on a raw socket, parsed here.
_OPER_STATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")


def _mac(raw: bytes | None) -> str | None:
    return ":".join(f"{b:02x}" for b in raw) if raw else None


def _read_links(sock: socket.socket) -> dict[int, IfaceState]:
    by_index: dict[int, IfaceState] = {}
    for msg in rtnl.dump(
        sock, rtnl.RTM_GETLINK, rtnl.IFINFOMSG.pack(0, 0, 0, 0, 0), rtnl.RTM_NEWLINK
    ):
        _family, _type, index, flags, _change = rtnl.IFINFOMSG.unpack_from(msg)
        at = rtnl.attrs(msg, rtnl.IFINFOMSG.size, len(msg))
        oper = at.get(rtnl.IFLA_OPERSTATE)
        mtu = at.get(rtnl.IFLA_MTU)
        by_index[index] = IfaceState(
            name=at.get(rtnl.IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(),
            index=index,
            up=bool(flags & _IFF_UP),
            oper_state=_OPER_STATES[oper[0]] if oper and oper[0] < len(_OPER_STATES) else "UNKNOWN",
            mac=_mac(at.get(rtnl.IFLA_ADDRESS)),
            mtu=struct.unpack("=I", mtu[:4])[0] if mtu else 0,
            addresses=[],
        )
    return by_index


def _read_addresses(sock: socket.socket, by_index: Mapping[int, IfaceState]) -> None:
    """Fill in the addresses of the links in `by_index` (IPv6 link-local left out)."""
    for msg in rtnl.dump(
        sock, rtnl.RTM_GETADDR, rtnl.IFADDRMSG.pack(0, 0, 0, 0, 0), rtnl.RTM_NEWADDR
    ):
        family, prefixlen, hdr_flags, _scope, index = rtnl.IFADDRMSG.unpack_from(msg)
        state = by_index.get(index)
        if state is None or family not in _FAMILIES:
            continue
        at = rtnl.attrs(msg, rtnl.IFADDRMSG.size, len(msg))
        # For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
        # point-to-point links); IPv6 only sets IFA_ADDRESS unless a peer is configured.
        raw = at.get(rtnl.IFA_LOCAL) or at.get(rtnl.IFA_ADDRESS)
        if raw is None:
            continue
        ip = ipaddress.ip_address(raw)
        if ip.version == 6 and ip.is_link_local:
            continue
        text = f"{ip}/{prefixlen}"
        state.addresses.append(text)
        # IFA_FLAGS carries all 32 bits; the header field only the low 8.
        extra = at.get(rtnl.IFA_FLAGS)
        flags = struct.unpack("=I", extra[:4])[0] if extra else hdr_flags
        if flags & _IFA_F_DADFAILED:
            state.dad_failed.append(text)
        elif flags & _IFA_F_TENTATIVE:
            state.tentative.append(text)


def _read_states(netns: str, ifname: str | None = None) -> list[IfaceState]:
    """Every link's state (only `ifname`'s if given), by index."""
    sock = _socket_in_netns(_netns_path(netns))
    sock.settimeout(5.0)  # the kernel answers at once; never let a lost reply hang a worker
    try:
        by_index = _read_links(sock)
        if ifname is not None:
            by_index = {i: s for i, s in by_index.items() if s.name == ifname}
        if by_index:
            _read_addresses(sock, by_index)
    finally:
        sock.close()
    return [by_index[i] for i in sorted(by_index)]


def interface_state(netns: str, ifname: str) -> IfaceState | None:
    """The interface's link and address state, or None when it does not exist."""
    states = _read_states(netns, ifname)
    return states[0] if states else None


def monitor_socket(netns: str, groups: int) -> socket.socket:
    """A netlink socket in the namespace that receives the rtnetlink multicast `groups`.

    For observers that time what the kernel did (the benches): the messages come
    as the change happens, without polling. The caller reads and closes it.
    """
    sock = _socket_in_netns(_netns_path(netns))
    try:
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


def list_interfaces(netns: str) -> list[IfaceState]:
    """Every interface in the namespace except loopback, by index."""
    return [s for s in _read_states(netns) if s.name != "lo"]


def _same_address(expected: str, have: str) -> bool:
    """`expected` may be "ip/prefix" (both must match) or a bare "ip"."""
    want = ipaddress.ip_interface(expected)
    got = ipaddress.ip_interface(have)
    if want.ip != got.ip:
        return False
    return "/" not in expected or want.network.prefixlen == got.network.prefixlen


def _problems(
    state: IfaceState | None, expected: Sequence[str], waited: float
) -> tuple[list[str], bool]:
    """What is wrong with the interface, and whether waiting longer cannot help."""
    if state is None:
        return ["interface does not exist"], False
    problems: list[str] = []
    final = False
    if not state.up:
        problems.append(f"link is down (IFF_UP not set, operstate {state.oper_state})")
    for want in expected:
        match = next((a for a in state.addresses if _same_address(want, a)), None)
        if match is None:
            has = ", ".join(state.addresses) or "none"
            problems.append(f"address {want} is missing (has: {has})")
        elif match in state.dad_failed:
            problems.append(f"address {match} failed duplicate address detection")
            final = True
        elif match in state.tentative:
            problems.append(f"address {match} is still tentative after {waited:.1f}s")
    return problems, final


def verify_interface(
    netns: str, ifname: str, expected_addrs: Sequence[str], timeout: float = 2.0
) -> None:
    """Raise :class:`VerifyError` unless the interface exists, is up and has every address.

    IPv6 addresses stay tentative while duplicate address detection runs, so the
    check is repeated until `timeout`; a failure reports what was seen last.
    """
    for want in expected_addrs:
        ipaddress.ip_interface(want)  # a malformed expectation is a caller bug: ValueError
    started = time.monotonic()
    while True:
        state = interface_state(netns, ifname)
        waited = time.monotonic() - started
        problems, final = _problems(state, expected_addrs, waited)
        if not problems:
            return
        if final or waited >= timeout:
            raise VerifyError(netns, ifname, problems)
        time.sleep(min(0.05, max(timeout - waited, 0.0)))


# --- routes ------------------------------------------------------------------------------


def _route_from_msg(msg: rtnl.RouteMsg, names: Mapping[int, str], via: int | None = None) -> Route:
    """The route in `msg`; with `via`, only its next hop out of that interface."""
    dst = msg.dst or _ANY[msg.family]
    oif, gateway = msg.oif, msg.gateway
    if via is not None:
        oif, gateway, _flags = next(h for h in _hops(msg) if h[0] == via)
    return Route(
        dst=f"{dst}/{msg.dst_len}",
        gateway=gateway,
        ifname=names.get(oif) if oif is not None else None,
        metric=msg.priority,
        table=msg.table,
    )


def _dump(ipr: rtnl.Rtnl, family: int, table: int) -> list[rtnl.RouteMsg]:
    """Unicast routes of one family in one table (the kernel dumps every table)."""
    return [m for m in ipr.routes(family) if m.table == table and m.type == _RTN_UNICAST]


def _is_default(msg: rtnl.RouteMsg) -> bool:
    return msg.dst_len == 0 and msg.src_len == 0


def _hops(msg: rtnl.RouteMsg) -> list[tuple[int, str | None, int]]:
    """(oif, gateway, flags) of each next hop of a route, multipath or not.

    IPv6 merges a second default route of the same metric into one multipath
    route (the bridge plugin's ``::/0`` does that to the pod's default): its next
    hops are in RTA_MULTIPATH and the route itself has no RTA_OIF.
    """
    if msg.multipath:
        return list(msg.multipath)
    if msg.oif is None:
        return []
    return [(msg.oif, msg.gateway, msg.flags)]


def _via(msg: rtnl.RouteMsg, index: int) -> bool:
    """Whether the route has a next hop out of interface `index`."""
    return any(oif == index for oif, _gw, _flags in _hops(msg))


def _delete_route(ipr: rtnl.Rtnl, msg: rtnl.RouteMsg) -> bool:
    """Delete exactly the route in `msg` (as dumped); False when it is already gone."""
    spec = rtnl.RouteSpec(
        family=msg.family,
        dst=msg.dst,
        dst_len=msg.dst_len,
        table=msg.table,
        proto=msg.proto,
        scope=msg.scope,
        type=msg.type,
        priority=msg.priority,
        gateway=msg.gateway,
        oif=msg.oif,
    )
    try:
        ipr.route("del", spec)
    except NetlinkError as err:
        if err.code in _GONE:
            return False
        raise
    return True


def default_routes(netns: str) -> list[Route]:
    """Default routes (IPv4 then IPv6) of the main table."""
    with _rtnl(netns) as ipr:
        names = ipr.links()
        return [
            _route_from_msg(msg, names)
            for family in _FAMILIES
            for msg in _dump(ipr, family, MAIN_TABLE)
            if _is_default(msg)
        ]


def remove_default_routes_via(netns: str, ifname: str) -> list[Route]:
    """Delete the main table's default routes out of `ifname`; return what was removed.

    For a secondary network whose IPAM hands out 0.0.0.0/0 or ::/0 although its
    selection did not ask for the default route: the pod's default must not move.
    A missing interface has no routes, so nothing is removed.
    """
    removed: list[Route] = []
    with _rtnl(netns) as ipr:
        names = ipr.links()  # one dump gives the index too
        index = next((i for i, name in names.items() if name == ifname), None)
        if index is None:
            return []
        for family in _FAMILIES:
            for msg in _dump(ipr, family, MAIN_TABLE):
                if not (_is_default(msg) and _via(msg, index)):
                    continue
                if len(_hops(msg)) > 1:
                    # A multipath default that has a hop out of `ifname` (IPv6 merges a
                    # plugin's ::/0 into the pod's default): only that hop goes.
                    if _delete_hop(ipr, msg, index):
                        removed.append(_route_from_msg(msg, names, via=index))
                elif _delete_route(ipr, msg):
                    removed.append(_route_from_msg(msg, names))
    return removed


def _delete_hop(ipr: rtnl.Rtnl, msg: rtnl.RouteMsg, index: int) -> bool:
    """Delete the next hop out of `index` from a multipath route; the others stay."""
    hops = _hops(msg)
    try:
        if msg.family == socket.AF_INET6:
            # IPv6 deletes exactly one sibling when the gateway is given.
            _oif, gateway, _flags = next(h for h in hops if h[0] == index)
            spec = rtnl.RouteSpec(
                family=msg.family,
                dst=msg.dst,
                dst_len=msg.dst_len,
                table=msg.table,
                priority=msg.priority,
                oif=index,
                gateway=gateway,
            )
            ipr.route("del", spec)
        else:
            rest = [(o, g) for o, g, _f in hops if o != index]
            spec = rtnl.RouteSpec(
                family=msg.family,
                dst=msg.dst,
                dst_len=msg.dst_len,
                table=msg.table,
                priority=msg.priority,
                proto=msg.proto,
                scope=msg.scope,
                type=msg.type,
                multipath=rest,
            )
            ipr.route("replace", spec)
    except NetlinkError as err:
        if err.code in _GONE:
            return False
        raise
    return True


def _family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _gateways_by_family(
    gateways: Mapping[int, str | None] | Iterable[str],
) -> dict[int, str | None]:
    if isinstance(gateways, Mapping):
        out: dict[int, str | None] = {}
        for family, gateway in gateways.items():
            if family not in _FAMILIES:
                raise ValueError(f"gateway family {family} is neither AF_INET nor AF_INET6")
            if gateway is not None:
                if _family_of(gateway) != family:
                    raise ValueError(f"gateway {gateway} is not of address family {family}")
                gateway = str(ipaddress.ip_address(gateway))
            out[family] = gateway
        return out
    by_family: dict[int, str | None] = {}
    for gateway in gateways:
        family = _family_of(gateway)
        if family in by_family:
            raise ValueError(f"two gateways of one family: {by_family[family]} and {gateway}")
        by_family[family] = str(ipaddress.ip_address(gateway))
    return by_family


def _install_default(ipr: rtnl.Rtnl, family: int, index: int, gateway: str | None) -> None:
    """Make the main table's only `family` default go out of `index` via `gateway`.

    The new route takes the metric of the default currently in force, so that
    `replace` swaps it in place: there is no moment without a default route. The
    other defaults of the family are deleted afterwards: any that stayed could win.
    """
    current = [m for m in _dump(ipr, family, MAIN_TABLE) if _is_default(m)]
    metrics = [m.priority for m in current]
    metric = min(metrics) if metrics else _KERNEL_DEFAULT_METRIC[family]
    ipr.route(
        "replace",
        rtnl.RouteSpec(
            family=family,
            dst_len=0,
            table=MAIN_TABLE,
            oif=index,
            gateway=gateway,
            priority=metric,
            proto=_RTPROT_STATIC,
            type=_RTN_UNICAST,
            scope=_RT_SCOPE_LINK if gateway is None else _RT_SCOPE_UNIVERSE,
        ),
    )
    for msg in _dump(ipr, family, MAIN_TABLE):
        if not _is_default(msg):
            continue
        mine = msg.oif == index and msg.gateway == gateway and msg.priority == metric
        if not mine:
            _delete_route(ipr, msg)


def _main_defaults(ipr: rtnl.Rtnl, families: Iterable[int]) -> tuple[Route, ...]:
    names = ipr.links()
    return tuple(
        _route_from_msg(m, names)
        for family in families
        for m in _dump(ipr, family, MAIN_TABLE)
        if _is_default(m)
    )


def set_default_route_via(
    netns: str, ifname: str, gateway: str | None, *, family: int | None = None
) -> Route:
    """Make `ifname` (via `gateway`) carry the pod's default route of that address family.

    Replaces the current default in place and then deletes any other default of
    the family. `family` is needed only for a device route (gateway None).
    """
    if gateway is not None:
        family = _family_of(gateway)
        gateway = str(ipaddress.ip_address(gateway))
    if family not in _FAMILIES:
        raise ValueError("a default route without gateway needs family AF_INET or AF_INET6")
    with _rtnl(netns) as ipr:
        index = _require_link(ipr, netns, ifname)
        _install_default(ipr, family, index, gateway)
        routes = [r for r in _main_defaults(ipr, [family]) if r.ifname == ifname]
    if not routes:
        raise RuntimeError(f"default route via {ifname} vanished right after it was set")
    return routes[0]


def _host(address: str) -> tuple[int, str]:
    ip = ipaddress.ip_interface(address).ip
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return family, f"{ip}/{_HOST_LEN[family]}"


def _copy_route(ipr: rtnl.Rtnl, msg: rtnl.RouteMsg, table: int, via: int) -> None:
    """Copy the route in `msg`, its next hop out of `via` only, into `table`."""
    oif, gateway, flags = next(h for h in _hops(msg) if h[0] == via)
    ipr.route(
        "replace",
        rtnl.RouteSpec(
            family=msg.family,
            dst=msg.dst,
            dst_len=msg.dst_len,
            table=table,
            oif=oif,
            gateway=gateway,
            priority=msg.priority,
            prefsrc=msg.prefsrc,
            proto=_RTPROT_STATIC,
            scope=msg.scope,
            type=_RTN_UNICAST,
            flags=flags & _RTNH_F_ONLINK,
        ),
    )


def _rules(ipr: rtnl.Rtnl, family: int) -> list[SourceRule]:
    return [
        SourceRule(
            src=str(ipaddress.ip_interface(f"{msg.src}/{msg.src_len}")),
            table=msg.table,
            priority=msg.priority,
        )
        for msg in ipr.rules(family)
        if msg.src is not None
    ]


def _rule_request(ipr: rtnl.Rtnl, cmd: str, rule: SourceRule) -> None:
    address, length = rule.src.split("/")
    ipr.rule(cmd, rule.family, address, int(length), rule.table, rule.priority)


def _add_rule(ipr: rtnl.Rtnl, rule: SourceRule) -> None:
    if rule in _rules(ipr, rule.family):
        return
    try:
        _rule_request(ipr, "add", rule)
    except NetlinkError as err:
        if err.code != errno.EEXIST:
            raise


def _delete_rule(ipr: rtnl.Rtnl, rule: SourceRule) -> None:
    try:
        _rule_request(ipr, "del", rule)
    except NetlinkError as err:
        if err.code not in _GONE:
            raise


def _check_table(table: int) -> None:
    if table in _RESERVED_TABLES or not 0 < table < 2**32:
        raise ValueError(f"table {table} is reserved or out of range; use 1-252 or 256+")


def _keep(
    ipr: rtnl.Rtnl, old_ifname: str, old_addrs: Sequence[str], table: int, priority: int
) -> tuple[list[SourceRule], list[Route]]:
    """Copy the old interface's routes into `table`, then add the rules that use it.

    Routes first: a rule never points at a table that lacks the old default. Per
    family, and only for a family whose default the old interface carries (in the
    main table, or in `table` when a switch ran already).
    """
    old_index = _link_index(ipr, old_ifname)
    routes: list[Route] = []
    rules: list[SourceRule] = []
    if old_index is None:
        return rules, routes
    names = ipr.links()
    for family in _FAMILIES:
        mine = [m for m in _dump(ipr, family, MAIN_TABLE) if _via(m, old_index)]
        if not any(_is_default(m) for m in mine):
            # A second run: the main default has moved already, its copy is in `table`.
            mine += [m for m in _dump(ipr, family, table) if _is_default(m) and _via(m, old_index)]
        for msg in mine:
            _copy_route(ipr, msg, table, old_index)
            routes.append(replace(_route_from_msg(msg, names, via=old_index), table=table))
        if not any(_is_default(m) for m in mine):
            continue
        for address in old_addrs:
            addr_family, host = _host(address)
            if addr_family == family:
                rule = SourceRule(src=host, table=table, priority=priority)
                _add_rule(ipr, rule)
                rules.append(rule)
    return rules, routes


def keep_source_routes(
    netns: str,
    old_ifname: str,
    old_addrs: Sequence[str],
    table: int,
    *,
    priority: int = SOURCE_RULE_PRIORITY,
) -> tuple[tuple[SourceRule, ...], tuple[Route, ...]]:
    """Pin the old addresses to the old interface: step 1 of :func:`switch_default_route`.

    Copies the old interface's routes into `table`, then adds ``from <old address>
    lookup <table>`` (IPv4 and IPv6). Call it before anything can put a default
    route out of another interface into the main table, above all before the CNI
    ADD of the incoming default network: its plugin installs its own default the
    moment the interface is up (IPv4: ahead of the pod's; IPv6: merged with it into
    one multipath route), and without these rules a reply from an old address
    would leave through the new interface until that route is removed. Idempotent;
    :func:`switch_default_route` with the same arguments picks the same state up.
    Returns the rules and the routes copied, sorted.
    """
    _check_table(table)
    with _rtnl(netns) as ipr:
        rules, routes = _keep(ipr, old_ifname, old_addrs, table, priority)
    return (
        tuple(sorted(set(rules), key=lambda r: (r.family, r.src))),
        tuple(sorted(set(routes), key=_route_order)),
    )


def switch_default_route(
    netns: str,
    new_ifname: str,
    new_gateways: Mapping[int, str | None] | Iterable[str],
    old_ifname: str,
    old_addrs: Sequence[str],
    table: int,
    *,
    priority: int = SOURCE_RULE_PRIORITY,
) -> SwitchRecord:
    """Move the pod's default route to `new_ifname`, make-before-break.

    `new_gateways` maps AF_INET / AF_INET6 to the gateway (None: device route), or
    is a list of gateway addresses, one per family. Only these families move; a
    family the new network does not serve keeps its default via the old interface.

    1. :func:`keep_source_routes`: copy the old interface's main-table routes (its
       default and its subnets) into `table`, then add ``from <old address> lookup
       <table>`` for every old address (IPv4 and IPv6) whose family has a default
       there: replies and established connections from the old address keep
       leaving through the old interface.
    2. Only then replace the main default in place with one via the new
       interface, and delete the other main defaults of those families.

    So at no moment can a packet from an old address be routed out of the new
    interface: before step 2 the main table does not send it there, after step 1
    the main table is not consulted for it. No link is set down. Calling it again
    (after a crash at any point) converges on the same state: the old routes are
    then found in `table`.
    """
    _check_table(table)
    if new_ifname == old_ifname:
        raise ValueError("the new and the old default interface are the same")
    gateways = _gateways_by_family(new_gateways)
    if not gateways:
        raise ValueError("no gateway given for the new default route")
    with _rtnl(netns) as ipr:
        new_index = _require_link(ipr, netns, new_ifname)
        rules, routes = _keep(ipr, old_ifname, old_addrs, table, priority)
        for family, gateway in gateways.items():
            _install_default(ipr, family, new_index, gateway)
        defaults = _main_defaults(ipr, _FAMILIES)
    # Sorted, so that a second run returns an equal record.
    return SwitchRecord(
        table=table,
        old_ifname=old_ifname,
        new_ifname=new_ifname,
        rules=tuple(sorted(set(rules), key=lambda r: (r.family, r.src))),
        routes=tuple(sorted(set(routes), key=_route_order)),
        defaults=tuple(sorted(defaults, key=_route_order)),
    )


def _route_order(route: Route) -> tuple[int, str, int, str]:
    return (route.family, route.dst, route.metric, route.gateway or "")


def remove_source_routes(netns: str, record: SwitchRecord, *, leaving: bool = True) -> list[str]:
    """Undo the source routing of a switch: its rules, and every route in its table.

    Call it once the old interface is leaving (drained or retired: `leaving`), or
    when the old interface carries the default again (a switch back), or when the
    switch did not happen (its new default failed): then nothing is retired.
    Without its rule a packet from an old address would follow the main default out
    of another interface, so when the old interface leaves, an old address still on
    an interface that does not carry its family's main default is retired first: it
    is deleted from that interface before the rule goes (its connections cannot
    survive without the rule anyway). Rules go before the table's routes. Whatever
    is already gone is skipped. Returns the addresses retired.
    """
    retired: list[str] = []
    with _rtnl(netns) as ipr:
        wanted = set(record.rules)
        for family in _FAMILIES:
            found = [r for r in _rules(ipr, family) if r in wanted or r.table == record.table]
            if leaving:
                retired += _retire_stranded(ipr, netns, family, found)
            for rule in found:
                _delete_rule(ipr, rule)
            for msg in _dump(ipr, family, record.table):
                _delete_route(ipr, msg)
    return retired


def _retire_stranded(
    ipr: rtnl.Rtnl, netns: str, family: int, rules: Sequence[SourceRule]
) -> list[str]:
    """Retire the rules' addresses that no main default goes out of, while the rules hold.

    First the sockets still bound to them are destroyed (their resets still leave
    through the old interface): IPv6 keeps sending from an address that is gone, so
    without this a socket that outlived the drain would follow the main default out
    of another interface. Then the addresses still on an interface are deleted.
    """
    sources = {str(ipaddress.ip_interface(r.src).ip) for r in rules}
    defaults = [m for m in _dump(ipr, family, MAIN_TABLE) if _is_default(m)]
    if not sources or not defaults:
        return []  # without a main default, a packet the rule no longer routes goes nowhere
    present = ipr.addresses(family)
    kept = {a.address for a in present if any(_via(m, a.index) for m in defaults)}
    retired = sources - kept
    if not retired:
        return []
    _destroy_sockets(netns, family, retired)
    if family == socket.AF_INET:  # and an IPv6 socket's IPv4 connections (v4-mapped)
        _destroy_sockets(netns, socket.AF_INET6, {f"::ffff:{a}" for a in retired})
    for addr in present:
        if addr.address not in retired:
            continue
        try:
            ipr.delete_address(addr)
        except NetlinkError as err:
            if err.code not in (*_GONE, errno.EADDRNOTAVAIL):
                raise
    return sorted(retired)


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_SOCK_DESTROY = 21
_ALL_STATES = 0xFFFFFFFF
_SOCKID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order); then if, cookie


def _diag_request(kind: int, flags: int, family: int, proto: int, sockid: bytes) -> bytes:
    body = struct.pack("=BBBBI", family, proto, 0, 0, _ALL_STATES) + sockid
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body


def _diag_messages(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of the replies to one request, up to DONE or the ACK."""
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                return
            yield kind, data[offset + 16 : offset + length]
            if kind in (rtnl.NLMSG_DONE, rtnl.NLMSG_ERROR):
                return
            offset += (length + 3) & ~3


def _destroy_sockets(netns: str, family: int, addresses: Collection[str]) -> int:
    """SOCK_DESTROY every TCP and UDP socket in the namespace bound to one of `addresses`."""
    packed = {socket.inet_pton(family, a) for a in addresses}
    width = 4 if family == socket.AF_INET else 16
    killed = 0
    sock = _socket_in_netns(_netns_path(netns), _NETLINK_SOCK_DIAG)
    sock.settimeout(5.0)  # the kernel answers at once; never let a lost reply hang a worker
    try:
        for proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
            sock.send(
                _diag_request(
                    _SOCK_DIAG_BY_FAMILY,
                    rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP,
                    family,
                    proto,
                    bytes(48),
                )
            )
            found = [
                payload[4:52]
                for kind, payload in _diag_messages(sock)
                if kind == _SOCK_DIAG_BY_FAMILY and payload[8 : 8 + width] in packed
            ]
            for sockid in found:
                sock.send(
                    _diag_request(
                        _SOCK_DESTROY, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, family, proto, sockid
                    )
                )
                for kind, payload in _diag_messages(sock):
                    if kind == rtnl.NLMSG_ERROR and struct.unpack_from("=i", payload)[0] == 0:
                        killed += 1
    finally:
        sock.close()
    return killed


# -- carrying a retired default's addresses (netshift.podip) ----------------------------

_IFA_F_NODAD = 0x02
_IFA_F_NOPREFIXROUTE = 0x200
# The agent's own namespace: the node's, for the host side of the pods' networks.
HOST_NETNS = "/proc/self/ns/net"


def carry_addresses(netns: str, ifname: str, addresses: Iterable[str]) -> list[str]:
    """Put each address as a host address (/32, /128) on `ifname`; return those added.

    No prefix route (the pod's routes stay as its networks made them) and no duplicate
    address detection (the address is this pod's, reserved in its old pool). Replies
    from it then follow the main table's default route, out of the default interface.
    """
    added: list[str] = []
    with _rtnl(netns) as ipr:
        index = _require_link(ipr, netns, ifname)
        for address in addresses:
            family, host = _host(address)
            ip, length = host.split("/")
            try:
                ipr.add_address(family, index, ip, int(length), _IFA_F_NODAD | _IFA_F_NOPREFIXROUTE)
            except NetlinkError as err:
                if err.code != errno.EEXIST:
                    raise
                continue
            added.append(host)
    return added


def host_routes_via(
    host_netns: str, addresses: Iterable[str], gateways: Iterable[str]
) -> list[Route]:
    """The node's routes that send each address to the pod: ``<address>/32 via <the pod's
    address of its family> dev <the link the node reaches that address through>``.

    Read only; LookupError when the node has no route to a gateway (or none of its family).
    """
    by_family = {_family_of(g.split("/")[0]): g.split("/")[0] for g in gateways}
    routes: list[Route] = []
    with _rtnl(host_netns) as ipr:
        names = ipr.links()
        for address in addresses:
            family, host = _host(address)
            gateway = by_family.get(family)
            if gateway is None:
                raise LookupError(f"no address of the family of {address} to route it through")
            # A connected route (bridge), or the node's own host route to the pod (ptp).
            oif = _link_path(ipr, family, ipaddress.ip_address(gateway))
            if oif is None or oif not in names:
                raise LookupError(f"the node has no link route to the pod's address {gateway}")
            routes.append(
                Route(dst=host, gateway=gateway, ifname=names[oif], metric=0, table=MAIN_TABLE)
            )
    return routes


def node_reaches(host_netns: str, addresses: Iterable[str]) -> set[str]:
    """Those of the addresses the node has a link route to (read only): a network whose host
    side has no address on the node (a bridge without a gateway) cannot carry another."""
    found: set[str] = set()
    with _rtnl(host_netns) as ipr:
        for address in addresses:
            ip = ipaddress.ip_interface(address).ip
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if _link_path(ipr, family, ip) is not None:
                found.add(str(ip))
    return found


def node_soliciting(host_netns: str, addresses: Iterable[str]) -> set[str]:
    """Those of the IPv6 addresses whose link on the node cannot solicit neighbours yet (read
    only): the node asks for a next hop's link-layer address from its link-local address on
    that link, and sends nothing while that address is tentative (duplicate address
    detection, about 1-2 s after a network's bridge or veth is made). A route to a carried
    address via the pod's new address would hold its packets until then."""
    waiting: set[str] = set()
    with _rtnl(host_netns) as ipr:
        ready = {
            a.index
            for a in ipr.addresses(socket.AF_INET6)
            if ipaddress.ip_address(a.address).is_link_local
            and not a.flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED)
        }
        for address in addresses:
            ip = ipaddress.ip_interface(address).ip
            if ip.version != 6:
                continue
            oif = _link_path(ipr, socket.AF_INET6, ip)
            if oif is not None and oif not in ready:
                waiting.add(str(ip))
    return waiting


# The metric of the node's old path to a carried IPv6 address while its replies move over:
# above the kernel's default (1024) for the new one, so that one carries the traffic.
_OLD_PATH_METRIC = 1536


def install_host_routes(host_netns: str, routes: Iterable[Route]) -> None:
    """Create or replace each route (onlink: the pod's address is the next hop on that link);
    an old path left beside an IPv6 one by :func:`bridge_host_routes` goes."""
    with _rtnl(host_netns) as ipr:
        for route in routes:
            oif = _require_link(ipr, host_netns, route.ifname or "")
            _put_host_route(ipr, route, oif, route.gateway)
            _drop_old_paths(ipr, route)


def _put_host_route(
    ipr: rtnl.Rtnl,
    route: Route,
    oif: int | None,
    via: str | None,
    priority: int | None = None,
    multipath: Sequence[tuple[int, str | None]] = (),
) -> None:
    """Create or replace the route to `route.dst` out of `oif`: via `via` (onlink), or, with
    None, straight on that link; or over each (link, gateway) of `multipath`."""
    ip, length = route.dst.split("/")
    ipr.route(
        "replace",
        rtnl.RouteSpec(
            family=route.family,
            dst=ip,
            dst_len=int(length),
            table=route.table,
            oif=oif,
            gateway=via,
            priority=priority,
            proto=_RTPROT_STATIC,
            scope=_RT_SCOPE_UNIVERSE if via or multipath else _RT_SCOPE_LINK,
            type=_RTN_UNICAST,
            flags=_RTNH_F_ONLINK if via else 0,
            multipath=multipath,
        ),
    )


def _drop_old_paths(ipr: rtnl.Rtnl, route: Route) -> None:
    ip, length = route.dst.split("/")
    for msg in _dump(ipr, route.family, route.table):
        if (msg.dst, msg.dst_len, msg.priority) == (ip, int(length), _OLD_PATH_METRIC):
            _delete_route(ipr, msg)


def bridge_host_routes(
    host_netns: str, routes: Iterable[Route], before: Sequence[Route] = ()
) -> None:
    """For the moment of a retirement: the node routes each address along its new path and
    still accepts the pod's replies along the old one.

    The pod's replies move from the old interface to the new one with one change in the pod,
    the node's route with another, and nothing orders the two. The old path is the route in
    `before` for the same address (it was carried already), else the link route to it.
    IPv4's reverse-path check (rp_filter) passes on any next hop's link, so each IPv4 route
    is one multipath route over both. IPv6's (ip6tables rpfilter) looks up the source with
    the packet's link as the preferred one and picks, of the routes to that prefix, the first
    through that link, but only one next hop of a multipath route: there the new path is the
    route and the old one a second route of a higher metric (which carries nothing).
    :func:`install_host_routes` then leaves the new path alone.
    """
    routes = list(routes)
    with _rtnl(host_netns) as ipr:
        for route in routes:
            ip = route.dst.split("/")[0]
            new = _require_link(ipr, host_netns, route.ifname or "")
            old: tuple[int, str | None] | None = None
            was = next((b for b in before if b.dst == route.dst and b != route), None)
            if was is not None:
                old_index = _link_index(ipr, was.ifname or "")
                if old_index is not None:
                    old = (old_index, was.gateway)
            else:
                link = _link_path(ipr, route.family, ipaddress.ip_address(ip))
                if link is not None and link != new:
                    old = (link, None)
            if route.family == socket.AF_INET6:
                _bridge_v6(ipr, route, new, old)
                continue
            hops: list[tuple[int, str | None]] = [(new, route.gateway)]
            if old is not None:
                hops.insert(0, old)
            _put_host_route(ipr, route, None, None, multipath=hops)


def _bridge_v6(ipr: rtnl.Rtnl, route: Route, new: int, old: tuple[int, str | None] | None) -> None:
    if old is not None:  # first, so that no moment is without either path
        _put_host_route(ipr, route, old[0], old[1], priority=_OLD_PATH_METRIC)
    _put_host_route(ipr, route, new, route.gateway)


def _link_path(
    ipr: rtnl.Rtnl, family: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> int | None:
    """The link of the most specific gateway-less main-table route to `address`, if any."""
    best: rtnl.RouteMsg | None = None
    for msg in _dump(ipr, family, MAIN_TABLE):
        if msg.oif is None or msg.gateway is not None:
            continue
        net = ipaddress.ip_network(f"{msg.dst or _ANY[family]}/{msg.dst_len}")
        if address in net and (best is None or msg.dst_len > best.dst_len):
            best = msg
    return best.oif if best is not None else None


def remove_host_routes(host_netns: str, routes: Iterable[Route]) -> int:
    """Delete each route if it is still exactly there (its link, its gateway); return how many.

    A route that now goes elsewhere (another pod was given the address later) is left alone.
    """
    removed = 0
    with _rtnl(host_netns) as ipr:
        names = ipr.links()
        for route in routes:
            ip, length = route.dst.split("/")
            for msg in _dump(ipr, route.family, route.table):
                if (msg.dst, msg.dst_len, msg.gateway) != (ip, int(length), route.gateway):
                    continue
                if msg.oif is None or names.get(msg.oif) != route.ifname:
                    continue
                removed += _delete_route(ipr, msg)
            _drop_old_paths(ipr, route)
    return removed


def delete_link(netns: str, ifname: str) -> bool:
    """Remove a leftover interface; False when it was not there."""
    with _rtnl(netns) as ipr:
        index = _link_index(ipr, ifname)
        if index is None:
            return False
        try:
            ipr.delete_link(index)
        except NetlinkError as err:
            if err.code in _GONE:
                return False
            raise
    return True
