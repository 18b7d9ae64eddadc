"""The alerting rules in a real Prometheus scraping netshift on the real node: a rollout broken
by a NAD whose plugin does not exist fires NetshiftRolloutFailed; fixing the NAD resolves it.

Prometheus (Debian's package, as in production a separate server) runs on the host with a
config this test writes: it discovers the three components' metrics endpoints through the
apiserver (the EndpointSlices of their metrics Services, as a ServiceMonitor would; `job`
is the Service's name), scrapes them every 2 s and evaluates
manifests/monitoring/netshift.rules.yaml every 2 s. The rules' own `for:` durations are
kept. Timings (-s): the alert firing after the break, resolved after the fix.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from realnodeutil import (
    PROFILES,
    bridge_nad_config,
    busybox_pod,
    create_nad,
    create_running,
    eventually,
    ipv4_of,
)

from localcluster.cluster import LocalCluster
from localcluster.node import RealNode
from localcluster.procs import clean_env
from netshift.kube import Kube, nad_path

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "monitoring" / "netshift.rules.yaml"
JOBS = {"netshift-webhook", "netshift-controller-metrics", "netshift-agent-metrics"}
NETWORKS = "k8s.v1.cni.cncf.io/networks"


class Prometheus:
    """A Prometheus server on loopback with a config and a data directory of its own."""

    def __init__(self, work: Path, kubeconfig: Path) -> None:
        from conftest import require

        binary = shutil.which("prometheus")
        require(binary is not None, "needs prometheus (Debian's package, scripts/setup.sh)")
        assert binary is not None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "netshift",
                    "scrape_timeout": "2s",
                    "kubernetes_sd_configs": [
                        {
                            "role": "endpointslice",
                            "kubeconfig_file": str(kubeconfig),
                            "namespaces": {"names": ["netshift-system"]},
                        }
                    ],
                    "relabel_configs": [
                        {
                            "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                            "regex": "http-metrics",
                            "action": "keep",
                        },
                        {
                            "source_labels": ["__meta_kubernetes_service_name"],
                            "target_label": "job",
                        },
                        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                        {
                            "source_labels": ["__meta_kubernetes_pod_node_name"],
                            "target_label": "node",
                        },
                    ],
                }
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = work / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def up_jobs(self) -> set[str]:
        """Jobs with every target up."""
        try:
            targets = self.api("targets")["activeTargets"]
        except OSError:
            return set()
        jobs: dict[str, bool] = {}
        for t in targets:
            job = t["labels"].get("job", "")
            jobs[job] = jobs.get(job, True) and t["health"] == "up"
        return {job for job, up in jobs.items() if up}

    def alerts(self, name: str, **labels: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return [
            a
            for a in found
            if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus(real_cluster: LocalCluster, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path, real_cluster.kubeconfig)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def side_net(real_node: RealNode) -> Iterator[tuple[str, str, Path]]:
    suffix = secrets.token_hex(3)
    bridge, store = f"nsa{suffix}", real_node.root / "cni" / "test-networks" / suffix
    yield bridge, "10.240.11.0/24", store
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_a_broken_rollout_fires_its_alert_and_the_fix_resolves_it(
    real_cluster: LocalCluster,
    real_kube: Kube,
    real_namespace: str,
    prometheus: Prometheus,
    side_net: tuple[str, str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    eventually(lambda: prometheus.up_jobs() >= JOBS, 90, f"Prometheus scraping {sorted(JOBS)}")
    scraping = time.monotonic() - started
    # A healthy cluster pages nobody.
    firing = [a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]]
    assert not firing, firing

    ns, profile = real_namespace, f"alerts-{real_namespace}"
    for name in ("a", "b"):
        create_running(real_kube, ns, busybox_pod(name))
    # The break: the network a profile rolls onto every pod runs a plugin that does not exist.
    create_nad(
        real_kube,
        ns,
        "extra",
        {"cniVersion": "1.0.0", "name": "extra", "type": "netshift-no-such-plugin"},
    )
    real_kube.create(
        PROFILES,
        {
            "apiVersion": "netshift.io/v1alpha1",
            "kind": "NetworkProfile",
            "metadata": {"name": profile},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "networks": [{"name": "extra"}],
                "rollout": {"existingPods": "Live", "maxConcurrent": 2, "maxFailures": 1},
            },
        },
    )
    broken = time.monotonic()
    try:
        eventually(
            lambda: bool(prometheus.alerts("NetshiftRolloutFailed", profile=profile)),
            120,
            "NetshiftRolloutFailed pending",
        )
        pending = time.monotonic() - broken
        eventually(
            lambda: any(
                a["state"] == "firing"
                for a in prometheus.alerts("NetshiftRolloutFailed", profile=profile)
            ),
            180,
            "NetshiftRolloutFailed firing",
        )
        fired = time.monotonic() - broken
        (alert,) = prometheus.alerts("NetshiftRolloutFailed", profile=profile)
        assert alert["labels"]["reason"] in ("FailureThresholdReached", "PodsFailed"), alert
        assert alert["labels"]["severity"] == "warning"
        assert profile in alert["annotations"]["summary"]

        # The fix: the NAD gets a plugin that exists; the agent retries (backing off), the
        # pods converge, the rollout completes and the alert resolves.
        bridge, subnet, store = side_net
        config = json.dumps(bridge_nad_config("extra", bridge, subnet, store))
        real_kube.patch_merge(f"{nad_path(ns)}/extra", {"spec": {"config": config}})
        fixed = time.monotonic()
        eventually(
            lambda: not prometheus.alerts("NetshiftRolloutFailed", profile=profile),
            420,
            "NetshiftRolloutFailed resolved",
        )
        resolved = time.monotonic() - fixed
        status = real_kube.get(f"{PROFILES}/{profile}")["status"]
        assert status["pods"]["converged"] == 2 and status["pods"]["failed"] == 0, status
        for name in ("a", "b"):
            assert ipv4_of(real_cluster, ns, name, "net1"), name
        # Nothing else paged meanwhile (the failures' rate alert needs five minutes of them).
        others = [a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]]
        assert not others, others
    finally:
        real_kube.delete(f"{PROFILES}/{profile}")
    with capsys.disabled():
        print(
            f"\nalerts on the real node: Prometheus scraping all three jobs after {scraping:.1f} s;"
            f" NetshiftRolloutFailed pending {pending:.1f} s after the break, firing after "
            f"{fired:.1f} s (for: 1m), resolved {resolved:.1f} s after the fix"
        )
