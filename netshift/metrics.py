"""Prometheus metrics for netshift's components: a registry per component, served over plain HTTP.

Every component defines its series on its own `CollectorRegistry`, never on
prometheus_client's process-global one, so that tests can run a webhook, a
controller and an agent in one process without their series colliding.
`HealthServer` serves /healthz, /readyz and /metrics for components that have
no web framework of their own (the controller, the agent); the webhook serves
the same paths from its FastAPI health app with `render`.

A component that forks worker processes (the webhook, `--workers N`) switches
the process to prometheus_client's multiprocess mode before forking
(`enable_multiprocess`): every value then lives in a per-process file of one
directory, and `exposition` renders the sum (or the gauge mode's min, max...)
of every worker's files, so that a scrape answered by any worker counts them all.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

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


# prometheus_client's own name for the directory of multiprocess mode.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def multiprocess_directory() -> Path | None:
    """The directory of this process's metric files when in multiprocess mode, else None."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    path = os.environ.get(MULTIPROCESS_ENV)
    return Path(path) if path else None


def prepare_multiprocess_directory(directory: Path) -> None:
    """Create `directory` or empty it of metric files (`*.db`) a previous run left.

    Counters there would otherwise add a dead process's totals to the new ones;
    other files are left alone, in case the directory is shared with something else.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def enable_multiprocess(directory: Path) -> None:
    """Back every metric this process and its forks create from now on by files in `directory`.

    prometheus_client chooses its value class once, at import, from
    $PROMETHEUS_MULTIPROC_DIR; a component that decides on workers at run time
    (a flag) makes the same choice here instead. Call it before any metric is
    created and before forking; the forks then write files named by their own pid.
    """
    os.environ[MULTIPROCESS_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def process_gone(pid: int) -> None:
    """Drop the `live*` gauges of a worker that exited (multiprocess mode; else nothing)."""
    directory = multiprocess_directory()
    if directory is not None:
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def exposition(registry: CollectorRegistry) -> CollectorRegistry:
    """What to scrape: `registry` itself, or in multiprocess mode every process's files merged.

    (In multiprocess mode a metric object still answers with its own process's
    value only; the merged view reads the directory.)
    """
    directory = multiprocess_directory()
    if directory is None:
        return registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=str(directory))  # type: ignore[no-untyped-call]
    return merged


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
