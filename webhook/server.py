"""Serving the webhook: uvicorn over TLS 1.2+ with certificates swapped live, plus a
plain-HTTP listener for probes and metrics.

Live reload: uvicorn is handed one `ssl.SSLContext` for its whole life. A new
certificate is loaded into that same context with `load_cert_chain`; OpenSSL
copies the context's certificate into each connection when the connection is
created, so handshakes after the reload present the new certificate while
connections already open keep theirs and their in-flight requests complete.
The reload runs on the event loop thread, the thread that creates the
connections, so it never races a handshake.

HTTP/1.1 only (httptools, or h11 without it; ALPN "http/1.1"): the apiserver
speaks it and HTTP/2's rapid-reset class of attacks (CVE-2023-39325) stays out.
Event loop: uvloop when installed. Request heads are capped at MAX_HEADER_BYTES
with either HTTP implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhook.certs import ServingMaterial, check_pair, describe
from webhook.metrics import WebhookMetrics

log = logging.getLogger(__name__)

# Request heads larger than this are refused (400) before the app sees them.
MAX_HEADER_BYTES = 64 * 1024


class ReloadableTLS:
    """One server-side SSLContext whose certificate can be replaced at any time."""

    def __init__(self, metrics: WebhookMetrics | None = None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        ctx.set_alpn_protocols(["http/1.1"])
        self.context = ctx
        self.metrics = metrics
        self.serial: int | None = None
        self.fingerprint: str | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.serial is not None

    def load(self, material: ServingMaterial) -> bool:
        """Load a certificate chain and key; False (and no change) when it is the same pair.

        Call on the event loop thread once the server runs (see `WebhookServer.reload`).
        """
        fingerprint = material.fingerprint()
        if fingerprint == self.fingerprint:
            return False
        try:
            cert = check_pair(material.cert_pem, material.key_pem)
            # load_cert_chain reads files only; a private directory keeps the key unexposed.
            with self._lock, tempfile.TemporaryDirectory(prefix="netshift-tls-") as tmp:
                cert_path = Path(tmp, "tls.crt")
                key_path = Path(tmp, "tls.key")
                cert_path.write_bytes(material.cert_pem)
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(material.key_pem)
                self.context.load_cert_chain(cert_path, key_path)
        except (ValueError, ssl.SSLError, OSError) as err:
            if self.metrics is not None:
                self.metrics.cert_reloads.labels("failure").inc()
            raise ValueError(f"serving certificate not loaded: {err}") from err
        self.serial = cert.serial_number
        self.fingerprint = fingerprint
        if self.metrics is not None:
            self.metrics.cert_reloads.labels("success").inc()
            self.metrics.cert_not_after.set(cert.not_valid_after_utc.timestamp())
        log.info("serving certificate loaded: %s", describe(cert))
        return True


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one), IPv6 when the host says so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and
    # without it Nagle + delayed ACKs add 40 ms to every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop the webhook serves on: uvloop when installed ($NETSHIFT_WEBHOOK_LOOP)."""
    if os.environ.get("NETSHIFT_WEBHOOK_LOOP", "uvloop") == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class CoalescingTransport:
    """A transport whose writes within one event-loop step leave in one write.

    uvicorn writes a response's head and its body separately; over TLS each
    write is a record of its own and a send() of its own, which on the webhook's
    small answers costs about as much as the answer itself (py-spy: a third of
    a request's time was in those writes). Collected here and written once, at
    the end of the loop step (`call_soon`), or before a close. Everything else
    is the transport's own.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():  # the peer went away: nobody to write to
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadCappedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, C) with the request-head cap h11 has, whose
    responses leave in one write (`CoalescingTransport`).

    llhttp buffers a header of any size; here a request whose head is still not
    complete after MAX_HEADER_BYTES bytes (plus at most one read) gets a 400 and
    the connection closes, as h11 answers an oversized head.
    """

    _head_bytes = 0
    _in_head = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > MAX_HEADER_BYTES
            and not self.transport.is_closing()
        ):
            self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True


def _http_protocol() -> type[asyncio.Protocol] | str:
    """httptools (measured: p50 0.43 vs 0.61 ms with h11, bench/admission.py); h11 on request."""
    if os.environ.get("NETSHIFT_WEBHOOK_HTTP", "httptools") == "h11":
        return "h11"
    return HeadCappedHttpTools


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `WebhookServer`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: Any, tls: ReloadableTLS | None, **overrides: Any) -> uvicorn.Config:
    settings: dict[str, Any] = {
        "http": _http_protocol(),
        "loop": "asyncio",
        "lifespan": "off",
        "log_config": None,
        "access_log": False,
        # The apiserver calls the webhook directly: no proxy headers to trust or parse.
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 10,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": 2000,
    }
    settings.update(overrides)
    if tls is not None:
        context = tls.context

        def factory(
            _config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]
        ) -> ssl.SSLContext:
            return context

        settings["ssl_context_factory"] = factory
    return uvicorn.Config(app, **settings)


class WebhookServer:
    """The TLS admission listener and, optionally, a plain-HTTP health listener."""

    def __init__(
        self,
        app: Any,
        tls: ReloadableTLS,
        sock: socket.socket,
        *,
        health_app: Any = None,
        health_sock: socket.socket | None = None,
        shutdown_delay: float = 0.0,
        tick: Callable[[], object] | None = None,
        tick_interval: float = 1.0,
    ) -> None:
        self.tls = tls
        self.shutdown_delay = shutdown_delay
        # Called every tick_interval on the event loop while serving: a worker posts its
        # readiness from there, so a worker whose loop is stuck stops looking ready.
        self.tick = tick
        self.tick_interval = tick_interval
        # Set on SIGTERM: /readyz turns 503 while requests are still served.
        self.stopping = threading.Event()
        self.sock = sock
        self.health_sock = health_sock
        self._servers = [(_Server(_config(app, tls)), sock)]
        if health_app is not None and health_sock is not None:
            self._servers.append((_Server(_config(health_app, None)), health_sock))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.started = threading.Event()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def health_port(self) -> int | None:
        return None if self.health_sock is None else int(self.health_sock.getsockname()[1])

    async def serve(self, *, handle_signals: bool = False) -> None:
        if not self.tls.loaded:
            raise RuntimeError("no serving certificate loaded")
        self._loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._on_signal)
        tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in self._servers]
        helpers = [asyncio.create_task(self._mark_started())]
        if self.tick is not None:
            helpers.append(asyncio.create_task(self._ticking(self.tick)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for helper in helpers:
                helper.cancel()
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self._loop.remove_signal_handler(sig)

    async def _mark_started(self) -> None:
        while not all(s.started for s, _ in self._servers):
            await asyncio.sleep(0.01)
        self.started.set()

    async def _ticking(self, tick: Callable[[], object]) -> None:
        while True:
            try:
                tick()
            except Exception:
                log.exception("webhook tick failed")
            await asyncio.sleep(self.tick_interval)

    def _on_signal(self) -> None:
        if self.stopping.is_set() or self._loop is None:
            self.request_exit()  # a second signal: stop now
            return
        # Keep serving while the Service's endpoints and the apiserver catch up
        # with the pod going away; new admission requests still get answers.
        self.stopping.set()
        log.info("stopping: not ready, serving %.0fs more", self.shutdown_delay)
        self._loop.call_later(self.shutdown_delay, self.request_exit)

    def request_exit(self) -> None:
        """Stop accepting, let open requests finish, then return from `serve` (any thread)."""
        for server, _ in self._servers:
            server.should_exit = True

    def reload(self, material: ServingMaterial, timeout: float = 10.0) -> bool:
        """Load new TLS material on the event loop thread; callable from any thread."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return self.tls.load(material)
        if _in_loop(loop):
            return self.tls.load(material)
        return asyncio.run_coroutine_threadsafe(_call(self.tls.load, material), loop).result(
            timeout
        )

    def run(self, *, handle_signals: bool = False) -> None:
        """Serve on a new event loop in this thread until stopped."""
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(self.serve(handle_signals=handle_signals))

    # -- running in a background thread (tests, benchmarks, `netshift up`) ----

    def start_in_thread(self, timeout: float = 10.0) -> None:
        def main() -> None:
            self.run()

        self._thread = threading.Thread(target=main, name="webhook-server", daemon=True)
        self._thread.start()
        if not self.started.wait(timeout):
            raise RuntimeError("webhook server did not start")

    def stop_thread(self, timeout: float = 15.0) -> None:
        self.request_exit()
        if self._thread is not None:
            self._thread.join(timeout)


async def _call(fn: Callable[[ServingMaterial], bool], material: ServingMaterial) -> bool:
    return fn(material)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
