"""The alerting rules in a real Prometheus scraping netshift on the real node: a rollout broken
by a NAD whose plugin does not exist fires NetshiftRolloutFailed; fixing the NAD resolves it.

Prometheus (Debian's package, as in production a separate server) runs on the host with a
config this test writes: it scrapes the three components' metrics endpoints every 2 s and
evaluates manifests/monitoring/netshift.rules.yaml every 2 s; the rules' own `for:`
durations are kept. Debian builds Prometheus without Kubernetes service discovery, so the
test plays it: every 2 s it reads the EndpointSlices of the metrics Services and writes
their endpoints to a file_sd file, labelled as a ServiceMonitor would (`job` is the
Service's name, plus `pod` and `node`). Timings (-s): the alert firing after the break,
resolved after the fix.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env
from localcluster.realnode import RealNode
from netshift.kube import Kube, nad_path
from support.builders import PROFILES, bridge_config, create_nad
from support.realnode import busybox_pod, create_running, eventually, ipv4_of

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "monitoring" / "netshift.rules.yaml"
JOBS = {"netshift-webhook", "netshift-controller-metrics", "netshift-agent-metrics"}
NETWORKS = "k8s.v1.cni.cncf.io/networks"


class Prometheus:
    """A Prometheus server on loopback with a config and a data directory of its own, its
    targets the metrics endpoints of netshift-system's Services (see `discover`)."""

    def __init__(self, work: Path, kube: Kube) -> None:
        from support.require import require

        binary = shutil.which("prometheus")
        require(binary is not None, "needs prometheus (Debian's package, scripts/setup.sh)")
        assert binary is not None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.kube = kube
        self.targets = work / "targets.json"
        self.discover()
        config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "netshift",
                    "scrape_timeout": "2s",
                    "file_sd_configs": [{"files": [str(self.targets)], "refresh_interval": "2s"}],
                }
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._stop = threading.Event()
        self._discovery = threading.Thread(target=self._discover_loop, daemon=True)
        self._discovery.start()
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

    def discover(self) -> None:
        """The endpoints (ready or not, as Prometheus's endpointslice discovery lists them)
        of the metrics Services, as a file_sd target file, replaced whole."""
        slices = self.kube.get(
            "/apis/discovery.k8s.io/v1/namespaces/netshift-system/endpointslices"
        )
        groups = []
        for es in slices["items"]:
            service = es["metadata"].get("labels", {}).get("kubernetes.io/service-name", "")
            ports = [p["port"] for p in es.get("ports") or [] if p.get("name") == "http-metrics"]
            if service not in JOBS or not ports:
                continue
            for endpoint in es.get("endpoints") or []:
                labels = {
                    "job": service,
                    "pod": (endpoint.get("targetRef") or {}).get("name", ""),
                    "node": endpoint.get("nodeName", ""),
                }
                targets = [f"{address}:{ports[0]}" for address in endpoint["addresses"]]
                groups.append({"targets": targets, "labels": labels})
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)

    def _discover_loop(self) -> None:
        while not self._stop.wait(2.0):
            with contextlib.suppress(Exception):  # the next round tries again
                self.discover()

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
        self._stop.set()
        self._discovery.join(timeout=10)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus(real_kube: Kube, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path, real_kube)
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
    # A healthy cluster pages nobody. Right after start-up, rules whose series are not scraped
    # yet (the leader gauge, the webhook's `up`) may be pending: a page is a firing alert.
    firing = [
        a["labels"]["alertname"]
        for a in prometheus.api("alerts")["alerts"]
        if a["state"] == "firing"
    ]
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
        pending_after = time.monotonic() - broken
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
        config = json.dumps(bridge_config("extra", bridge, subnet, store))
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
        # Nothing else fired meanwhile; the agent's failure-rate alert may be pending (it
        # fires after five minutes of failures), which is said.
        alerts = prometheus.api("alerts")["alerts"]
        firing = [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"]
        assert not firing, firing
        pending = sorted({a["labels"]["alertname"] for a in alerts})
    finally:
        real_kube.delete(f"{PROFILES}/{profile}")
    with capsys.disabled():
        print(
            f"\nalerts on the real node: Prometheus scraping all three jobs after {scraping:.1f} s;"
            f" NetshiftRolloutFailed pending {pending_after:.1f} s after the break, firing after "
            f"{fired:.1f} s (for: 1m), resolved {resolved:.1f} s after the fix; pending at the "
            f"end: {pending or 'none'}"
        )
