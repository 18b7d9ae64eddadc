"""The rtnetlink wire format the agent speaks: dumps and requests on a raw NETLINK_ROUTE socket.

Only what `agent.netlink` needs: dumps of links, addresses, routes and rules, and
the requests that change routes, rules, addresses and links, each acknowledged
(NLM_F_ACK) before it returns. A socket is given, never made: which namespace it
lives in is `agent.netlink`'s business. pyroute2 did this before; its per-request
cost (an event loop run per call, its message classes) was most of a default
switch's time, ~10x the kernel's.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_OPERSTATE = 1, 3, 4, 16
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
# Multicast groups (the bit masks of bind(2)): link changes, IPv4 and IPv6 address changes.
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_MULTIPATH, RTA_TABLE = 9, 15
FRA_SRC, FRA_PRIORITY, FRA_TABLE = 2, 6, 15
FR_ACT_TO_TBL = 1
RT_TABLE_COMPAT = 252  # the header's table when the real one (RTA_TABLE) is above 255

NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid
RTATTR = struct.Struct("=HH")  # length, type
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
RTNEXTHOP = struct.Struct("=HBBi")  # length, flags, hops, ifindex
FIB_RULE_HDR = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, -, -, action, flags

_RECV = 1 << 16


class NetlinkError(OSError):
    """The kernel refused a request; ``code`` is the errno (as pyroute2's NetlinkError had)."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(code, f"{what}: {os.strerror(code)}")
        self.code = code


def attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The attributes in data[offset:end], by type (the first of a repeated one)."""
    found: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        found.setdefault(kind & 0x3FFF, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return found


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    raw = RTATTR.pack(4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def dump(sock: socket.socket, kind: int, body: bytes, reply: int) -> Iterator[bytes]:
    """The payloads of one dump's `reply` messages. Consume it all before the next request."""
    sock.send(NLMSG.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
    while True:
        data = sock.recv(_RECV)
        offset = 0
        while offset + 16 <= len(data):
            length, got, _flags, _seq, _pid = NLMSG.unpack_from(data, offset)
            if length < 16 or got == NLMSG_DONE:
                return
            if got == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, offset + 16)[0]
                if code:
                    raise NetlinkError(code, "netlink dump")
                return
            if got == reply:
                yield data[offset + 16 : offset + length]
            offset += (length + 3) & ~3


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack("=I", raw[:4])[0] if raw is not None and len(raw) >= 4 else None


def _ip(family: int, raw: bytes | None) -> str | None:
    return socket.inet_ntop(family, raw) if raw else None


def _pton(address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    return ip.packed


Hop = tuple[int, str | None, int]  # (oif, gateway, flags) of one next hop


@dataclass(frozen=True)
class RouteMsg:
    """A route as dumped: its header, and the attributes the agent reads."""

    family: int
    dst_len: int
    src_len: int
    table: int  # RTA_TABLE when present (tables above 255), else the header's
    proto: int
    scope: int
    type: int
    flags: int
    dst: str | None
    gateway: str | None
    oif: int | None
    priority: int
    prefsrc: str | None
    multipath: tuple[Hop, ...]  # RTA_MULTIPATH's next hops; () for a single-path route


def _multipath(family: int, raw: bytes) -> tuple[Hop, ...]:
    hops: list[Hop] = []
    offset = 0
    while offset + RTNEXTHOP.size <= len(raw):
        length, flags, _hops, ifindex = RTNEXTHOP.unpack_from(raw, offset)
        if length < RTNEXTHOP.size:
            break
        inner = attrs(raw, offset + RTNEXTHOP.size, offset + length)
        hops.append((ifindex, _ip(family, inner.get(RTA_GATEWAY)), flags))
        offset += (length + 3) & ~3
    return tuple(hops)


def parse_route(msg: bytes) -> RouteMsg:
    family, dst_len, src_len, _tos, table, proto, scope, kind, flags = RTMSG.unpack_from(msg)
    at = attrs(msg, RTMSG.size, len(msg))
    oif = at.get(RTA_OIF)
    return RouteMsg(
        family=family,
        dst_len=dst_len,
        src_len=src_len,
        table=_u32(at.get(RTA_TABLE)) or table,
        proto=proto,
        scope=scope,
        type=kind,
        flags=flags,
        dst=_ip(family, at.get(RTA_DST)),
        gateway=_ip(family, at.get(RTA_GATEWAY)),
        oif=struct.unpack("=i", oif[:4])[0] if oif else None,
        priority=_u32(at.get(RTA_PRIORITY)) or 0,
        prefsrc=_ip(family, at.get(RTA_PREFSRC)),
        multipath=_multipath(family, at[RTA_MULTIPATH]) if RTA_MULTIPATH in at else (),
    )


@dataclass(frozen=True)
class RuleMsg:
    family: int
    src: str | None  # FRA_SRC, without its length
    src_len: int
    table: int
    priority: int


@dataclass(frozen=True)
class AddrMsg:
    family: int
    index: int
    address: str  # IFA_LOCAL, else IFA_ADDRESS
    prefixlen: int
    flags: int = 0  # IFA_FLAGS (all 32 bits) when present, else the header's 8


@dataclass(frozen=True)
class RouteSpec:
    """What a route request says; None leaves an attribute out."""

    family: int
    dst_len: int
    table: int
    dst: str | None = None
    gateway: str | None = None
    oif: int | None = None
    priority: int | None = None
    prefsrc: str | None = None
    proto: int = 0
    scope: int = 0
    type: int = 0
    flags: int = 0
    multipath: Sequence[tuple[int, str | None]] = ()  # (oif, gateway) per next hop


def _route_body(spec: RouteSpec) -> bytes:
    header_table = spec.table if spec.table < 256 else RT_TABLE_COMPAT
    body = RTMSG.pack(
        spec.family,
        spec.dst_len,
        0,
        0,
        header_table,
        spec.proto,
        spec.scope,
        spec.type,
        spec.flags,
    )
    body += attr(RTA_TABLE, struct.pack("=I", spec.table))
    if spec.dst is not None:
        body += attr(RTA_DST, _pton(spec.dst))
    if spec.gateway is not None:
        body += attr(RTA_GATEWAY, _pton(spec.gateway))
    if spec.oif is not None:
        body += attr(RTA_OIF, struct.pack("=i", spec.oif))
    if spec.priority is not None:
        body += attr(RTA_PRIORITY, struct.pack("=I", spec.priority))
    if spec.prefsrc is not None:
        body += attr(RTA_PREFSRC, _pton(spec.prefsrc))
    if spec.multipath:
        hops = b""
        for oif, gateway in spec.multipath:
            inner = attr(RTA_GATEWAY, _pton(gateway)) if gateway else b""
            hops += RTNEXTHOP.pack(RTNEXTHOP.size + len(inner), 0, 0, oif) + inner
        body += attr(RTA_MULTIPATH, hops)
    return body


class Rtnl:
    """Dumps and acknowledged requests on one NETLINK_ROUTE socket (owned: closed by close())."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = 1

    def close(self) -> None:
        self.sock.close()

    # -- dumps -------------------------------------------------------------------------

    def links(self) -> dict[int, str]:
        """Interface index -> name."""
        names: dict[int, str] = {}
        for msg in dump(self.sock, RTM_GETLINK, IFINFOMSG.pack(0, 0, 0, 0, 0), RTM_NEWLINK):
            index = IFINFOMSG.unpack_from(msg)[2]
            raw = attrs(msg, IFINFOMSG.size, len(msg)).get(IFLA_IFNAME, b"")
            names[index] = raw.split(b"\0", 1)[0].decode()
        return names

    def routes(self, family: int) -> list[RouteMsg]:
        """Every route of the family, all tables."""
        body = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return [
            parse_route(m)
            for m in dump(self.sock, RTM_GETROUTE, body, RTM_NEWROUTE)
            if m[0] == family
        ]

    def rules(self, family: int) -> list[RuleMsg]:
        found: list[RuleMsg] = []
        body = FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for msg in dump(self.sock, RTM_GETRULE, body, RTM_NEWRULE):
            fam, _dst_len, src_len, _tos, table, _r1, _r2, _action, _flags = (
                FIB_RULE_HDR.unpack_from(msg)
            )
            if fam != family:
                continue
            at = attrs(msg, FIB_RULE_HDR.size, len(msg))
            found.append(
                RuleMsg(
                    family=fam,
                    src=_ip(fam, at.get(FRA_SRC)),
                    src_len=src_len,
                    table=_u32(at.get(FRA_TABLE)) or table,
                    priority=_u32(at.get(FRA_PRIORITY)) or 0,
                )
            )
        return found

    def addresses(self, family: int) -> list[AddrMsg]:
        found: list[AddrMsg] = []
        body = IFADDRMSG.pack(family, 0, 0, 0, 0)
        for msg in dump(self.sock, RTM_GETADDR, body, RTM_NEWADDR):
            fam, prefixlen, hdr_flags, _scope, index = IFADDRMSG.unpack_from(msg)
            at = attrs(msg, IFADDRMSG.size, len(msg))
            # For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
            # point-to-point links); IPv6 only sets IFA_ADDRESS unless a peer is configured.
            address = _ip(fam, at.get(IFA_LOCAL) or at.get(IFA_ADDRESS))
            if fam == family and address is not None:
                flags = _u32(at.get(IFA_FLAGS))
                found.append(
                    AddrMsg(fam, index, address, prefixlen, hdr_flags if flags is None else flags)
                )
        return found

    # -- requests --------------------------------------------------------------------------

    def route(self, cmd: str, spec: RouteSpec) -> None:
        """``replace`` (create or replace) or ``del`` one route."""
        if cmd == "replace":
            self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, _route_body(spec), cmd)
        elif cmd == "del":
            self._request(RTM_DELROUTE, 0, _route_body(spec), cmd)
        else:
            raise ValueError(f"route command {cmd!r}")

    def rule(
        self, cmd: str, family: int, src: str, src_len: int, table: int, priority: int
    ) -> None:
        """``add`` or ``del`` the rule ``from <src>/<src_len> lookup <table> priority <p>``."""
        body = FIB_RULE_HDR.pack(
            family, 0, src_len, 0, table if table < 256 else 0, 0, 0, FR_ACT_TO_TBL, 0
        )
        body += attr(FRA_SRC, _pton(src))
        body += attr(FRA_PRIORITY, struct.pack("=I", priority))
        body += attr(FRA_TABLE, struct.pack("=I", table))
        if cmd == "add":
            self._request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, body, "rule add")
        elif cmd == "del":
            self._request(RTM_DELRULE, 0, body, "rule del")
        else:
            raise ValueError(f"rule command {cmd!r}")

    def delete_address(self, addr: AddrMsg) -> None:
        body = IFADDRMSG.pack(addr.family, addr.prefixlen, 0, 0, addr.index)
        packed = _pton(addr.address)
        body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        self._request(RTM_DELADDR, 0, body, "address del")

    def add_address(
        self, family: int, index: int, address: str, prefixlen: int, flags: int
    ) -> None:
        """Add an address to interface `index` (``ip address add``); EEXIST when it is there."""
        body = IFADDRMSG.pack(family, prefixlen, flags & 0xFF, 0, index)
        packed = _pton(address)
        body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        body += attr(IFA_FLAGS, struct.pack("=I", flags))
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, "address add")

    def delete_link(self, index: int) -> None:
        self._request(RTM_DELLINK, 0, IFINFOMSG.pack(0, 0, index, 0, 0), "link del")

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """Send one request and wait for its acknowledgement; NetlinkError if refused."""
        self._seq += 1
        seq = self._seq
        header = NLMSG.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(_RECV)
            offset = 0
            while offset + 16 <= len(data):
                length, got, _flags, got_seq, _pid = NLMSG.unpack_from(data, offset)
                if length < 16:
                    break
                if got == NLMSG_ERROR and got_seq == seq:
                    code = -struct.unpack_from("=i", data, offset + 16)[0]
                    if code:
                        raise NetlinkError(code, what)
                    return
                offset += (length + 3) & ~3
