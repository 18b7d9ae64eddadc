"""Worker processes (`netshift webhook --workers`): they share both ports, each reloads a rotated
keypair by itself, /metrics on any of them counts every worker's admissions, /readyz on any of
them waits for all of them, and SIGTERM to the supervisor stops them all."""

from __future__ import annotations

import json
import multiprocessing
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from localcluster.samples import deployment_pod, pod_review
from netshift import pki
from webhook.workers import ReadinessBoard

WORKERS = 2
T = TypeVar("T")

# Serves like webhook.main with static caches: both ports on every worker, a board, merged
# metrics. Worker 1's caches sync only once the file `gate` exists (absent: at once).
SERVER = textwrap.dedent(
    """
    import os
    import sys
    from pathlib import Path

    from webhook.app import WebhookSettings, create_app, create_health_app, readiness_tick
    from webhook.caches import StaticCaches
    from webhook.certs import CertWatcher, FileCertSource
    from webhook.metrics import WebhookMetrics
    from webhook.server import ReloadableTLS, WebhookServer, bind
    from webhook.workers import Workers

    cert_dir, gate = Path(sys.argv[1]), Path(sys.argv[2])
    workers = int(sys.argv[3])
    source = FileCertSource(cert_dir / "tls.crt", cert_dir / "tls.key")
    sock, health_sock = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    shared = Workers.prepare(workers)
    print(sock.getsockname()[1], health_sock.getsockname()[1], shared.metrics_dir, flush=True)


    class GatedCaches(StaticCaches):
        def synced(self) -> bool:
            return gate.exists()


    def tagged(app):  # which worker answered
        async def wrapper(scope, receive, send):
            async def send_tagged(message):
                if message["type"] == "http.response.start":
                    pid = str(os.getpid()).encode()
                    message = {**message, "headers": [*message["headers"], (b"x-worker", pid)]}
                await send(message)

            await app(scope, receive, send_tagged)

        return wrapper


    def worker(index: int) -> int:
        metrics = WebhookMetrics()
        tls = ReloadableTLS(metrics)
        tls.load(source.read())
        caches = (GatedCaches if index == 1 else StaticCaches)({"team": {}})
        settings = WebhookSettings(
            caches=caches,
            metrics=metrics,
            tls_ready=lambda: tls.loaded,
            board=shared.board,
            worker=index,
        )
        server = WebhookServer(
            tagged(create_app(settings)),
            tls,
            sock,
            health_app=tagged(create_health_app(settings)),
            health_sock=health_sock,
            tick=readiness_tick(settings),
            tick_interval=0.1,
        )
        settings.stopping = server.stopping.is_set
        watcher = CertWatcher(source.read, server.reload, 0.2)
        watcher.start()
        try:
            server.run(handle_signals=True)
        finally:
            watcher.stop()
        return 0

    sys.exit(shared.run(worker))
    """
)


def _write(cert_dir: Path, pair: pki.KeyPair) -> None:
    # key first, then the certificate: a half-written pair is skipped by the watcher
    (cert_dir / "tls.key").write_bytes(pair.key_pem)
    (cert_dir / "tls.crt").write_bytes(pair.cert_pem)


def _exchange(port: int, request: bytes, ctx: ssl.SSLContext | None) -> tuple[bytes, bytes, str]:
    """One request on a new connection: (status line and headers, body, the answering worker),
    plus the served certificate's DER in place of the body's absence when TLS."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        conn = raw if ctx is None else ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        with conn:
            conn.sendall(request)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    worker = head.split(b"x-worker: ", 1)[1].split(b"\r\n", 1)[0].decode()
    return head, body, worker


def _serial(port: int, ca: pki.KeyPair) -> tuple[int, str]:
    """The serial of the certificate served on a new connection, and the worker's pid."""
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    worker = answer.split(b"x-worker: ", 1)[1].split(b"\r\n", 1)[0].decode()
    return x509.load_der_x509_certificate(der).serial_number, worker


def _seen(port: int, ca: pki.KeyPair, serial: int, timeout: float) -> set[str]:
    """Connect until both workers were seen serving `serial` and nothing else."""
    deadline = time.monotonic() + timeout
    workers: set[str] = set()
    while True:
        got, worker = _serial(port, ca)
        if got == serial:
            workers.add(worker)
            if len(workers) == WORKERS:
                return workers
        else:
            workers.clear()
        assert time.monotonic() < deadline, f"workers seen serving {serial:x}: {workers}"


class Served:
    def __init__(self, proc: subprocess.Popen[str], ca: pki.KeyPair) -> None:
        assert proc.stdout is not None
        port, health, metrics_dir = proc.stdout.readline().split()
        self.proc = proc
        self.ca = ca
        self.port = int(port)
        self.health = int(health)
        self.metrics_dir = Path(metrics_dir)
        self.ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())

    def get(self, path: str) -> tuple[int, bytes, str]:
        """GET on the plain health port: (status, body, worker)."""
        head, body, worker = _exchange(
            self.health,
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            None,
        )
        return int(head.split(b" ", 2)[1]), body, worker

    def admit(self, uid: str) -> str:
        """POST one pod CREATE on a new connection; the worker that answered."""
        body = json.dumps(pod_review(deployment_pod(), namespace="team", uid=uid)).encode()
        request = (
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head, answer, worker = _exchange(self.port, request, self.ctx)
        assert head.startswith(b"HTTP/1.1 200"), head
        response = json.loads(answer)["response"]
        assert response["uid"] == uid and response["allowed"], response
        return worker


@contextmanager
def serving(tmp_path: Path, *, gated: bool = False) -> Iterator[Served]:
    ca = pki.make_ca("workers-ca")
    _write(tmp_path, pki.issue(ca, "webhook", ip_addresses=["127.0.0.1"], server=True))
    gate = tmp_path / "gate"
    if not gated:
        gate.touch()
    script = tmp_path / "serve.py"
    script.write_text(SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(gate), str(WORKERS)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        served = Served(proc, ca)
        deadline = time.monotonic() + 30
        while True:
            try:
                served.get("/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.1)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0


def _both(fetch: Callable[[], tuple[str, T]], timeout: float = 20) -> dict[str, T]:
    """Call `fetch()` -> (worker, value) until both workers have answered; their answers."""
    deadline = time.monotonic() + timeout
    answers: dict[str, T] = {}
    while len(answers) < WORKERS:
        worker, value = fetch()
        answers[worker] = value
        assert time.monotonic() < deadline, f"only workers {sorted(answers)} answered"
    return answers


def test_every_worker_serves_and_picks_up_a_rotated_keypair(tmp_path: Path) -> None:
    with serving(tmp_path) as served:
        first = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
        before = _seen(served.port, served.ca, first.serial_number, 20)
        second = pki.issue(served.ca, "webhook", ip_addresses=["127.0.0.1"], server=True)
        _write(tmp_path, second)
        # a worker that missed the new pair would answer with the old one and reset the set
        serial = x509.load_pem_x509_certificate(second.cert_pem).serial_number
        assert _seen(served.port, served.ca, serial, 20) == before


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_metrics_on_any_worker_count_every_admission_of_the_replica(tmp_path: Path) -> None:
    with serving(tmp_path) as served:
        sent: dict[str, int] = {}
        deadline = time.monotonic() + 30
        # Admissions on new connections until each worker has answered a few.
        while len(sent) < WORKERS or min(sent.values()) < 5:
            worker = served.admit(f"uid-{sum(sent.values())}")
            sent[worker] = sent.get(worker, 0) + 1
            assert time.monotonic() < deadline, f"admissions answered per worker: {sent}"
        total = sum(sent.values())

        def scrape() -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
            status, body, worker = served.get("/metrics")
            assert status == 200
            return worker, _samples(body)

        scrapes = _both(scrape)
        assert set(scrapes) == set(sent)
        labels = (("endpoint", "mutate"), ("outcome", "allowed"))
        for worker, samples in scrapes.items():
            assert samples[("netshift_webhook_requests_total", labels)] == total, worker
            count = ("netshift_webhook_request_duration_seconds_count", labels)
            assert samples[count] == total, worker
            assert samples[("netshift_webhook_cache_synced", ())] == 1.0
            assert samples[("netshift_webhook_certificate_expiry_timestamp_seconds", ())] > 0
            # each worker loaded the certificate into its own TLS context once
            reloads = ("netshift_webhook_certificate_reloads_total", (("result", "success"),))
            assert samples[reloads] == WORKERS
        assert sorted(p.name for p in served.metrics_dir.glob("counter_*.db")) == sorted(
            f"counter_{pid}.db" for pid in sent
        )
    assert not served.metrics_dir.exists()  # the temporary directory went with the replica


def test_readyz_on_any_worker_waits_for_every_worker(tmp_path: Path) -> None:
    with serving(tmp_path, gated=True) as served:

        def readyz() -> tuple[str, tuple[int, dict[str, Any]]]:
            status, body, worker = served.get("/readyz")
            return worker, (status, json.loads(body))

        # Worker 0 is ready by itself; the replica is not while worker 1's caches sync. A
        # worker serves /healthz before it first posts to the board, so worker 0 may still
        # be listed for a moment after start; the replica stays 503 throughout.
        deadline = time.monotonic() + 20
        while True:
            answers = _both(readyz)
            for status, detail in answers.values():
                assert status == 503, detail
            if all(detail["workers_not_ready"] == [1] for _status, detail in answers.values()):
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.1)
        (tmp_path / "gate").touch()
        deadline = time.monotonic() + 20
        while True:
            answers = _both(readyz)
            if all(status == 200 for status, _ in answers.values()):
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.1)
        for _status, detail in answers.values():
            assert detail == {"ready": True, "caches": True, "tls": True, "workers": WORKERS}


class Clock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns


def test_the_board_holds_a_worker_not_ready_until_it_posts_ready_and_while_it_stays_current() -> (
    None
):
    clock = Clock()
    board = ReadinessBoard(3, stale_after=10.0, clock=clock)
    assert board.waiting() == [0, 1, 2]  # nobody posted yet
    board.post(0, True)
    board.post(1, False)
    board.post(2, True)
    assert board.waiting() == [1]
    board.post(1, True)
    assert board.waiting() == []
    clock.ns += 9 * 10**9
    board.post(0, True)
    clock.ns += 2 * 10**9  # 11 s since workers 1 and 2 last posted: their loops are stuck
    assert board.waiting() == [1, 2]


def _post_from_child(board: ReadinessBoard) -> None:
    board.post(1, True)


def test_the_board_is_shared_with_forked_workers() -> None:
    board = ReadinessBoard(2)
    board.post(0, True)
    child = multiprocessing.get_context("fork").Process(target=_post_from_child, args=(board,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert board.waiting() == []
