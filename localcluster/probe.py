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
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType

INTERVAL = 0.01


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
