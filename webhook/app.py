"""The webhook's HTTP surface: /mutate, /validate, /validate-nad, /mutate-namespace, /healthz,
/readyz, /metrics.

Hardening, in the order a request meets it:
- a body over `max_body_bytes` (1 MiB) → 413, checked on Content-Length and
  again while reading (chunked bodies); a body that trickles in for longer
  than `body_timeout` → 408;
- a Content-Type other than application/json → 415;
- a body that is not JSON, or not an admission.k8s.io/v1 AdmissionReview with
  a request → 400 with {"error": "..."} saying what is wrong;
- a well-formed review whose evaluation fails unexpectedly → 200 with an
  AdmissionReview that denies (allowed=false, code 500) and names the request
  uid; the traceback goes to the log. Never an HTTP 500. /mutate-namespace
  admits unchanged instead: it only labels namespaces, and never blocks one.

Admission runs on the event loop without threads: it is pure CPU work over
in-memory caches. When the namespace is not in the cache yet (namespace and
pod created back to back) the request waits up to `cache_wait` for the watch
to catch up before the logic decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from netshift.metrics import CONTENT_TYPE
from webhook.admission import (
    AdmissionRequest,
    Decision,
    MalformedReview,
    review_response,
)
from webhook.caches import Caches
from webhook.fastpath import JSON, dumps, loads, parse_request
from webhook.metrics import WebhookMetrics
from webhook.mutate import mutate_pod
from webhook.namespaces import mutate_namespace
from webhook.validate import ValidationOptions, validate_pod
from webhook.validate_nad import validate_nad
from webhook.workers import ReadinessBoard

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
NAD_ENDPOINT = "validate-nad"
NAMESPACE_ENDPOINT = "mutate-namespace"


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class WebhookSettings:
    caches: Caches
    options: ValidationOptions = field(default_factory=ValidationOptions)
    metrics: WebhookMetrics = field(default_factory=WebhookMetrics)
    # Extra readiness conditions: a serving certificate is loaded; not shutting down.
    tls_ready: Callable[[], bool] = lambda: True
    stopping: Callable[[], bool] = lambda: False
    # Several worker processes (webhook/workers.py): each posts its own readiness on the
    # board as worker `worker`, and /readyz on any of them answers for the replica.
    board: ReadinessBoard | None = None
    worker: int = 0
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout: float = 10.0
    cache_wait: float = 2.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise _HttpError(400, f"invalid Content-Length {length!r}") from None
        if declared > limit:
            raise _HttpError(413, f"request body of {declared} bytes exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _HttpError(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_review(body: bytes) -> AdmissionRequest:
    if not body:
        raise MalformedReview("empty request body; expected an AdmissionReview")
    return parse_request(loads(body))


class Admission:
    """Runs one admission endpoint: reads, parses, decides, answers, measures."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.s = settings

    def own_ready(self) -> tuple[bool, dict[str, object]]:
        """This process's readiness, posted on the board and in the cache gauge."""
        caches, tls = self.s.caches.synced(), self.s.tls_ready()
        self.s.metrics.cache_synced.set(1.0 if caches else 0.0)
        detail: dict[str, object] = {"caches": caches, "tls": tls}
        ok = caches and tls
        if self.s.stopping():
            detail["stopping"] = True
            ok = False
        if self.s.board is not None:
            self.s.board.post(self.s.worker, ok)
        return ok, detail

    def ready(self) -> tuple[bool, dict[str, object]]:
        """The replica's readiness: this process's, and every other worker's from the board."""
        ok, detail = self.own_ready()
        board = self.s.board
        if board is not None and board.workers > 1:
            waiting = board.waiting()
            detail["workers"] = board.workers
            if waiting:
                detail["workers_not_ready"] = waiting
                ok = False
        return ok, detail

    async def _wait_for_cache(self, request: AdmissionRequest) -> None:
        caches = self.s.caches
        namespace = request.namespace

        def caught_up() -> bool:
            return caches.synced() and (
                not namespace or caches.namespace_labels(namespace) is not None
            )

        deadline = time.monotonic() + self.s.cache_wait
        while not caught_up() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _decide(self, endpoint: str, request: AdmissionRequest) -> Decision:
        if endpoint == NAMESPACE_ENDPOINT:
            return mutate_namespace(request, self.s.caches)  # never denies, synced or not
        if not self.s.caches.synced():
            return Decision.deny(
                "the netshift webhook is starting and its caches have not synced yet; retry",
                code=503,
                outcome="error",
            )
        if endpoint == "mutate":
            return mutate_pod(request, self.s.caches)
        if endpoint == NAD_ENDPOINT:
            return validate_nad(request, self.s.caches)
        return validate_pod(request, self.s.caches, self.s.options)

    async def handle(self, endpoint: str, http: Request) -> Response:
        started = time.perf_counter()
        outcome = "bad_request"
        try:
            content_type = http.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise _HttpError(
                    415, f"Content-Type must be application/json, got {content_type or 'none'!r}"
                )
            try:
                async with asyncio.timeout(self.s.body_timeout):
                    body = await _read_body(http, self.s.max_body_bytes)
            except TimeoutError:
                raise _HttpError(408, "request body not received in time") from None
            request = _decode_review(body)
            if (
                endpoint not in (NAD_ENDPOINT, NAMESPACE_ENDPOINT)
                and request.namespace
                and self.s.caches.namespace_labels(request.namespace) is None
            ):
                await self._wait_for_cache(request)
            try:
                decision = self._decide(endpoint, request)
            except MalformedReview:
                raise
            except Exception:
                log.exception(
                    "%s: unexpected error on request %s (%s %s/%s)",
                    endpoint,
                    request.uid,
                    request.operation,
                    request.namespace,
                    request.name,
                )
                decision = Decision.deny(
                    f"netshift webhook internal error while handling request {request.uid}; "
                    "see the webhook's log",
                    code=500,
                    outcome="error",
                )
                if endpoint == NAMESPACE_ENDPOINT:
                    decision = Decision.allow(audit={"skipped": "internal error"})
            outcome = decision.outcome or ("allowed" if decision.allowed else "denied")
            if not decision.allowed:
                log.info(
                    "%s denied %s %s/%s: %s",
                    endpoint,
                    request.operation,
                    request.namespace,
                    request.name,
                    decision.message,
                )
            return Response(dumps(review_response(request.uid, decision)), media_type=JSON)
        except _HttpError as err:
            return _error(err.status, err.message)
        except MalformedReview as err:
            return _error(400, str(err))
        finally:
            self.s.metrics.observe_request(endpoint, outcome, time.perf_counter() - started)


def _add_health_routes(app: FastAPI, admission: Admission) -> None:
    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    @app.get("/readyz")
    async def readyz() -> Response:
        ok, detail = admission.ready()
        return JSONResponse({"ready": ok, **detail}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        admission.own_ready()  # refresh this worker's cache gauge
        return Response(admission.s.metrics.render(), media_type=CONTENT_TYPE)


def _bare_app() -> FastAPI:
    return FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class AdmissionApp:
    """The TLS app: a POST to an admission path goes straight to `Admission.handle`,
    everything else (health, metrics, 404, 405, redirects) to a FastAPI app.

    py-spy put the middleware stack and router of Starlette and FastAPI (server
    errors, exceptions, telemetry, body limit, exit stack, route matching) at
    about an eighth of an admission request, for paths that use none of it:
    `handle` answers every error itself (see the module doc). The FastAPI app
    keeps the admission routes, so other methods on them still get a 405.
    """

    def __init__(self, settings: WebhookSettings) -> None:
        self.admission = admission = Admission(settings)
        self.endpoints = {
            "/mutate": "mutate",
            "/validate": "validate",
            f"/{NAD_ENDPOINT}": NAD_ENDPOINT,
            f"/{NAMESPACE_ENDPOINT}": NAMESPACE_ENDPOINT,
        }
        self.fallback = _bare_app()
        for path, endpoint in self.endpoints.items():

            async def route(request: Request, endpoint: str = endpoint) -> Response:
                return await admission.handle(endpoint, request)

            self.fallback.add_route(path, route, methods=["POST"], include_in_schema=False)
        _add_health_routes(self.fallback, admission)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                response = await self.admission.handle(endpoint, Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def create_app(settings: WebhookSettings) -> AdmissionApp:
    """The TLS app: admission endpoints plus health and metrics."""
    return AdmissionApp(settings)


def create_health_app(settings: WebhookSettings) -> FastAPI:
    """The plain-HTTP app for kubelet probes and Prometheus: no admission endpoints."""
    app = _bare_app()
    _add_health_routes(app, Admission(settings))
    return app


def readiness_tick(settings: WebhookSettings) -> Callable[[], object]:
    """What a worker runs every second (`WebhookServer(tick=...)`): post its own readiness."""
    return Admission(settings).own_ready
