"""The webhook's Prometheus series: documented names, parseable exposition, one registry each,
and with several worker processes one exposition that counts every worker's admissions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

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


# Multiprocess mode changes process-wide state, so it runs in a child: three forked "workers"
# count admissions and set gauges; the merged exposition is then checked, in JSON, by the test.
MULTIPROCESS = textwrap.dedent(
    """
    import json
    import os
    import sys
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    from netshift.metrics import exposition, new_registry, process_gone, render
    from webhook.metrics import WebhookMetrics
    from webhook.workers import Workers

    workers = Workers.prepare(3, Path(sys.argv[1]))
    plan = [(4, 1.0, 3000.0), (7, 1.0, 2000.0), (2, 0.0, 5000.0)]  # (admissions, synced, expiry)
    pids = []
    for admissions, synced, expiry in plan:
        pid = os.fork()
        if pid == 0:
            metrics = WebhookMetrics()
            for _ in range(admissions):
                metrics.observe_request("mutate", "patched", 0.001)
            metrics.observe_request("validate", "denied", 0.002)
            metrics.cache_synced.set(synced)
            metrics.cert_not_after.set(expiry)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)

    def merged():  # read like the supervisor would: it has no metrics of its own
        text = render(exposition(new_registry())).decode()
        return {
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    before = merged()
    process_gone(pids[2])  # the worker whose caches were not synced exits
    print(json.dumps({"before": before, "after": merged()}))
    """
)


def _merged(directory: Path) -> dict[str, dict[str, float]]:
    done = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS, str(directory)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result: dict[str, dict[str, float]] = json.loads(done.stdout)
    return result


def test_with_several_workers_counters_and_histograms_add_up_and_gauges_take_the_minimum(
    tmp_path: Path,
) -> None:
    merged = _merged(tmp_path / "metrics")
    before, after = merged["before"], merged["after"]
    patched = 'netshift_webhook_requests_total{"endpoint": "mutate", "outcome": "patched"}'
    denied = 'netshift_webhook_requests_total{"endpoint": "validate", "outcome": "denied"}'
    count = 'netshift_webhook_request_duration_seconds_count{"endpoint": "mutate", "outcome": "patched"}'
    assert before[patched] == 4 + 7 + 2
    assert before[denied] == 3
    assert before[count] == 13
    # untouched series are there at 0 in every worker's file, so they merge to 0
    assert before['netshift_webhook_requests_total{"endpoint": "mutate", "outcome": "error"}'] == 0
    # one worker not synced: the replica is not; the earliest expiry is the one to alert on
    assert before["netshift_webhook_cache_synced{}"] == 0.0
    assert before["netshift_webhook_certificate_expiry_timestamp_seconds{}"] == 2000.0
    # a worker gone: its gauges no longer speak for the replica, its admissions still count
    assert after["netshift_webhook_cache_synced{}"] == 1.0
    assert after[patched] == 13


def test_a_new_run_starts_its_counts_from_zero_in_the_same_directory(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    _merged(directory)
    (directory / "unrelated.txt").write_text("kept")
    merged = _merged(directory)["before"]
    assert (
        merged['netshift_webhook_requests_total{"endpoint": "mutate", "outcome": "patched"}'] == 13
    )
    assert (directory / "unrelated.txt").read_text() == "kept"
