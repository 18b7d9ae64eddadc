"""The webhook's Prometheus series (prometheus_client, on a registry of its own).

Names and labels are those of the hand-written module this replaced (docs/webhook.md);
the exposition now comes from prometheus_client, so values print as floats ("1.0").
Thread-safe: the TLS reloader thread and the event loop both update them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from netshift.metrics import ADMISSION_BUCKETS, new_registry, render, sample_value


class WebhookMetrics:
    """The webhook's metrics; one instance per process, shared by both listeners."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.requests = Counter(
            "netshift_webhook_requests",
            "Admission requests handled, by endpoint and outcome "
            "(allowed, patched, denied, error, bad_request).",
            ("endpoint", "outcome"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "netshift_webhook_request_duration_seconds",
            "Time from the request's arrival to its answer, by endpoint and outcome.",
            ("endpoint", "outcome"),
            buckets=ADMISSION_BUCKETS,
            registry=self.registry,
        )
        self.cache_synced = Gauge(
            "netshift_webhook_cache_synced",
            "1 when the watch-fed caches have synced, else 0.",
            registry=self.registry,
        )
        self.cert_not_after = Gauge(
            "netshift_webhook_certificate_expiry_timestamp_seconds",
            "Expiry (Unix time) of the serving certificate in use.",
            registry=self.registry,
        )
        self.cert_reloads = Counter(
            "netshift_webhook_certificate_reloads",
            "Serving certificates loaded into the TLS context, by result.",
            ("result",),
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.requests.labels(endpoint, outcome).inc()
        self.latency.labels(endpoint, outcome).observe(seconds)

    def requests_value(self, endpoint: str, outcome: str) -> float:
        return sample_value(
            self.registry, "netshift_webhook_requests_total", endpoint=endpoint, outcome=outcome
        )

    def render(self) -> bytes:
        return render(self.registry)
