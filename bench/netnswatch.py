"""When the kernel made a hot-plug's change in a pod's netns, for the benches."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from agent import netlink
from agent import rtnetlink as rtnl

_IFF_UP = 0x1


class NetnsWatch:
    """The time an interface came up with an address (`appear`) or was deleted in a netns.

    A netlink socket in the namespace, subscribed to link and address changes
    when this is made (so: before the PATCH it times); a thread stamps the
    message that completes the change. No polling: the time is the kernel's,
    give or take this thread's wake-up.
    """

    def __init__(self, netns: str, ifname: str, *, appear: bool) -> None:
        self.ifname = ifname
        self.appear = appear
        self.at: float | None = None
        groups = rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV6_IFADDR
        self._sock = netlink.monitor_socket(netns, groups)
        self._sock.settimeout(0.2)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"netns {ifname}", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> float | None:
        """The time (epoch seconds) of the change, None if it did not come within `timeout`."""
        self._thread.join(timeout)
        self._done.set()
        self._thread.join()
        return self.at

    def _run(self) -> None:
        index: int | None = None
        up = addressed = False
        try:
            while not self._done.is_set():
                try:
                    data = self._sock.recv(1 << 16)
                except TimeoutError:
                    continue
                now = time.time()
                for kind, msg in messages(data):
                    if kind in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK):
                        _family, _type, i, flags, _change = rtnl.IFINFOMSG.unpack_from(msg)
                        at = rtnl.attrs(msg, rtnl.IFINFOMSG.size, len(msg))
                        if at.get(rtnl.IFLA_IFNAME, b"").split(b"\0", 1)[0].decode() != self.ifname:
                            continue
                        if kind == rtnl.RTM_DELLINK:
                            if not self.appear:
                                self._stamp(now)
                            index, up, addressed = None, False, False
                            continue
                        index, up = i, bool(flags & _IFF_UP)
                    elif kind == rtnl.RTM_NEWADDR and index is not None:
                        addressed = addressed or rtnl.IFADDRMSG.unpack_from(msg)[4] == index
                    if self.appear and up and addressed:
                        self._stamp(now)
        finally:
            self._sock.close()

    def _stamp(self, now: float) -> None:
        if self.at is None:
            self.at = now
        self._done.set()


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + rtnl.NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = rtnl.NLMSG.unpack_from(data, offset)
        if length < rtnl.NLMSG.size:
            return
        yield kind, data[offset + rtnl.NLMSG.size : offset + length]
        offset += (length + 3) & ~3
