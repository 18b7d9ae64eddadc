"""Admission benchmark: netshift's /mutate beside its peer and its floors, one load generator for all.

    .venv/bin/python bench/admission.py [--rounds 3] [--seconds 5] [--workers N] [--nri PATH]

Servers, each a subprocess serving TLS on 127.0.0.1:
- nri: network-resources-injector, the Go admission webhook of the Network
  Plumbing WG, when `--nri PATH` (or $NETSHIFT_BENCH_NRI) names a binary built
  from its repository (nothing of it is part of netshift; build it elsewhere).
  It runs as in a pod, with its default flags and its glog output (part of its
  cost) plus `-insecure`, so that wrk needs no client certificate: a local
  control plane (localcluster, plane only) holds its ServiceAccount and RBAC
  from its own deployments/auth.yaml (`--nri-auth`, default: found beside the
  binary), and a token of that ServiceAccount and the cluster CA are
  bind-mounted at the in-cluster path in a private mount namespace;
- floor: a bare FastAPI + uvicorn TLS app (uvicorn's defaults, access log off,
  one process) that parses the review and allows it: the Python stack's floor;
- go: if `go` is on PATH, a minimal net/http TLS handler (stdlib only, built
  into a temporary directory) that decodes the review and returns a patch;
- netshift: the real app and server as `netshift webhook --workers N` runs them
  (webhook.workers: forked workers, metrics merged across them, readiness
  board; both ports), its caches pre-filled in memory (60 namespaces, 12
  NetworkProfiles, 180 NADs) instead of watching an apiserver: the request path
  is the same, only the cache feed differs, and admission never calls the
  apiserver anyway.

The load is wrk (HTTPS, keep-alive, a Lua script posting the same ~3.6 KB
AdmissionReview of a pod CREATE in a namespace a profile selects; the pod has
no network annotation of its own, so NRI passes it after its full parse) at 1
and 8 connections; wrk is C and stays far from the bottleneck. Rounds
interleave the servers, so that each round compares them under the same
background load; the ratios are taken per round and their median is reported.
On a shared machine only those same-run ratios mean anything.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from fastapi import Request  # module level: the floor's handler annotation resolves here

from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env, free_port
from localcluster.samples import deployment_pod, pod_review
from netshift import pki
from netshift.policy import Profile, profile_from_object

NAMESPACES = [f"team-{i:02d}" for i in range(60)]
CONNECTIONS = (1, 8)
# Goals (docs: DESIGN.md "Figures we hold ourselves to", issues 11 and 23).
GOAL_P99_1 = 1.3  # netshift p99 / floor p99 at 1 connection, at most
GOAL_RPS_8 = 0.8  # netshift req/s / floor req/s at 8 connections, at least
# Against NRI, at 1 and 8 connections: req/s at least NRI's, p99 at most NRI's.
NRI_ENV = "NETSHIFT_BENCH_NRI"
SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


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
    from webhook.app import WebhookSettings, create_app, create_health_app, readiness_tick
    from webhook.caches import StaticCaches
    from webhook.certs import CertWatcher, FileCertSource
    from webhook.metrics import WebhookMetrics
    from webhook.server import ReloadableTLS, WebhookServer, bind
    from webhook.workers import Workers

    namespaces = {
        ns: {"netshift.io/tier": tier(i), "env": "prod", "kubernetes.io/metadata.name": ns}
        for i, ns in enumerate(NAMESPACES)
    }
    nads = [f"infra/default-{t}" for t in range(12)] + ["infra/storage"]
    nads += [f"{ns}/app-{tier(i)[5:]}" for i, ns in enumerate(NAMESPACES)]
    nads += [f"{ns}/own-net" for ns in NAMESPACES]
    source = FileCertSource(args.cert_dir / "tls.crt", args.cert_dir / "tls.key")
    # As webhook.main.run: sockets, metrics directory and readiness board before the fork.
    sock = bind("127.0.0.1", 0)
    health_sock = bind("127.0.0.1", 0)
    workers = Workers.prepare(args.workers)
    print(f"READY {sock.getsockname()[1]} {health_sock.getsockname()[1]}", flush=True)

    def worker(index: int) -> int:
        # What `netshift webhook` does in each worker (webhook.main._serve), with static caches.
        metrics = WebhookMetrics()
        tls = ReloadableTLS(metrics)
        tls.load(source.read())
        settings = WebhookSettings(
            caches=StaticCaches(namespaces, fixture_profiles(), nads),
            metrics=metrics,
            tls_ready=lambda: tls.loaded,
            board=workers.board,
            worker=index,
        )
        server = WebhookServer(
            create_app(settings),
            tls,
            sock,
            health_app=create_health_app(settings),
            health_sock=health_sock,
            tick=readiness_tick(settings),
        )
        settings.stopping = server.stopping.is_set
        watcher = CertWatcher(source.read, server.reload, 30.0)
        watcher.start()
        try:
            server.run(handle_signals=True)
        finally:
            watcher.stop()
        return 0

    return workers.run(worker)


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


# --- network-resources-injector, as in a pod ------------------------------------------------


def find_nri_auth(nri: Path) -> Path | None:
    """NRI's deployments/auth.yaml beside its binary (bin/webhook in its checkout, or next to it)."""
    for base in (nri.parent, nri.parent.parent):
        candidate = base / "deployments" / "auth.yaml"
        if candidate.is_file():
            return candidate
    return None


def service_account(auth: Path) -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount that NRI's auth.yaml defines."""
    for obj in yaml.safe_load_all(auth.read_text()):
        if obj and obj.get("kind") == "ServiceAccount":
            meta = obj["metadata"]
            return meta.get("namespace", "default"), meta["name"]
    raise RuntimeError(f"{auth} defines no ServiceAccount")


@contextlib.contextmanager
def nri_credentials(work: Path, auth: Path) -> Iterator[tuple[LocalCluster, Path, str]]:
    """A local control plane with NRI's RBAC applied, and a directory shaped like a pod's
    service account mount (token, ca.crt, namespace) for its ServiceAccount."""
    cluster = LocalCluster(
        work / "cluster", pod_subnet=f"10.247.{os.getpid() % 250}.0/24", bridge="nsbadm0"
    )
    try:
        print("NRI: starting a local control plane for its in-cluster credentials ...", flush=True)
        cluster.up(services=[], say=lambda _line: None)  # the plane only; no node is needed
        cluster.kubectl("apply", "-f", str(auth))
        namespace, name = service_account(auth)
        token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=2h").stdout
        sa = work / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text(token.strip())
        (sa / "ca.crt").write_bytes(cluster.plane.ca_file.read_bytes())
        (sa / "namespace").write_text(namespace)
        # NRI needs the apiserver only (its watch, a ConfigMap read every 30 s): the
        # controllers and the scheduler would only add background load to every row.
        for name in ("kube-controller-manager", "kube-scheduler"):
            cluster.plane.supervisor.stop(name, say=lambda _line: None)
        yield cluster, sa, namespace
    finally:
        cluster.down(say=lambda _line: None)


# In a private mount namespace: a tmpfs over /run gives the in-cluster path a mount point
# without creating it on the host, then the credentials are bind-mounted there.
NRI_MOUNT = f"""set -e
mount -t tmpfs -o mode=0755,size=1m netshift-bench-nri /run
mkdir -p {SA_PATH}
mount --bind "$1" {SA_PATH}
shift
exec "$@"
"""


def start_nri(
    nri: Path, work: Path, sa: Path, namespace: str, apiserver_port: int, tmp: Path
) -> tuple[Server, Path]:
    """NRI with its default flags plus -insecure; returns the server and its glog directory."""
    port, health = free_port(), free_port()
    logs = work / "nri-tmp"  # glog writes its files to os.TempDir(): $TMPDIR
    logs.mkdir()
    argv = [
        "unshare",
        "--mount",
        "--propagation=private",
        "--",
        "sh",
        "-c",
        NRI_MOUNT,
        "nri",
        str(sa),
        str(nri),
        "-bind-address=127.0.0.1",
        f"-port={port}",
        f"-health-check-port={health}",
        f"-tls-cert-file={tmp / 'tls.crt'}",
        f"-tls-private-key-file={tmp / 'tls.key'}",
        "-insecure",
    ]
    env = clean_env(
        {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(apiserver_port),
            "NAMESPACE": namespace,
            "TMPDIR": str(logs),
        }
    )
    out = (work / "nri.out").open("w")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    out.close()
    return Server("nri", proc, port), logs


# --- driving --------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    port: int


def start(name: str, argv: list[str]) -> Server:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=clean_env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{name} did not start")
    return Server(name, proc, int(line.split()[1]))


def wait_serving(server: Server, ctx: ssl.SSLContext, body: bytes, timeout: float = 30.0) -> str:
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
    if "nri" not in names:
        lines.append("nri: not measured; the NRI row needs --nri PATH (or $NETSHIFT_BENCH_NRI)")

    def ratio(other: str, conns: int, field: str) -> float:
        pairs = zip(runs[("netshift", conns)], runs[(other, conns)], strict=True)
        return med([getattr(a, field) / getattr(b, field) for a, b in pairs])

    lines.append("same-round ratios netshift/other (median over rounds):")
    for other in (n for n in names if n != "netshift"):
        lines.append(
            f"  vs {other:<6} 1 conn req/s {ratio(other, 1, 'rps'):.2f}x  "
            f"p50 {ratio(other, 1, 'p50_ms'):.2f}x  p99 {ratio(other, 1, 'p99_ms'):.2f}x   "
            f"8 conns req/s {ratio(other, 8, 'rps'):.2f}x  p99 {ratio(other, 8, 'p99_ms'):.2f}x"
        )
    p99 = ratio("floor", 1, "p99_ms")
    rps = ratio("floor", 8, "rps")
    ok = p99 <= GOAL_P99_1 and rps >= GOAL_RPS_8
    lines.append(
        f"verdict vs floor: {'MET' if ok else 'NOT MET'} - p99 at 1 conn {p99:.2f}x floor "
        f"(goal <= {GOAL_P99_1}x), req/s at 8 conns {rps:.2f}x floor (goal >= {GOAL_RPS_8}x)"
    )
    if "nri" in names:
        # The medians of the table, as the goal is worded (and the same-round ratios above).
        checks = []
        for conns in CONNECTIONS:
            mine, peer = runs[("netshift", conns)], runs[("nri", conns)]
            checks.append(
                (f"req/s at {conns}", med([r.rps for r in mine]), med([r.rps for r in peer]), ">=")
            )
            checks.append(
                (
                    f"p99 at {conns}",
                    med([r.p99_ms for r in mine]),
                    med([r.p99_ms for r in peer]),
                    "<=",
                )
            )
        met = all((a >= b) if op == ">=" else (a <= b) for _, a, b, op in checks)
        lines.append(
            f"verdict vs nri: {'MET' if met else 'NOT MET'} - "
            + "; ".join(f"{what} {a:.2f} {op} {b:.2f}" for what, a, b, op in checks)
        )
    lines.append("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return lines


def start_servers(
    me: list[str], tmp: Path, args: argparse.Namespace, ctx: ssl.SSLContext, body: bytes
) -> list[Server]:
    """The bare FastAPI floor, the Go floor (with Go) and netshift, each checked to answer."""
    servers = [start("floor", [*me, "--serve", "floor"])]
    go = None if args.no_go else build_go(tmp)
    if go is not None:
        servers.append(start("go", [str(go), str(tmp / "tls.crt"), str(tmp / "tls.key")]))
    servers.append(start("netshift", [*me, "--serve", "netshift", "--workers", str(args.workers)]))
    return servers


def check_answers(servers: list[Server], ctx: ssl.SSLContext, body: bytes) -> None:
    for server in servers:
        answer = wait_serving(server, ctx, body)
        if '"allowed":true' not in answer.replace(" ", ""):
            raise RuntimeError(f"{server.name} did not allow the review:\n{answer}")
        # The floor allows without looking; NRI passes a pod without network annotation.
        if server.name in ("go", "netshift") and '"patch"' not in answer:
            raise RuntimeError(f"{server.name} returned no patch:\n{answer}")


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


def stop(servers: list[Server]) -> None:
    for server in servers:
        server.proc.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def deployment_workers() -> int:
    """The webhook Deployment's --workers: the bench measures netshift as it is deployed."""
    manifest = Path(__file__).resolve().parents[1] / "manifests" / "webhook" / "deployment.yaml"
    [container] = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]["containers"]
    for arg in container["args"]:
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument(
        "--workers",
        type=int,
        default=deployment_workers(),
        help="netshift worker processes (default: the Deployment's --workers)",
    )
    parser.add_argument("--no-go", action="store_true", help="skip the Go floor")
    parser.add_argument(
        "--nri",
        type=Path,
        default=os.environ.get(NRI_ENV) or None,
        help=f"network-resources-injector's webhook binary (default ${NRI_ENV})",
    )
    parser.add_argument(
        "--nri-auth", type=Path, help="its deployments/auth.yaml (default: beside the binary)"
    )
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
    auth = None
    if args.nri is not None:
        auth = args.nri_auth or find_nri_auth(args.nri)
        if auth is None or not args.nri.is_file():
            print(f"--nri {args.nri}: need the binary and its deployments/auth.yaml (--nri-auth)")
            return 2
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            print("the NRI row needs root and unshare (a private mount namespace)")
            return 2
    return bench(args, auth)


def bench(args: argparse.Namespace, auth: Path | None) -> int:
    body = review_body()
    servers: list[Server] = []
    with (
        tempfile.TemporaryDirectory(prefix="netshift-bench-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        ca = pki.make_ca("bench-ca")
        pair = pki.issue(ca, "webhook", ip_addresses=["127.0.0.1"], server=True)
        (tmp / "tls.crt").write_bytes(pair.cert_pem)
        (tmp / "tls.key").write_bytes(pair.key_pem)
        script = tmp / "post.lua"
        script.write_text(LUA.replace("{body}", body.decode()))
        me = [sys.executable, __file__, "--cert-dir", str(tmp)]
        ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        nri_logs = None
        try:
            if args.nri is not None and auth is not None:
                work = tmp / "nri"
                work.mkdir()
                cluster, sa, namespace = stack.enter_context(nri_credentials(work, auth))
                nri, nri_logs = start_nri(
                    args.nri.resolve(), work, sa, namespace, cluster.port("apiserver"), tmp
                )
                servers.append(nri)
            servers += start_servers(me, tmp, args, ctx, body)
            try:
                check_answers(servers, ctx, body)
            except Exception:
                if nri_logs is not None:
                    print((tmp / "nri" / "nri.out").read_text()[-3000:], file=sys.stderr)
                raise
            print(f"review {len(body)} bytes; servers: {', '.join(s.name for s in servers)}")
            runs = measure(servers, script, args)
            print("\n".join(report([s.name for s in servers], runs, args)))
            if nri_logs is not None:
                size = sum(f.stat().st_size for f in nri_logs.rglob("*") if f.is_file())
                print(f"nri wrote {size / 1e6:.0f} MB of glog INFO lines to its log files")
        finally:
            stop(servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
