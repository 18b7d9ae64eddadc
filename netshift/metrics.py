"""Prometheus metrics for netshift's components: a registry per component, served over plain HTTP.

Every component defines its series on its own `CollectorRegistry`, never on
prometheus_client's process-global one, so that tests can run a webhook, a
controller and an agent in one process without their series colliding.
`HealthServer` serves /healthz, /readyz and /metrics for components that have
no web framework of their own (the controller, the agent); the webhook serves
the same paths from its FastAPI health app with `render`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger(__name__)

# The text format every Prometheus and every ServiceMonitor scrapes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# The `*_created` twin of every counter and histogram doubles the output and nobody
# alerts on it; prometheus_client only offers a process-wide switch.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Admission latency: a fraction of a millisecond up to the apiserver's timeout.
ADMISSION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Work that runs CNI plugins or waits for the API: milliseconds up to a couple of minutes.
OPERATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the text exposition format (CONTENT_TYPE)."""
    return generate_latest(registry)


def sample_value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The current value of one sample (0 when it does not exist yet): for tests and probes."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class HealthServer:
    """/healthz, /readyz and /metrics on a plain-HTTP port, served from daemon threads.

    `ready()` answers /readyz (200 or 503); /healthz is 200 while the process
    serves at all. Port 0 picks a free port (see `port`).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.registry = registry
        self._ready = ready
        handler = _handler(self)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path`."""
        if path == "/metrics":
            return 200, CONTENT_TYPE, render(self.registry)
        if path == "/healthz":
            return 200, "application/json", b'{"ok": true}'
        if path == "/readyz":
            try:
                ok = bool(self._ready())
            except Exception:
                log.exception("readiness check failed")
                ok = False
            return (200 if ok else 503), "application/json", json.dumps({"ready": ok}).encode()
        return 404, "application/json", b'{"error": "not found"}'


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = server.answer(self.path.split("?", 1)[0])
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes and probes every few seconds would drown the log.
            pass

    return Handler
