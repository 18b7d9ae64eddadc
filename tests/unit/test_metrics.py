"""Metrics of the controller (pure, from its plans) and the health server every component uses."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import AgentMetrics, orphaned
from controller.metrics import ControllerMetrics
from netshift.keys import DEGRADED
from netshift.metrics import HealthServer, render
from support.controller import plan as make_plan
from support.controller import pods, profile, reported, snapshot, start

IN_PROGRESS = "netshift_controller_rollouts_in_progress"
IN_FLIGHT = "netshift_controller_pods_in_flight"
STATE = "netshift_controller_rollout_state"


def states_of(metrics: ControllerMetrics) -> list[dict[str, str]]:
    """The labels of every rollout_state series (the value is 1 or the series is absent)."""
    text = render(metrics.registry).decode()
    return [
        dict(sample.labels)
        for family in text_string_to_metric_families(text)
        if family.name == STATE
        for sample in family.samples
        if sample.value == 1
    ]


def test_the_controller_documents_its_series_before_any_rollout() -> None:
    text = render(ControllerMetrics().registry).decode()
    found = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert found == {
        "netshift_controller_leader": "gauge",
        "netshift_controller_rollouts_in_progress": "gauge",
        "netshift_controller_pods_in_flight": "gauge",
        "netshift_controller_pods_started": "counter",
        "netshift_controller_patch_conflicts": "counter",
        "netshift_controller_reconcile_errors": "counter",
        "netshift_controller_reconcile_duration_seconds": "histogram",
        "netshift_controller_queue_depth": "gauge",
        "netshift_controller_rollout_state": "gauge",
        "netshift_controller_rollout_pods": "gauge",
    }


def test_a_rollout_is_in_progress_while_pods_are_in_flight_and_not_once_converged() -> None:
    metrics = ControllerMetrics()
    blue = profile("blue", existingPods="Live", maxConcurrent=2)
    first = make_plan("blue", snapshot([blue], pods(3)))
    started = [start(p, first) for p in pods(3)[:2]] + pods(3)[2:]
    metrics.observe_plan(make_plan("blue", snapshot([blue], started)))
    assert metrics.value(IN_PROGRESS) == 1
    assert metrics.value(IN_FLIGHT, profile="blue") == 2

    # Every pod patched and reported converged: nothing left to do.
    settled = [reported(p) for p in started[:2]] + started[2:]
    last = start(settled[2], make_plan("blue", snapshot([blue], settled)))
    done = [*settled[:2], reported(last)]
    metrics.observe_plan(make_plan("blue", snapshot([blue], done)))
    assert metrics.value(IN_PROGRESS) == 0
    assert metrics.value(IN_FLIGHT, profile="blue") == 0


def test_a_deleted_rollout_or_a_standby_reports_nothing() -> None:
    metrics = ControllerMetrics()
    blue = profile("blue", existingPods="Live")
    metrics.observe_plan(make_plan("blue", snapshot([blue], pods(2))))
    assert metrics.value(IN_PROGRESS) == 1
    metrics.observe_plan(make_plan("blue", snapshot([], [])))
    assert metrics.value(IN_PROGRESS) == 0
    assert f'{IN_FLIGHT}{{profile="blue"}}' not in render(metrics.registry).decode()


def test_a_halted_rollout_is_one_failed_series_until_its_pod_recovers() -> None:
    metrics = ControllerMetrics()
    blue = profile("blue", existingPods="Live", maxConcurrent=2, maxFailures=1)
    started = [start(p, make_plan("blue", snapshot([blue], pods(3)))) for p in pods(3)[:2]]
    metrics.observe_plan(make_plan("blue", snapshot([blue], [*started, pods(3)[2]])))
    rolling = {"profile": "blue", "state": "Progressing", "reason": "RollingOut"}
    assert states_of(metrics) == [rolling]

    # One pod fails (the agent reports Degraded): maxFailures 1 stops the rollout.
    failed = reported(started[0], phase=DEGRADED, message="plugin not found")
    halted = [failed, reported(started[1]), pods(3)[2]]
    metrics.observe_plan(make_plan("blue", snapshot([blue], halted)))
    assert states_of(metrics) == [
        {"profile": "blue", "state": "Failed", "reason": "FailureThresholdReached"}
    ]
    assert metrics.value("netshift_controller_rollout_pods", profile="blue", state="failed") == 1
    assert metrics.value("netshift_controller_rollout_pods", profile="blue", state="desired") == 3

    # The failed pod converges after all: the Failed series is gone, not left at 1.
    recovered = [reported(failed), halted[1], halted[2]]
    metrics.observe_plan(make_plan("blue", snapshot([blue], recovered)))
    assert states_of(metrics) == [rolling]
    assert metrics.value("netshift_controller_rollout_pods", profile="blue", state="failed") == 0

    metrics.forget("blue")
    assert states_of(metrics) == []
    assert "rollout_pods{" not in render(metrics.registry).decode()


def test_a_finished_rollout_reads_complete_as_rollout_status_would() -> None:
    metrics = ControllerMetrics()
    blue = profile("blue", existingPods="Live", maxConcurrent=5)
    started = [start(p, make_plan("blue", snapshot([blue], pods(2)))) for p in pods(2)]
    metrics.observe_plan(make_plan("blue", snapshot([blue], [reported(p) for p in started])))
    assert states_of(metrics) == [
        {"profile": "blue", "state": "Complete", "reason": "AllPodsConverged"}
    ]


def test_the_health_server_serves_metrics_health_and_readiness() -> None:
    metrics = ControllerMetrics()
    metrics.pods_started.labels("blue").inc()
    ready = False
    server = HealthServer(metrics.registry, "127.0.0.1", 0, ready=lambda: ready).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as http:
            r = http.get("/metrics")
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert 'netshift_controller_pods_started_total{profile="blue"} 1.0' in r.text
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 503
            ready = True
            assert http.get("/readyz").json() == {"ready": True}
            assert http.get("/nope").status_code == 404
    finally:
        server.stop()


def test_the_agent_series_exist_and_count_by_result_and_reason() -> None:
    metrics = AgentMetrics()
    text = render(metrics.registry).decode()
    found = {f.name for f in text_string_to_metric_families(text)}
    assert found == {
        "netshift_agent_attach_duration_seconds",
        "netshift_agent_detach_duration_seconds",
        "netshift_agent_default_switch_duration_seconds",
        "netshift_agent_failures",
        "netshift_agent_records",
        "netshift_agent_orphaned_records",
        "netshift_agent_nad_policy_enabled",
        "netshift_agent_queue_depth",
        "netshift_agent_queue_retries",
    }
    metrics.observe("attach", 0.2, ok=True)
    metrics.failed("attach", "nad_policy")
    metrics.failed("switch", "something new")
    count = "netshift_agent_attach_duration_seconds_count"
    assert metrics.value(count, result="success") == 1
    assert metrics.value("netshift_agent_failures_total", operation="attach", reason="nad_policy")
    assert metrics.value("netshift_agent_failures_total", operation="switch", reason="other") == 1


def test_orphaned_records_are_those_of_pods_gone_or_finished_not_terminating() -> None:
    pods = {
        "live": {"status": {"phase": "Running"}},
        "terminating": {"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}},
        "done": {"status": {"phase": "Succeeded"}},
        "crashed": {"status": {"phase": "Failed"}},
    }
    records = [("live", 2), ("terminating", 1), ("done", 1), ("crashed", 3), ("deleted", 4)]
    assert orphaned(records, pods) == 1 + 3 + 4
    assert orphaned([], pods) == 0
