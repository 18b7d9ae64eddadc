"""The webhook's Prometheus series: documented names, parseable exposition, one registry each."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from webhook.metrics import WebhookMetrics

SERIES = {
    "netshift_webhook_requests": "counter",
    "netshift_webhook_request_duration_seconds": "histogram",
    "netshift_webhook_cache_synced": "gauge",
    "netshift_webhook_certificate_expiry_timestamp_seconds": "gauge",
    "netshift_webhook_certificate_reloads": "counter",
}


def families(metrics: WebhookMetrics) -> dict[str, str]:
    text = metrics.render().decode()
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_every_documented_series_has_help_and_type_even_before_samples() -> None:
    text = WebhookMetrics().render().decode()
    assert families(WebhookMetrics()) == SERIES
    for name in ("netshift_webhook_requests_total", "netshift_webhook_certificate_reloads_total"):
        assert f"# HELP {name} " in text and f"# TYPE {name} counter" in text
    assert "_created" not in text


def test_a_request_counts_and_lands_in_the_latency_histogram() -> None:
    metrics = WebhookMetrics()
    for seconds in (0.0002, 0.03, 7.0):
        metrics.observe_request("mutate", "patched", seconds)
    text = metrics.render().decode()
    assert 'netshift_webhook_requests_total{endpoint="mutate",outcome="patched"} 3.0' in text
    bucket = "netshift_webhook_request_duration_seconds_bucket"
    assert f'{bucket}{{endpoint="mutate",le="0.0005",outcome="patched"}} 1.0' in text
    assert f'{bucket}{{endpoint="mutate",le="0.05",outcome="patched"}} 2.0' in text
    assert f'{bucket}{{endpoint="mutate",le="+Inf",outcome="patched"}} 3.0' in text
    assert metrics.requests_value("mutate", "patched") == 3
    assert metrics.requests_value("validate", "denied") == 0


def test_two_webhooks_in_one_process_keep_their_own_counts() -> None:
    a, b = WebhookMetrics(), WebhookMetrics()
    a.observe_request("validate", "denied", 0.001)
    assert a.requests_value("validate", "denied") == 1
    assert b.requests_value("validate", "denied") == 0
