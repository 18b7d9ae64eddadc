"""Admission benchmark: netshift's /mutate beside its floors, one load generator for all.

    .venv/bin/python bench/admission.py [--rounds 3] [--seconds 5] [--workers N]

Servers, each a subprocess serving TLS on 127.0.0.1 with one fresh CA:
- netshift: the real app and server (`webhook.server.run_workers`, as
  `netshift webhook` runs it, `--workers` processes), its caches pre-filled in
  memory (60 namespaces, 12 NetworkProfiles, 180 NADs) instead of watching an
  apiserver: the request path is the same, only the cache feed differs, and
  admission never calls the apiserver anyway;
- floor: a bare FastAPI + uvicorn TLS app (uvicorn's defaults, access log off,
  one process) that parses the review and allows it — nothing can be faster
  on this stack;
- go: if `go` is on PATH, a minimal net/http TLS handler (stdlib only, built
  into a temporary directory) that decodes the review and returns a patch.

The load is wrk (HTTPS, keep-alive, a Lua script posting the same ~3.6 KB
AdmissionReview of a pod CREATE in a namespace a profile selects) at 1 and 8
connections; wrk is C and stays far from the bottleneck. Rounds interleave the
servers, so that each round compares them under the same background load; the
ratios are taken per round and their median is reported. On a shared machine
only those same-run ratios mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request  # module level: the floor's handler annotation resolves here

from localcluster.samples import deployment_pod, pod_review
from netshift import pki
from netshift.policy import Profile, profile_from_object

NAMESPACES = [f"team-{i:02d}" for i in range(60)]
CONNECTIONS = (1, 8)
# Goals (docs: DESIGN.md "Figures we hold ourselves to", issue 11).
GOAL_P99_1 = 1.3  # netshift p99 / floor p99 at 1 connection, at most
GOAL_RPS_8 = 0.8  # netshift req/s / floor req/s at 8 connections, at least


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


def review_body() -> bytes:
    """One pod CREATE from a ReplicaSet into team-03 (selected by profile-3)."""
    review = pod_review(deployment_pod("web"), namespace=NAMESPACES[3], uid="bench-0001")
    return json.dumps(review, separators=(",", ":")).encode()


# --- the servers (each runs as `bench/admission.py --serve KIND`) ---------------------------


def serve_netshift(args: argparse.Namespace) -> int:
    from webhook.app import WebhookSettings, create_app
    from webhook.caches import StaticCaches
    from webhook.certs import CertWatcher, FileCertSource
    from webhook.server import ReloadableTLS, WebhookServer, bind, run_workers

    namespaces = {
        ns: {"netshift.io/tier": tier(i), "env": "prod", "kubernetes.io/metadata.name": ns}
        for i, ns in enumerate(NAMESPACES)
    }
    nads = [f"infra/default-{t}" for t in range(12)] + ["infra/storage"]
    nads += [f"{ns}/app-{tier(i)[5:]}" for i, ns in enumerate(NAMESPACES)]
    nads += [f"{ns}/own-net" for ns in NAMESPACES]
    source = FileCertSource(args.cert_dir / "tls.crt", args.cert_dir / "tls.key")
    sock = bind("127.0.0.1", 0)
    print(f"READY {sock.getsockname()[1]}", flush=True)

    def worker(_index: int) -> int:
        # What `netshift webhook` does in each worker, with static caches.
        caches = StaticCaches(namespaces, fixture_profiles(), nads)
        tls = ReloadableTLS()
        tls.load(source.read())
        server = WebhookServer(create_app(WebhookSettings(caches=caches)), tls, sock)
        watcher = CertWatcher(source.read, server.reload, 30.0)
        watcher.start()
        try:
            server.run(handle_signals=True)
        finally:
            watcher.stop()
        return 0

    return run_workers(args.workers, worker)


def serve_floor(args: argparse.Namespace) -> int:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        review = json.loads(await request.body())
        return JSONResponse(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True},
            }
        )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        ssl_certfile=str(args.cert_dir / "tls.crt"),
        ssl_keyfile=str(args.cert_dir / "tls.key"),
        access_log=False,
        log_level="warning",
    )
    print(f"READY {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


GO_MAIN = r"""package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"crypto/tls"
	"log"
	"net"
	"net/http"
	"os"
)

type review struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID    string          `json:"uid"`
		Object json.RawMessage `json:"object"`
	} `json:"request"`
}

func main() {
	patch := base64.StdEncoding.EncodeToString([]byte(
		`[{"op":"add","path":"/metadata/annotations","value":{"k8s.v1.cni.cncf.io/networks":"infra/storage@stor0"}}]`))
	http.HandleFunc("/mutate", func(w http.ResponseWriter, r *http.Request) {
		var rv review
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rv); err != nil || rv.Request == nil {
			http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
			"response": map[string]any{"uid": rv.Request.UID, "allowed": true,
				"patchType": "JSONPatch", "patch": patch},
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("READY %d\n", ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog: log.New(io.Discard, "", 0)}
	panic(srv.ServeTLS(ln, os.Args[1], os.Args[2]))
}
"""


def build_go(tmp: Path) -> Path | None:
    go = shutil.which("go")
    if go is None:
        return None
    src = tmp / "gofloor"
    src.mkdir()
    (src / "go.mod").write_text("module gofloor\n\ngo 1.22\n")
    (src / "main.go").write_text(GO_MAIN)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    out = src / "gofloor"
    result = subprocess.run(
        [go, "build", "-o", str(out), "."], cwd=src, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        print(f"go floor not built: {result.stderr.strip()}", file=sys.stderr)
        return None
    return out


# --- driving --------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    port: int


def start(name: str, argv: list[str]) -> Server:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{name} did not start")
    return Server(name, proc, int(line.split()[1]))


def wait_serving(server: Server, ctx: ssl.SSLContext, body: bytes, timeout: float = 20.0) -> str:
    """Post one review until it is answered; return the answer (checked by the caller)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(
                    b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
            return data.decode(errors="replace")
        except OSError:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise
            time.sleep(0.2)


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout,
    e.status))
end
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(port: int, script: Path, conns: int, seconds: float) -> Run:
    argv = [
        "wrk",
        f"-t{min(conns, 2)}",
        f"-c{conns}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"https://127.0.0.1:{port}/mutate",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, duration_us, p50, p99, errors, status = (int(x) for x in line.split()[1:])
    return Run(requests / (duration_us / 1e6), p50 / 1000, p99 / 1000, errors + status)


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str) -> str:
    return f"{format(med(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(
    names: list[str], runs: dict[tuple[str, int], list[Run]], args: argparse.Namespace
) -> list[str]:
    lines = [
        f"admission /mutate over HTTPS, wrk keep-alive, {args.rounds} rounds x {args.seconds:g}s, "
        f"{os.cpu_count()} CPUs; netshift with {args.workers} worker(s)",
        "median (min-max) over rounds:",
        f"{'server':<10} {'conns':>5} {'req/s':>22} {'p50 ms':>20} {'p99 ms':>20} {'errors':>7}",
    ]
    for conns in CONNECTIONS:
        for name in names:
            rs = runs[(name, conns)]
            lines.append(
                f"{name:<10} {conns:>5} {spread([r.rps for r in rs], '.0f'):>22} "
                f"{spread([r.p50_ms for r in rs], '.2f'):>20} "
                f"{spread([r.p99_ms for r in rs], '.2f'):>20} {sum(r.errors for r in rs):>7}"
            )

    def ratio(other: str, conns: int, field: str) -> float:
        pairs = zip(runs[("netshift", conns)], runs[(other, conns)], strict=True)
        return med([getattr(a, field) / getattr(b, field) for a, b in pairs])

    lines.append("same-round ratios netshift/other (median over rounds):")
    for other in names[1:]:
        lines.append(
            f"  vs {other:<6} 1 conn p50 {ratio(other, 1, 'p50_ms'):.2f}x  "
            f"p99 {ratio(other, 1, 'p99_ms'):.2f}x   8 conns req/s "
            f"{ratio(other, 8, 'rps'):.2f}x  p99 {ratio(other, 8, 'p99_ms'):.2f}x"
        )
    p99 = ratio("floor", 1, "p99_ms")
    rps = ratio("floor", 8, "rps")
    ok = p99 <= GOAL_P99_1 and rps >= GOAL_RPS_8
    lines.append(
        f"verdict: {'MET' if ok else 'NOT MET'} - p99 at 1 conn {p99:.2f}x floor "
        f"(goal <= {GOAL_P99_1}x), req/s at 8 conns {rps:.2f}x floor (goal >= {GOAL_RPS_8}x)"
    )
    lines.append("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return lines


def start_servers(
    me: list[str], tmp: Path, args: argparse.Namespace, ctx: ssl.SSLContext, body: bytes
) -> list[Server]:
    """netshift, the bare FastAPI floor and (with Go) the Go floor, each checked to answer."""
    servers = [
        start("netshift", [*me, "--serve", "netshift", "--workers", str(args.workers)]),
        start("floor", [*me, "--serve", "floor"]),
    ]
    go = None if args.no_go else build_go(tmp)
    if go is not None:
        servers.append(start("go", [str(go), str(tmp / "tls.crt"), str(tmp / "tls.key")]))
    for server in servers:
        answer = wait_serving(server, ctx, body)
        if '"allowed":true' not in answer.replace(" ", ""):
            raise RuntimeError(f"{server.name} did not allow the review:\n{answer}")
        if server.name != "floor" and '"patch"' not in answer:
            raise RuntimeError(f"{server.name} returned no patch:\n{answer}")
    return servers


def measure(
    servers: list[Server], script: Path, args: argparse.Namespace
) -> dict[tuple[str, int], list[Run]]:
    """wrk against every server, interleaved round by round so that load spreads evenly."""
    for server in servers:  # warm-up: imports, handshakes, caches
        wrk(server.port, script, 8, 1.0)
    runs: dict[tuple[str, int], list[Run]] = {(s.name, c): [] for s in servers for c in CONNECTIONS}
    for round_ in range(args.rounds):
        for conns in CONNECTIONS:
            for server in servers:
                runs[(server.name, conns)].append(wrk(server.port, script, conns, args.seconds))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    from webhook.server import default_workers

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="netshift worker processes"
    )
    parser.add_argument("--no-go", action="store_true", help="skip the Go floor")
    parser.add_argument("--serve", choices=["netshift", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "netshift":
        return serve_netshift(args)
    if args.serve == "floor":
        return serve_floor(args)
    if shutil.which("wrk") is None:
        print("bench/admission.py needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2

    body = review_body()
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="netshift-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ca = pki.make_ca("bench-ca")
        pair = pki.issue(ca, "webhook", ip_addresses=["127.0.0.1"], server=True)
        (tmp / "tls.crt").write_bytes(pair.cert_pem)
        (tmp / "tls.key").write_bytes(pair.key_pem)
        script = tmp / "post.lua"
        script.write_text(LUA.replace("{body}", body.decode()))
        me = [sys.executable, __file__, "--cert-dir", str(tmp)]
        ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        try:
            servers += start_servers(me, tmp, args, ctx, body)
            print(f"review {len(body)} bytes; servers: {', '.join(s.name for s in servers)}")
            print(
                "\n".join(report([s.name for s in servers], measure(servers, script, args), args))
            )
        finally:
            for server in servers:
                server.proc.send_signal(signal.SIGTERM)
            for server in servers:
                try:
                    server.proc.wait(15)
                except subprocess.TimeoutExpired:
                    server.proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
