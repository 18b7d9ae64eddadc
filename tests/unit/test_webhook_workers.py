"""Worker processes (`netshift webhook --workers`): they share the port, each reloads a rotated
keypair by itself, and SIGTERM to the supervisor stops them all."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cryptography import x509

from netshift import pki

SERVER = textwrap.dedent(
    """
    import os
    import sys
    from pathlib import Path

    from webhook.app import WebhookSettings, create_app
    from webhook.caches import StaticCaches
    from webhook.certs import CertWatcher, FileCertSource
    from webhook.server import ReloadableTLS, WebhookServer, bind, run_workers

    cert_dir = Path(sys.argv[1])
    source = FileCertSource(cert_dir / "tls.crt", cert_dir / "tls.key")
    sock = bind("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)

    def worker(index: int) -> int:
        tls = ReloadableTLS()
        tls.load(source.read())
        app = create_app(WebhookSettings(caches=StaticCaches()))

        async def tagged(scope, receive, send):  # which worker answered
            async def send_tagged(message):
                if message["type"] == "http.response.start":
                    pid = str(os.getpid()).encode()
                    message = {**message, "headers": [*message["headers"], (b"x-worker", pid)]}
                await send(message)

            await app(scope, receive, send_tagged)

        server = WebhookServer(tagged, tls, sock)
        watcher = CertWatcher(source.read, server.reload, 0.2)
        watcher.start()
        try:
            server.run(handle_signals=True)
        finally:
            watcher.stop()
        return 0

    sys.exit(run_workers(2, worker))
    """
)


def _write(cert_dir: Path, pair: pki.KeyPair) -> None:
    # key first, then the certificate: a half-written pair is skipped by the watcher
    (cert_dir / "tls.key").write_bytes(pair.key_pem)
    (cert_dir / "tls.crt").write_bytes(pair.cert_pem)


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
            if len(workers) == 2:
                return workers
        else:
            workers.clear()
        assert time.monotonic() < deadline, f"workers seen serving {serial:x}: {workers}"


def test_every_worker_serves_and_picks_up_a_rotated_keypair(tmp_path: Path) -> None:
    ca = pki.make_ca("workers-ca")
    first = pki.issue(ca, "webhook", ip_addresses=["127.0.0.1"], server=True)
    second = pki.issue(ca, "webhook", ip_addresses=["127.0.0.1"], server=True)
    _write(tmp_path, first)
    script = tmp_path / "serve.py"
    script.write_text(SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while True:
            try:
                _serial(port, ca)
                break
            except OSError:
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.1)
        first_serial = x509.load_pem_x509_certificate(first.cert_pem).serial_number
        second_serial = x509.load_pem_x509_certificate(second.cert_pem).serial_number
        before = _seen(port, ca, first_serial, 20)
        _write(tmp_path, second)
        # a worker that missed the new pair would answer with the old one and reset the set
        assert _seen(port, ca, second_serial, 20) == before
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0
