"""The webhook's Prometheus series (prometheus_client, on a registry of its own).

Names and labels are those of the hand-written module this replaced (docs/webhook.md);
the exposition now comes from prometheus_client, so values print as floats ("1.0").
Thread-safe: the TLS reloader thread and the event loop both update them.

With several worker processes (`--workers N`) the process is in prometheus_client's
multiprocess mode (`netshift.metrics.enable_multiprocess`): counters and histograms
are summed over the workers; each gauge says how its workers' values combine.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from netshift.metrics import ADMISSION_BUCKETS, exposition, new_registry, render, sample_value

ENDPOINTS = ("mutate", "validate", "validate-nad")
OUTCOMES = ("allowed", "patched", "denied", "error", "bad_request")
RELOAD_RESULTS = ("success", "failure")


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
        # livemin over the workers: 1 only when every worker's caches are synced.
        self.cache_synced = Gauge(
            "netshift_webhook_cache_synced",
            "1 when the watch-fed caches have synced (in every worker), else 0.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        # livemin: the certificate that expires first is the one an alert must see.
        self.cert_not_after = Gauge(
            "netshift_webhook_certificate_expiry_timestamp_seconds",
            "Expiry (Unix time) of the serving certificate in use (the earliest across workers).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.cert_reloads = Counter(
            "netshift_webhook_certificate_reloads",
            "Serving certificates loaded into the TLS context, by result (each worker loads its own).",
            ("result",),
            registry=self.registry,
        )
        # Every series exists from the start, at 0: rate() and absent() alerts work before the
        # first error, and with several workers a series no worker has touched would be missing.
        for endpoint in ENDPOINTS:
            for outcome in OUTCOMES:
                self.requests.labels(endpoint, outcome)
        for result in RELOAD_RESULTS:
            self.cert_reloads.labels(result)

    def observe_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.requests.labels(endpoint, outcome).inc()
        self.latency.labels(endpoint, outcome).observe(seconds)

    def requests_value(self, endpoint: str, outcome: str) -> float:
        """Admissions counted so far, by every worker of this replica."""
        return sample_value(
            exposition(self.registry),
            "netshift_webhook_requests_total",
            endpoint=endpoint,
            outcome=outcome,
        )

    def render(self) -> bytes:
        """The text exposition: this process's series, or every worker's merged."""
        return render(exposition(self.registry))
