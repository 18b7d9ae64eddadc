"""Prometheus text exposition written by hand: well-formed, cumulative, escaped."""

from __future__ import annotations

from webhook.metrics import Counter, Histogram, Registry, WebhookMetrics


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    h = Histogram("lat_seconds", "latency", ("endpoint",), buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 3.0):
        h.observe(value, "mutate")
    lines = h.samples()
    assert lines == [
        'lat_seconds_bucket{endpoint="mutate",le="0.1"} 1',
        'lat_seconds_bucket{endpoint="mutate",le="1"} 3',
        'lat_seconds_bucket{endpoint="mutate",le="+Inf"} 4',
        'lat_seconds_sum{endpoint="mutate"} 4.05',
        'lat_seconds_count{endpoint="mutate"} 4',
    ]


def test_label_values_and_help_are_escaped() -> None:
    registry = Registry()
    c = registry.register(Counter("x_total", "help with \\ and\nnewline", ("v",)))
    c.inc('a"b\\c\nd')
    text = registry.render()
    assert "# HELP x_total help with \\\\ and\\nnewline" in text
    assert 'x_total{v="a\\"b\\\\c\\nd"} 1' in text
    assert text.endswith("\n")


def test_every_metric_has_help_and_type_even_before_samples() -> None:
    text = WebhookMetrics().render()
    for name in (
        "netshift_webhook_requests_total",
        "netshift_webhook_request_duration_seconds",
        "netshift_webhook_cache_synced",
        "netshift_webhook_certificate_expiry_timestamp_seconds",
        "netshift_webhook_certificate_reloads_total",
    ):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text
