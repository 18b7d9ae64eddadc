"""Probe traffic for the demo, the switch tests and bench/rollout.py.

A *client namespace* is a network namespace of its own, plugged by a veth into
a network's bridge, from which pings and a long-lived TCP stream reach pods.
Everything stays inside namespaces this code creates and the bridges netshift's
test networks use; nothing is routed anywhere else.

Probes count exactly: `SeqPing` by sequence number, `Stream` echo by echo with a
short timeout, so that a stall is a failure. Both run in threads of this
process with sockets opened inside the namespaces: no helper process whose
start-up could race the probe.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 0.01
_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class ClientNetns:
    """A namespace with one leg (veth) on each given bridge, addressed from that bridge's subnet."""

    name: str
    legs: list[tuple[str, str]]  # (bridge, "address/prefix")

    def create(self) -> None:
        self.delete()
        _ip("netns", "add", self.name)
        _ip("-n", self.name, "link", "set", "lo", "up")
        for i, (bridge, cidr) in enumerate(self.legs):
            if _ip("link", "show", bridge, check=False).returncode != 0:
                # Not made by a CNI ADD yet; the bridge plugin adopts an existing bridge.
                _ip("link", "add", bridge, "type", "bridge")
                _ip("link", "set", bridge, "up")
            host_end = f"{self.name[:9]}h{i}"
            inner = f"c{i}"
            _ip("link", "add", host_end, "type", "veth", "peer", "name", inner, "netns", self.name)
            _ip("link", "set", host_end, "master", bridge, "up")
            _ip("-n", self.name, "addr", "add", cidr, "dev", inner)
            _ip("-n", self.name, "link", "set", inner, "up")

    def delete(self) -> None:
        for i in range(len(self.legs)):
            _ip("link", "del", f"{self.name[:9]}h{i}", check=False)
        _ip("netns", "del", self.name, check=False)

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


class Ping:
    """`ping -i 0.01` from a namespace until stopped; counts sent and lost."""

    def __init__(self, netns: str, target: str, interval: float = INTERVAL) -> None:
        self.target = target
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "ping",
                "-n",
                "-q",
                "-i",
                str(interval),
                "-W",
                "1",
                target,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.sent = self.received = 0

    def stop(self) -> tuple[int, int]:
        """(sent, lost)."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out or "")
        if m:
            self.sent, self.received = int(m.group(1)), int(m.group(2))
        return self.sent, self.sent - self.received


class SeqPing:
    """`ping -i 0.01` from a namespace, counting lost echoes exactly by sequence number.

    A lost echo is a sequence number missing between the first and the last echo
    received: no deadline decides, so an echo still in flight when the probe stops
    is not counted. Call :meth:`wait_first` before the event under test (IPv6
    answers only once duplicate address detection is over) and :meth:`settle`
    after it, so that the last echo counted was sent after the event.
    """

    def __init__(
        self,
        netns: str,
        target: str,
        interval: float = INTERVAL,
        *,
        argv: list[str] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        """Ping from `netns`; or run `argv` (a ping elsewhere, e.g. `kubectl exec` into a
        container) and stop it with `on_stop` besides SIGINT."""
        self.netns = netns
        self.target = target
        self.interval = interval
        self._seen: set[int] = set()
        self.arrived: dict[int, float] = {}  # seq -> time.monotonic() its echo was read
        self._sent = 0
        self._cond = threading.Condition()
        self._on_stop = on_stop
        command = ["ip", "netns", "exec", netns, "ping", "-n", "-i", str(interval), "-W", "1"]
        self.proc = subprocess.Popen(
            argv or [*command, target],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"(?:icmp_)?seq=(\d+) ttl=", line)  # iputils; busybox
            if m:
                with self._cond:
                    self._seen.add(int(m.group(1)))
                    self.arrived[int(m.group(1))] = time.monotonic()
                    self._cond.notify_all()

    def _wait(self, ok: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(ok, timeout)

    def wait_first(self, timeout: float = 10.0) -> bool:
        """Wait for a first echo; True once there is one."""
        return self._wait(lambda: bool(self._seen), timeout)

    def settle(self, echoes: int = 20, timeout: float = 10.0) -> bool:
        """Wait until `echoes` more echoes came back (sent after this call)."""
        with self._cond:
            mark = max(self._seen, default=0)
        return self._wait(lambda: max(self._seen, default=0) >= mark + echoes, timeout)

    def reset(self) -> None:
        """Count from the next echo on: what came before was a warm-up."""
        with self._cond:
            self._seen.clear()
            self.arrived.clear()

    def lost(self) -> list[int]:
        """Sequence numbers missing so far between the first and the last echo."""
        with self._cond:
            if not self._seen:
                return []
            return sorted(set(range(min(self._seen), max(self._seen) + 1)) - self._seen)

    def lost_at(self) -> list[float]:
        """When each lost echo was due (time.monotonic()): between the echoes around it."""
        with self._cond:
            arrived = dict(self.arrived)
        times = []
        for seq in self.lost():
            before = max(s for s in arrived if s < seq)
            after = min(s for s in arrived if s > seq)
            t0, t1 = arrived[before], arrived[after]
            times.append(t0 + (t1 - t0) * (seq - before) / (after - before))
        return times

    def stop(self) -> tuple[int, list[int]]:
        """(echoes counted, lost sequence numbers)."""
        if self._on_stop is not None:
            self._on_stop()
        self.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        lost = self.lost()
        with self._cond:
            counted = (max(self._seen) - min(self._seen) + 1) if self._seen else 0
        return counted, lost


# The ping a client container runs (`kubectl exec POD -- python3 -c PINGER TARGET INTERVAL`),
# with output SeqPing reads. Not busybox's ping: that one sets its socket's receive buffer
# to about 14 KiB, 18 echoes. When neighbour discovery holds a flow's first echoes (the next
# solicitation is a second later), the held echoes come back together and the socket drops
# every one past the 18th: counted as lost although the network delivered them. This one
# receives on an ICMP datagram socket (only its own echoes; needs net.ipv4.ping_group_range
# in the pod) with a buffer that holds such a burst, and the kernel counts what it still
# drops (SO_RXQ_OVFL, printed at the end).
PINGER = r"""
import select, signal, socket, struct, sys, time
target, interval = sys.argv[1], float(sys.argv[2])
six = ":" in target
family, proto, request, reply = (
    (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, 129) if six
    else (socket.AF_INET, socket.IPPROTO_ICMP, 8, 0))
RXQ_OVFL = 40
sock = socket.socket(family, socket.SOCK_DGRAM, proto)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.setsockopt(socket.SOL_SOCKET, RXQ_OVFL, 1)
sock.connect((target, 0))
stopped = []
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stopped.append(True))
sent, dropped, due = {}, 0, time.monotonic()
print(f"PING {target}", flush=True)
while not stopped:
    now = time.monotonic()
    if now >= due:
        sent[len(sent)] = now
        sock.send(struct.pack("!BBHHH", request, 0, 0, 0, (len(sent) - 1) & 0xFFFF) + bytes(48))
        due += interval
        continue
    if not select.select([sock], [], [], due - now)[0]:
        continue
    data, ancillary, _, _ = sock.recvmsg(2048, 64)
    for level, kind, value in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, RXQ_OVFL):
            dropped = struct.unpack("=I", value[:4])[0]
    if len(data) < 8 or data[0] != reply:
        continue
    last = len(sent) - 1
    seq = last - ((last - struct.unpack("!H", data[6:8])[0]) & 0xFFFF)
    took = (time.monotonic() - sent.get(seq, now)) * 1000
    print(f"{len(data)} bytes from {target}: seq={seq} ttl=- time={took:.3f} ms", flush=True)
print(f"--- {target}: {len(sent)} sent, socket dropped {dropped}", flush=True)
"""


def container_ping_argv(
    target: str, interval: float = INTERVAL, python: str = "python3"
) -> list[str]:
    """The command of a client container's ping to `target` (see PINGER)."""
    return [python, "-c", PINGER, target, str(interval)]


def socket_in(netns: str, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket made inside network namespace `netns` (a name under /var/run/netns or a path)."""
    path = netns if "/" in netns else f"/var/run/netns/{netns}"
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_open() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns {path}: {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind))
        except BaseException as err:  # handed to the caller's thread
            failed.append(err)

    worker = threading.Thread(target=enter_and_open, daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]


class Stream:
    """A TCP echo stream between two namespaces, in threads of this process.

    The server listens on `host` in `server_netns`; the client in `client_netns`
    connects (from `source` when given), then sends a numbered message every
    `interval` and waits at most `timeout` for its echo: a stall is a failure.
    With `server_netns` None the client connects to an echo server that is
    already there (e.g. a container's) on `port`.
    """

    def __init__(
        self,
        server_netns: str | None,
        client_netns: str,
        host: str,
        *,
        port: int = 0,
        source: str | None = None,
        timeout: float = 1.0,
        interval: float = 0.02,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.timeout = timeout
        self.interval = interval
        self.sent = self.echoed = 0
        self.error = ""
        self._stop = threading.Event()
        self._srv: socket.socket | None = None
        if server_netns is not None:
            self._srv = socket_in(server_netns, family)
            self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._srv.bind((host, port))
            self._srv.listen(4)
            port = self._srv.getsockname()[1]
            threading.Thread(target=self._serve, args=(self._srv,), daemon=True).start()
        self._cli = socket_in(client_netns, family)
        if source is not None:
            self._cli.bind((source, 0))
        self._cli.settimeout(max(timeout, 5.0))  # the first neighbour discovery may take a while
        self._cli.connect((host, port))
        self._cli.settimeout(timeout)
        self.local = self._cli.getsockname()[0]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _serve(srv: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn, _ = srv.accept()
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msg = f"{self.sent:012d}".encode()
                self._cli.sendall(msg)
                self.sent += 1
                got = b""
                while len(got) < len(msg):
                    chunk = self._cli.recv(len(msg) - len(got))
                    if not chunk:
                        raise ConnectionError("closed by peer")
                    got += chunk
                if got != msg:
                    raise ConnectionError(f"echo mismatch at {self.sent}")
                self.echoed += 1
                self._stop.wait(self.interval)
        except OSError as err:
            what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            self.error = f"{what} after {self.echoed} echoes ({self.retransmits()} retransmits)"

    def retransmits(self) -> int:
        """TCP segments the client retransmitted (tcpi_total_retrans); -1 if unknown."""
        try:
            info = self._cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        except OSError:
            return -1
        return int.from_bytes(info[100:104], sys.byteorder) if len(info) >= 104 else -1

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.error

    def stop(self) -> dict[str, object]:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 2)
        for sock in (self._cli, self._srv):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        return {
            "sent": self.sent,
            "echoed": self.echoed,
            "alive": not self.error,
            "error": self.error,
        }


class HttpProbe:
    """HTTP GETs of one URL from this process, one every `interval`, each with `timeout`.

    Counts requests that failed (no answer in time, a refused connection, a status
    other than 200, a body without `expect`): through a Service ClusterIP, a failure is
    what a client of the Service would have seen.
    """

    def __init__(
        self, url: str, *, expect: str = "", interval: float = 0.05, timeout: float = 1.0
    ) -> None:
        import urllib.request

        self.url = url
        self.expect = expect
        self.interval = interval
        self.timeout = timeout
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self._streak = 0
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _once(self) -> str:
        """'' when the request succeeded, else what went wrong."""
        try:
            with self._opener.open(self.url, timeout=self.timeout) as resp:
                body = resp.read().decode(errors="replace")
                if resp.status != 200 or self.expect not in body:
                    return f"HTTP {resp.status}: {body[:80]!r}"
                return ""
        except OSError as err:
            return f"{type(err).__name__}: {err}"

    def _run(self) -> None:
        while not self._stop.is_set():
            problem = self._once()
            with self._lock:
                if problem:
                    self.failed += 1
                    self._streak = 0
                    if len(self.errors) < 5:
                        self.errors.append(problem)
                else:
                    self.ok += 1
                    self._streak += 1
            self._stop.wait(self.interval)

    def wait_serving(self, streak: int = 5, timeout: float = 60.0) -> bool:
        """Wait until `streak` requests in a row succeeded, then count from zero.

        A new Service refuses (kube-proxy's "has no endpoints" REJECT, ECONNREFUSED) until
        kube-proxy has synced its first ready endpoint, measured here up to ~0.7 s after
        the API shows every pod Ready: counted from before that, those refusals would be
        blamed on whatever the probe is about.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._streak >= streak:
                    self.ok = self.failed = 0
                    self.errors.clear()
                    return True
            time.sleep(self.interval)
        return False

    def stop(self) -> dict[str, object]:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 2)
        return {"ok": self.ok, "failed": self.failed, "errors": list(self.errors)}
