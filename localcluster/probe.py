"""Probe traffic for the demo, the switch tests and bench/rollout.py.

A *client namespace* is a network namespace of its own, plugged by a veth into
a network's bridge, from which pings and a long-lived TCP stream reach pods.
Everything stays inside namespaces this code creates and the bridges netshift's
test networks use; nothing is routed anywhere else.

`python -m localcluster.probe server PORT` runs an echo server (started inside a
pod's netns); `python -m localcluster.probe client HOST PORT` sends a numbered
message every 10 ms, checks each echo, and on SIGTERM prints one JSON line:
{"sent", "echoed", "alive", "error"}.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
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
from types import FrameType

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


class TcpStream:
    """An echo server in one namespace and a client streaming to it from another."""

    def __init__(self, server_netns: str, client_netns: str, host: str, port: int = 7777) -> None:
        py = sys.executable
        self.server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                server_netns,
                py,
                "-m",
                "localcluster.probe",
                "server",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        self.client: subprocess.Popen[str] | None = None
        while time.monotonic() < deadline:
            client = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    client_netns,
                    py,
                    "-m",
                    "localcluster.probe",
                    "client",
                    host,
                    str(port),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            time.sleep(0.3)
            if client.poll() is None:
                self.client = client
                break
            time.sleep(0.2)
        if self.client is None:
            self.server.kill()
            raise RuntimeError(f"could not open a TCP stream to {host}:{port}")

    def stop(self) -> dict[str, object]:
        assert self.client is not None
        self.client.send_signal(signal.SIGTERM)
        out, _ = self.client.communicate(timeout=10)
        self.server.kill()
        self.server.wait()
        try:
            result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
            return result
        except (ValueError, IndexError):
            return {"alive": False, "error": "client said nothing"}


class SeqPing:
    """`ping -i 0.01` from a namespace, counting lost echoes exactly by sequence number.

    A lost echo is a sequence number missing between the first and the last echo
    received: no deadline decides, so an echo still in flight when the probe stops
    is not counted. Call :meth:`wait_first` before the event under test (IPv6
    answers only once duplicate address detection is over) and :meth:`settle`
    after it, so that the last echo counted was sent after the event.
    """

    def __init__(self, netns: str, target: str, interval: float = INTERVAL) -> None:
        self.netns = netns
        self.target = target
        self.interval = interval
        self._seen: set[int] = set()
        self._sent = 0
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "ping", "-n", "-i", str(interval), "-W", "1", target],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"icmp_seq=(\d+) ttl=", line)
            if m:
                with self._cond:
                    self._seen.add(int(m.group(1)))
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

    def lost(self) -> list[int]:
        """Sequence numbers missing so far between the first and the last echo."""
        with self._cond:
            if not self._seen:
                return []
            return sorted(set(range(min(self._seen), max(self._seen) + 1)) - self._seen)

    def stop(self) -> tuple[int, list[int]]:
        """(echoes counted, lost sequence numbers)."""
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
    """

    def __init__(
        self,
        server_netns: str,
        client_netns: str,
        host: str,
        *,
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
        self._srv = socket_in(server_netns, family)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, 0))
        self._srv.listen(4)
        port = self._srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()
        self._cli = socket_in(client_netns, family)
        if source is not None:
            self._cli.bind((source, 0))
        self._cli.settimeout(max(timeout, 5.0))  # the first neighbour discovery may take a while
        self._cli.connect((host, port))
        self._cli.settimeout(timeout)
        self.local = self._cli.getsockname()[0]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self._srv.accept()
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
            with contextlib.suppress(OSError):
                sock.close()
        return {
            "sent": self.sent,
            "echoed": self.echoed,
            "alive": not self.error,
            "error": self.error,
        }


def _serve(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(8)

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def _stream(host: str, port: int) -> None:
    stop = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    sent = echoed = 0
    error = ""
    sock = socket.create_connection((host, port), timeout=3)
    sock.settimeout(3)
    try:
        while not stop.is_set():
            msg = f"{sent:012d}".encode()
            sock.sendall(msg)
            sent += 1
            got = b""
            while len(got) < len(msg):
                chunk = sock.recv(len(msg) - len(got))
                if not chunk:
                    raise ConnectionError("closed by peer")
                got += chunk
            if got != msg:
                raise ConnectionError(f"echo mismatch at {sent}")
            echoed += 1
            stop.wait(INTERVAL)
    except OSError as err:
        error = str(err) or type(err).__name__
    with contextlib.suppress(OSError):
        sock.close()
    print(json.dumps({"sent": sent, "echoed": echoed, "alive": not error, "error": error}))
    sys.stdout.flush()
    if error:
        stop.wait()  # stay up until asked, so the caller reads the verdict at stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["server"]:
        _serve(int(argv[1]))
    elif argv[:1] == ["client"]:
        _stream(argv[1], int(argv[2]))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
