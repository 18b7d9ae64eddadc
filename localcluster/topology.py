"""Routing topologies for switch probes: where the clients sit, and who filters by source.

A pod's default network moves from one bridge network to another. What a client
sees depends on the routing around the pod, so a topology here is one of the
set-ups real clusters have:

- a client on the old network's own subnet (a leg on its bridge);
- a client on a subnet of its own, routed to the pod networks by the node;
- bridges that filter by source address (strict reverse-path filtering, as
  anti-spoofing CNIs do): ``rp_filter=1`` for IPv4 and an ``ip6tables -t raw
  ... -m rpfilter --invert -j DROP`` rule for IPv6, both scoped to the bridge;
- IPv4, IPv6 or both on every network.

The node is either a network namespace of its own (``router``; node tests: then
nothing at all happens on the host) or the host itself (``router=None``; the
local cluster, whose CNI bridges live on the host). On the host every change is
scoped to the topology's own links and iptables chain and undone by
:meth:`Topology.delete`; forwarding is switched on per link (IPv4 ``forwarding``,
IPv6 ``force_forwarding``), never globally, and nothing is routed to any address
outside the topology's subnets.

:meth:`Topology.leaked` counts packets that arrived on a bridge with a source
address from another network's subnet: a packet from an old address that took
the new interface. It is exact, and the tests assert it is 0.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import os
import socket
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

V4 = socket.AF_INET
V6 = socket.AF_INET6
_counter = itertools.count()


def _run(netns: str | None, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _ip(netns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(None, "ip", *(["-n", netns] if netns else []), *args, check=check)


def _sysctl(netns: str | None, key: str, value: str) -> None:
    _run(netns, "sysctl", "-q", "-w", f"{key}={value}")


def bridge_mac(name: str) -> str:
    """A fixed, locally administered MAC for a bridge the host routes through.

    A Linux bridge without an address of its own takes its lowest port's, so it
    changes as pods come and go; every pod's cached MAC of the gateway is then
    stale, and what the pods send to it is lost until they resolve it again.
    """
    digest = hashlib.sha256(name.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


@dataclass(frozen=True)
class Subnet:
    """A network's addressing: an IPv4 /24 and/or an IPv6 /64; the gateway is host 1."""

    v4: str | None = None  # "10.236.7.0/24"
    v6: str | None = None  # "fd36:1234:7::/64"

    @property
    def families(self) -> list[int]:
        return [f for f, s in ((V4, self.v4), (V6, self.v6)) if s]

    def cidr(self, family: int) -> str:
        value = self.v4 if family == V4 else self.v6
        if value is None:
            raise ValueError(f"subnet {self} has no family {family}")
        return value

    def host(self, index: int, family: int) -> str:
        return str(ipaddress.ip_network(self.cidr(family))[index])

    def host_cidr(self, index: int, family: int) -> str:
        return f"{self.host(index, family)}/{ipaddress.ip_network(self.cidr(family)).prefixlen}"

    def gateway(self, family: int) -> str:
        return self.host(1, family)

    def ranges(self) -> list[list[dict[str, str]]]:
        """host-local IPAM ``ranges``: one range set per family."""
        return [[{"subnet": self.cidr(f)}] for f in self.families]


def subnets(n: int, families: Collection[int] = (V4, V6), second: int = 236) -> list[Subnet]:
    """`n` fresh subnets, told apart from other test runs by this process's id."""
    pid = os.getpid()
    out = []
    for _ in range(n):
        third = (pid * 7 + next(_counter)) % 250 + 1
        out.append(
            Subnet(
                v4=f"10.{second}.{third}.0/24" if V4 in families else None,
                v6=f"fd{second % 100:02d}:{pid % 65536:x}:{third}::/64" if V6 in families else None,
            )
        )
    return out


@dataclass
class Topology:
    """Bridges with their gateways on the node, clients around them, filters on them."""

    name: str  # short prefix for the names of links, namespaces and the iptables chain
    bridges: dict[str, Subnet]  # bridge -> its subnet (gateway address on the bridge)
    strict: frozenset[str] = frozenset()  # bridges that drop packets failing a reverse-path check
    routed: Subnet | None = None  # a client namespace on this subnet, routed by the node
    same_subnet: str | None = None  # a client namespace with a leg on this bridge
    router: str | None = None  # the node's netns; None: the host
    made_router: bool = field(default=False, init=False)

    # -- names -------------------------------------------------------------------------

    @property
    def routed_client(self) -> str:
        return f"{self.name}rc"

    @property
    def same_client(self) -> str:
        return f"{self.name}sc"

    @property
    def chain(self) -> str:
        return f"NSLEAK-{self.name}"[:28]

    def client_address(self, family: int, *, routed: bool = True) -> str:
        """The address a client uses (and a pod sees as the peer)."""
        if routed:
            assert self.routed is not None
            return self.routed.host(2, family)
        assert self.same_subnet is not None
        return self.bridges[self.same_subnet].host(250, family)

    # -- building ----------------------------------------------------------------------

    def create(self) -> Topology:
        try:
            self._create()
        except BaseException:
            self.delete()
            raise
        return self

    def _families(self) -> set[int]:
        return {f for s in self.bridges.values() for f in s.families}

    def _forward(self, link: str) -> None:
        if self.router is not None:
            return  # its own namespace forwards on every link
        _sysctl(None, f"net.ipv4.conf.{link}.forwarding", "1")
        if V6 in self._families():
            _sysctl(None, f"net.ipv6.conf.{link}.force_forwarding", "1")

    def _create(self) -> None:
        r = self.router
        if r is not None and _ip(None, "netns", "pid", r, check=False).returncode != 0:
            if not os.path.exists(f"/var/run/netns/{r}"):
                _ip(None, "netns", "add", r)
                self.made_router = True
            _ip(r, "link", "set", "lo", "up")
            _sysctl(r, "net.ipv4.ip_forward", "1")
            _sysctl(r, "net.ipv6.conf.all.forwarding", "1")
            _sysctl(r, "net.ipv4.conf.all.rp_filter", "0")
        for bridge, subnet in self.bridges.items():
            if _ip(r, "link", "show", bridge, check=False).returncode != 0:
                _ip(r, "link", "add", bridge, "type", "bridge")
            _ip(r, "link", "set", bridge, "address", bridge_mac(bridge), "up")
            for family in subnet.families:
                _ip(r, "addr", "replace", subnet.host_cidr(1, family), "dev", bridge, "nodad")
            self._forward(bridge)
            if bridge in self.strict:
                _sysctl(r, f"net.ipv4.conf.{bridge}.rp_filter", "1")
                if V6 in subnet.families:
                    _run(r, *self._rpfilter6(bridge, "-A"))
        self._leak_counters()
        if self.routed is not None:
            self._routed_client(self.routed)
        if self.same_subnet is not None:
            self._same_client(self.same_subnet)

    def _rpfilter6(self, bridge: str, op: str) -> list[str]:
        return [
            "ip6tables",
            "-t",
            "raw",
            op,
            "PREROUTING",
            "-i",
            bridge,
            "-m",
            "rpfilter",
            "--invert",
            "-j",
            "DROP",
        ]

    def _leak_counters(self) -> None:
        for tool, family in (("iptables", V4), ("ip6tables", V6)):
            if family not in self._families():
                continue
            _run(self.router, tool, "-t", "raw", "-N", self.chain)
            for bridge in self.bridges:
                _run(
                    self.router,
                    tool,
                    "-t",
                    "raw",
                    "-I",
                    "PREROUTING",
                    "-i",
                    bridge,
                    "-j",
                    self.chain,
                )
                for other, theirs in self.bridges.items():
                    if other != bridge and family in theirs.families:
                        _run(
                            self.router,
                            tool,
                            "-t",
                            "raw",
                            "-A",
                            self.chain,
                            "-i",
                            bridge,
                            "-s",
                            theirs.cidr(family),
                            "-j",
                            "RETURN",
                        )

    def _routed_client(self, subnet: Subnet) -> None:
        r, ns = self.router, self.routed_client
        node_end = f"{self.name}rn"
        _ip(None, "netns", "add", ns)
        _ip(ns, "link", "set", "lo", "up")
        _exact_pings(ns)
        _ip(r, "link", "add", node_end, "type", "veth", "peer", "name", "c0", "netns", ns)
        for family in subnet.families:
            _ip(r, "addr", "add", subnet.host_cidr(1, family), "dev", node_end, "nodad")
            _ip(ns, "addr", "add", subnet.host_cidr(2, family), "dev", "c0", "nodad")
        _ip(r, "link", "set", node_end, "up")
        _ip(ns, "link", "set", "c0", "up")
        self._forward(node_end)
        for family in subnet.families:
            flag = "-4" if family == V4 else "-6"
            _ip(ns, flag, "route", "add", "default", "via", subnet.gateway(family), "dev", "c0")

    def _same_client(self, bridge: str) -> None:
        r, ns = self.router, self.same_client
        node_end = f"{self.name}sn"
        subnet = self.bridges[bridge]
        _ip(None, "netns", "add", ns)
        _ip(ns, "link", "set", "lo", "up")
        _exact_pings(ns)
        _ip(r, "link", "add", node_end, "type", "veth", "peer", "name", "c0", "netns", ns)
        _ip(r, "link", "set", node_end, "master", bridge, "up")
        for family in subnet.families:
            _ip(ns, "addr", "add", subnet.host_cidr(250, family), "dev", "c0", "nodad")
        _ip(ns, "link", "set", "c0", "up")

    def allow(self, address: str, bridge: str) -> None:
        """Packets from `address` on `bridge` are expected there (a pod IP an `oldDefault:
        Remove` carries through that bridge's network): not counted by :meth:`leaked`."""
        tool = "ip6tables" if ":" in address else "iptables"
        rule = ["-i", bridge, "-s", address, "-j", "ACCEPT"]
        if _run(self.router, tool, "-t", "raw", "-C", self.chain, *rule, check=False).returncode:
            _run(self.router, tool, "-t", "raw", "-I", self.chain, *rule)

    # -- reading -----------------------------------------------------------------------

    def leaked(self) -> dict[str, int]:
        """Per bridge: packets that arrived with a source from another network's subnet."""
        out = dict.fromkeys(self.bridges, 0)
        for tool, family in (("iptables", V4), ("ip6tables", V6)):
            if family not in self._families():
                continue
            listing = _run(self.router, tool, "-t", "raw", "-L", self.chain, "-v", "-x", "-n")
            for line in listing.stdout.splitlines():
                words = line.split()
                if (
                    len(words) >= 6
                    and words[0].isdigit()
                    and words[2] == "RETURN"
                    and words[-4] != "*"
                ):
                    # pkts bytes target [prot] opt in out source destination
                    bridge = words[-4]
                    if bridge in out:
                        out[bridge] += int(words[0])
        return out

    # -- tearing down ------------------------------------------------------------------

    def delete(self) -> None:
        r = self.router
        for ns in (self.routed_client, self.same_client):
            _ip(None, "netns", "del", ns, check=False)
        for end in (f"{self.name}rn", f"{self.name}sn"):
            _ip(r, "link", "del", end, check=False)
        for tool in ("iptables", "ip6tables"):
            self._delete_chain(tool)
        for bridge in self.strict:
            while _run(r, *self._rpfilter6(bridge, "-D"), check=False).returncode == 0:
                pass
        for bridge in self.bridges:
            _ip(r, "link", "del", bridge, check=False)
        if self.made_router and r is not None:
            _ip(None, "netns", "del", r, check=False)

    def _delete_chain(self, tool: str) -> None:
        """The counting chain of `tool` (iptables or ip6tables), unhooked from every bridge."""
        r = self.router
        if _run(r, tool, "-t", "raw", "-S", self.chain, check=False).returncode != 0:
            return
        hook = ("-t", "raw", "-D", "PREROUTING", "-i")
        for bridge in self.bridges:
            while _run(r, tool, *hook, bridge, "-j", self.chain, check=False).returncode == 0:
                pass
        _run(r, tool, "-t", "raw", "-F", self.chain, check=False)
        _run(r, tool, "-t", "raw", "-X", self.chain, check=False)


def _exact_pings(ns: str) -> None:
    """Let ping use ICMP datagram sockets in the client namespace (ping_group_range is per
    namespace): the kernel hands each one only its own echoes. On raw sockets, the default
    for root, every ping in the namespace receives every echo, and with several pings at
    10 ms the receive buffers overflow (IPv6 above all): echoes that came back would be
    counted as lost."""
    _sysctl(ns, "net.ipv4.ping_group_range", "0 2147483647")


def pod_addresses(netns: str, ifname: str, families: Sequence[int] = (V4, V6)) -> list[str]:
    """Global addresses of `ifname` in `netns`, IPv4 first."""
    out = []
    for family in families:
        flag = "-4" if family == V4 else "-6"
        listing = _ip(netns, flag, "-o", "addr", "show", "dev", ifname, "scope", "global")
        for line in listing.stdout.splitlines():
            words = line.split()
            out.append(words[words.index("inet" if family == V4 else "inet6") + 1].split("/")[0])
    return out
