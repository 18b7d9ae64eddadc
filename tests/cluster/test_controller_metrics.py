"""`netshift controller` serves /metrics on its health port, and its series follow a rollout.

The controller runs as a child process, as in production, with --health-port;
the test scrapes it like Prometheus would. `StandInAgent` plays the agent's part
(there is no agent in the test cluster): it reports each patched pod converged.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.reconcile import Controller
from localcluster.cluster import LocalCluster
from localcluster.procs import free_port
from netshift.kube import Kube, pod_path, wait_for
from support.builders import create_nad
from support.controller import (
    ControllerProcess,
    StandInAgent,
    condition,
    create_pods,
    create_profile,
    delete_profile,
    label_namespace,
    profile_status,
    wait_running,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with httpx.Client(trust_env=False, timeout=5) as http:
        text = http.get(f"http://127.0.0.1:{port}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_profile(name: str, profile: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, (("profile", profile),))


def test_the_controllers_scraped_series_follow_a_profile_rollout(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    proc = ControllerProcess(
        cluster,
        tmp_path,
        "metrics",
        namespace,
        f"--health-port={port}",
        "--health-bind-address=127.0.0.1",
    )
    name = f"metrics-{namespace}"
    agent = StandInAgent(kube, [namespace], delay=0.5).start()
    seen_in_progress: list[float] = []
    stop = threading.Event()
    try:

        def leading() -> bool:
            try:
                return scrape(port).get(("netshift_controller_leader", ())) == 1.0
            except httpx.TransportError:
                return False

        try:
            wait_for(leading, 30, what="netshift_controller_leader 1 on /metrics")
        except TimeoutError:
            pytest.fail(f"the controller never led; its log:\n{proc.log_text()[-3000:]}")
        with httpx.Client(trust_env=False) as http:
            assert http.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

        label_namespace(kube, namespace, {"metrics": namespace})
        create_nad(kube, namespace, "net-b")
        create_pods(kube, namespace, 4)
        wait_running(kube, namespace, 4)

        def watch() -> None:
            while not stop.wait(0.1):
                try:
                    samples = scrape(port)
                except httpx.TransportError:
                    continue
                seen_in_progress.append(
                    samples.get(("netshift_controller_rollouts_in_progress", ()), 0.0)
                )

        # Profiles other tests of the session left behind count too: ours is one more.
        base = scrape(port).get(("netshift_controller_rollouts_in_progress", ()), 0.0)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        create_profile(kube, name, labels={"metrics": namespace}, maxConcurrent=1)
        wait_for(
            lambda: condition(profile_status(kube, name), "Complete").get("status") == "True",
            90,
            what=f"{name} Complete",
        )
        # The gauges are set after the reconcile that wrote Complete; give it a scrape or two.
        wait_for(
            lambda: scrape(port).get(("netshift_controller_rollouts_in_progress", ()), 0.0) <= base,
            10,
            what=f"rollouts_in_progress back to {base:.0f}",
        )
        stop.set()
        watcher.join(5)

        after = scrape(port)
        assert after[by_profile("netshift_controller_pods_started_total", name)] == 4
        assert after[by_profile("netshift_controller_pods_in_flight", name)] == 0
        assert after[("netshift_controller_reconcile_duration_seconds_count", ())] > 0
        assert base + 1 in seen_in_progress, "the rollout was never seen in progress"
        assert not agent.errors
    finally:
        stop.set()
        agent.stop()
        delete_profile(kube, name)
        proc.stop()


def test_a_patch_refused_with_409_counts_as_a_conflict(kube: Kube, namespace: str) -> None:
    # Caches only (no workers): the test plays the reconcile with a plan it lets go stale.
    controller = Controller(kube)
    for informer in (controller.profiles, controller.namespaces, controller.pods, controller.nads):
        informer.start()
    name = f"conflict-{namespace}"
    try:
        assert controller.wait_synced(30)
        label_namespace(kube, namespace, {"conflict": namespace})
        create_nad(kube, namespace, "net-b")
        [pod] = create_pods(kube, namespace, 1)
        wait_running(kube, namespace, 1)
        create_profile(kube, name, labels={"conflict": namespace})
        wait_for(lambda: controller.plan(name).starts, 10, what="a plan that starts the pod")
        stale = controller.plan(name)
        kube.patch_merge(pod_path(namespace, pod), {"metadata": {"labels": {"touched": "yes"}}})
        assert controller._start_pods(stale) == (0, 1)
        metrics = controller.metrics
        assert metrics.value("netshift_controller_patch_conflicts_total", profile=name) == 1
        assert metrics.value("netshift_controller_pods_started_total", profile=name) == 0
    finally:
        delete_profile(kube, name)
        for informer in (
            controller.profiles,
            controller.namespaces,
            controller.pods,
            controller.nads,
        ):
            informer.stop()
