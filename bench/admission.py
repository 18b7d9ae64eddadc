"""Admission benchmark: the webhook over real HTTPS, at rising concurrency and rate.

    .venv/bin/python bench/admission.py [--endpoint mutate|validate] [--step-seconds 6]

What runs: the webhook as a subprocess of this script (one process, as one
replica of the Deployment is), serving TLS on 127.0.0.1 with a fresh CA, its
caches pre-filled in memory (60 namespaces, 12 NetworkProfiles, 180 NADs)
instead of watching an apiserver — the request path is the same, only the
cache feed differs, and admission never calls the apiserver anyway.

The client is asyncio over raw TLS sockets with HTTP/1.1 keep-alive, one
connection per concurrent client, posting AdmissionReviews shaped like the
apiserver's (pods from ReplicaSets, ~5 KiB, a fifth with their own networks
annotation). Two kinds of steps:
- closed loop: N clients each send the next request when the last answered,
  for N = 1, 4, 16, 64 — the highest throughput is saturation;
- open loop: requests are started on a fixed schedule (50, 100, 200 and
  400/s) over a pool of 32 connections, whatever the answers do.
It prints one row per step: achieved requests/s, p50/p99/max latency from
sending a request to reading its answer (what the apiserver waits), and for
open-loop steps how late the client started requests (p99): when that grows,
requests queued behind busy connections, i.e. the webhook fell behind or this
machine was busy with something else.
Everything stays on loopback; a run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.samples import deployment_pod, pod_review
from netshift import pki
from netshift.keys import NETWORKS_KEY
from netshift.policy import Profile, profile_from_object

NAMESPACES = [f"team-{i:02d}" for i in range(60)]


def tier(index: int) -> str:
    return f"tier-{index % 12}"


def fixture_profiles() -> list[Profile]:
    return [
        profile_from_object(
            {
                "metadata": {"name": f"profile-{t}"},
                "spec": {
                    "namespaceSelector": {
                        "matchLabels": {"netshift.io/tier": f"tier-{t}"},
                        "matchExpressions": [
                            {"key": "env", "operator": "In", "values": ["prod", "staging"]}
                        ],
                    },
                    "defaultNetwork": f"infra/default-{t}",
                    "networks": [
                        {"name": "storage", "namespace": "infra", "interface": "stor0"},
                        {"name": f"app-{t}", "ips": [f"10.{t}.0.0/16"]},
                    ],
                    "mode": "Enforce" if t % 3 == 0 else "Default",
                    "priority": t,
                },
            }
        )
        for t in range(12)
    ]


def serve(args: argparse.Namespace) -> int:
    """The webhook side: file-mode TLS, static caches, uvicorn on loopback."""
    from webhook.app import WebhookSettings, create_app
    from webhook.caches import StaticCaches
    from webhook.certs import FileCertSource
    from webhook.server import ReloadableTLS, WebhookServer, bind

    namespaces = {
        ns: {"netshift.io/tier": tier(i), "env": "prod", "kubernetes.io/metadata.name": ns}
        for i, ns in enumerate(NAMESPACES)
    }
    nads = [f"infra/default-{t}" for t in range(12)] + ["infra/storage"]
    nads += [
        f"{ns}/app-{t}"
        for ns in NAMESPACES
        for t in range(12)
        if tier(NAMESPACES.index(ns)) == f"tier-{t}"
    ]
    nads += [f"{ns}/own-net" for ns in NAMESPACES]
    caches = StaticCaches(namespaces, fixture_profiles(), nads)
    tls = ReloadableTLS()
    tls.load(FileCertSource(args.cert_dir / "tls.crt", args.cert_dir / "tls.key").read())
    sock = bind("127.0.0.1", 0)
    server = WebhookServer(create_app(WebhookSettings(caches=caches)), tls, sock)
    print(f"READY {server.port}", flush=True)
    asyncio.run(server.serve(handle_signals=True))
    return 0


def review_bodies(endpoint: str, count: int = 240) -> list[bytes]:
    rng = random.Random(7)
    bodies = []
    for i in range(count):
        ns = NAMESPACES[i % len(NAMESPACES)]
        own = {NETWORKS_KEY: "own-net@extra0"} if rng.random() < 0.2 else None
        pod = deployment_pod(f"app{i % 17}", annotations=own)
        if endpoint == "mutate":
            review = pod_review(pod, namespace=ns)
        else:
            new = deployment_pod(f"app{i % 17}", annotations={NETWORKS_KEY: "own-net@extra0"})
            review = pod_review(new, old=pod, namespace=ns, operation="UPDATE", name=f"app-{i}")
        bodies.append(json.dumps(review, separators=(",", ":")).encode())
    return bodies


class Connection:
    """One keep-alive HTTPS connection speaking just enough HTTP/1.1."""

    def __init__(self, port: int, ctx: ssl.SSLContext, path: str) -> None:
        self.port = port
        self.ctx = ctx
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.ctx, server_hostname="127.0.0.1"
        )

    async def post(self, body: bytes) -> bool:
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return status_line.split()[1:2] == [b"200"] and b'"allowed":true' in payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self.writer.wait_closed()


@dataclass
class Step:
    label: str
    clients: int
    rate: float | None
    seconds: float
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # open loop: send time - scheduled time
    errors: int = 0
    elapsed: float = 0.0

    def row(self) -> str:
        lat = sorted(self.latencies)
        done = len(lat)
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p99 = lat[min(done - 1, int(done * 0.99))] * 1000 if lat else float("nan")
        worst = lat[-1] * 1000 if lat else float("nan")
        target = f"{self.rate:.0f}/s" if self.rate else "-"
        lags = sorted(self.lags)
        late = f"{lags[int(len(lags) * 0.99)] * 1000:.2f}" if lags else "-"
        return (
            f"{self.label:<12} {self.clients:>7} {target:>8} {done / self.elapsed:>9.0f} "
            f"{p50:>8.2f} {p99:>8.2f} {worst:>8.2f} {late:>9} {self.errors:>6}"
        )


HEADER = (
    f"{'step':<12} {'clients':>7} {'target':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'max ms':>8} {'late p99':>9} {'errors':>6}"
)


async def open_pool(n: int, port: int, ctx: ssl.SSLContext, path: str) -> list[Connection]:
    pool = [Connection(port, ctx, path) for _ in range(n)]
    await asyncio.gather(*(c.open() for c in pool))
    return pool


async def closed_loop(
    step: Step, port: int, ctx: ssl.SSLContext, path: str, bodies: Sequence[bytes]
) -> None:
    pool = await open_pool(step.clients, port, ctx, path)
    start = time.perf_counter()
    deadline = start + step.seconds

    async def client(conn: Connection, offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            ok = await conn.post(bodies[i % len(bodies)])
            step.latencies.append(time.perf_counter() - t0)
            step.errors += not ok
            i += step.clients

    await asyncio.gather(*(client(c, k) for k, c in enumerate(pool)))
    step.elapsed = time.perf_counter() - start
    await asyncio.gather(*(c.close() for c in pool))


async def open_loop(
    step: Step, port: int, ctx: ssl.SSLContext, path: str, bodies: Sequence[bytes]
) -> None:
    assert step.rate is not None
    pool = await open_pool(step.clients, port, ctx, path)
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    total = int(step.rate * step.seconds)
    start = time.perf_counter() + 0.05

    async def schedule() -> None:
        for i in range(total):
            due = start + i / step.rate  # type: ignore[operator]
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((due, i))
        for _ in pool:
            queue.put_nowait(None)

    async def worker(conn: Connection) -> None:
        while (item := await queue.get()) is not None:
            due, i = item
            sent = time.perf_counter()
            ok = await conn.post(bodies[i % len(bodies)])
            step.latencies.append(time.perf_counter() - sent)
            step.lags.append(sent - due)
            step.errors += not ok

    await asyncio.gather(schedule(), *(worker(c) for c in pool))
    step.elapsed = time.perf_counter() - start
    await asyncio.gather(*(c.close() for c in pool))


async def drive(port: int, ctx: ssl.SSLContext, args: argparse.Namespace) -> list[Step]:
    path = f"/{args.endpoint}"
    bodies = review_bodies(args.endpoint)
    # Warm-up: imports, first TLS handshakes, caches of the profile parser.
    await closed_loop(Step("warmup", 4, None, 1.0), port, ctx, path, bodies)
    steps = [Step(f"closed c={n}", n, None, args.step_seconds) for n in (1, 4, 16, 64)]
    steps += [Step(f"open {r}/s", 32, float(r), args.step_seconds) for r in (50, 100, 200, 400)]
    print(HEADER)
    for step in steps:
        if step.rate is None:
            await closed_loop(step, port, ctx, path, bodies)
        else:
            await open_loop(step, port, ctx, path, bodies)
        print(step.row(), flush=True)
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", choices=["mutate", "validate"], default="mutate")
    parser.add_argument("--step-seconds", type=float, default=6.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)

    with tempfile.TemporaryDirectory(prefix="netshift-bench-") as tmp:
        cert_dir = Path(tmp)
        ca = pki.make_ca("bench-ca")
        pair = pki.issue(ca, "webhook", ip_addresses=["127.0.0.1"], server=True)
        (cert_dir / "tls.crt").write_bytes(pair.cert_pem)
        (cert_dir / "tls.key").write_bytes(pair.key_pem)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--cert-dir", str(cert_dir)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY "):
                print("webhook did not start", file=sys.stderr)
                return 1
            port = int(line.split()[1])
            ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
            print(
                f"netshift webhook /{args.endpoint} over HTTPS on 127.0.0.1:{port}, "
                f"{os.cpu_count()} CPUs, {args.step_seconds:.0f}s per step"
            )
            asyncio.run(drive(port, ctx, args))
            # Other work on the machine shows up as latency spikes; say how busy it was.
            print(
                "load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(
                    *os.getloadavg()
                )
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
