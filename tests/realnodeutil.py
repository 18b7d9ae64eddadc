"""The real-node test cluster: the plane plus kubelet + containerd + Multus, netshift as pods.

One per test session (only one real node can run on a machine: the kubelet owns the
kubepods cgroups), with a pod subnet and bridge of its own, apart from a developer's
`netshift up` (10.244.0.0/24) and from the node-simulator session's. Registered as
fixtures by conftest.py. A missing prerequisite skips on a developer machine and
fails in CI, like every other tier.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import node as realnode
from localcluster.cluster import LocalCluster
from netshift.kube import ApiError, Kube, has_default_service_account, wait_for

# Apart from every other range the tests and bench/ use (10.244-10.253).
REAL_POD_SUBNET = f"10.242.{os.getpid() % 250}.0/24"
REAL_BRIDGE = f"nsr{os.getpid() % 100000}"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def _require(condition: bool, why: str) -> None:
    from conftest import require

    require(condition, why)


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[LocalCluster]:
    from conftest import node_prerequisites, plane_prerequisites

    node_prerequisites()
    plane_prerequisites()
    missing = realnode.missing_prerequisites()
    _require(not missing, "real node: " + "; ".join(missing))
    with realnode.machine_lock():
        others = realnode.kubelet_pids()
        _require(not others, f"another kubelet runs here (pid {others[:1]}): one real node")
        state = Path(tempfile.mkdtemp(prefix="netshift-real-"))
        c = LocalCluster(state, pod_subnet=REAL_POD_SUBNET, bridge=REAL_BRIDGE, node="real")
        try:
            c.up(say=lambda _line: None)
            yield c
            crashed = c.crashed()
            assert not crashed, f"processes of the real-node test cluster crashed: {crashed}"
        finally:
            c.down(say=lambda _line: None)
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def real_node(real_cluster: LocalCluster) -> realnode.RealNode:
    return realnode.RealNode(real_cluster)


@pytest.fixture(scope="session")
def real_kube(real_cluster: LocalCluster) -> Kube:
    return real_cluster.kube()


def webhook_endpoints(kube: Kube) -> int:
    """Ready endpoints behind the webhook's Service (what the apiserver's calls reach)."""
    slices = kube.get(
        "/apis/discovery.k8s.io/v1/namespaces/netshift-system/endpointslices",
        labelSelector="kubernetes.io/service-name=netshift-webhook",
    )["items"]
    return sum(
        1
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
    )


def webhook_serving(cluster: LocalCluster, kube: Kube, timeout: float = 90) -> None:
    """Every test starts with the webhook serving: it admits every pod and NAD (failurePolicy
    Fail). A wait for it is reported as a warning with what the cluster showed; not serving
    after `timeout` fails the test (with the diagnostics attached by conftest.py)."""
    started = time.monotonic()
    if webhook_endpoints(kube):
        return
    seen = diagnostics(cluster)
    wait_for(lambda: webhook_endpoints(kube) > 0, timeout, what="a ready webhook endpoint")
    warnings.warn(
        f"the webhook had no ready endpoint for {time.monotonic() - started:.0f}s "
        f"before this test; the cluster then:\n{seen[:3000]}",
        stacklevel=2,
    )


@pytest.fixture
def real_namespace(real_cluster: LocalCluster, real_kube: Kube) -> Iterator[str]:
    webhook_serving(real_cluster, real_kube)
    name = f"r-{uuid.uuid4().hex[:10]}"
    real_kube.create(
        "/api/v1/namespaces", {"metadata": {"name": name, "labels": {"netshift.io/test": "true"}}}
    )
    wait_for(
        lambda: has_default_service_account(real_kube, name), 30, what=f"ServiceAccount in {name}"
    )
    yield name
    with contextlib.suppress(ApiError):
        real_kube.delete(f"/api/v1/namespaces/{name}")


# -- helpers ---------------------------------------------------------------------------


def busybox_pod(
    name: str,
    *,
    command: list[str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels or {"app": name},
            "annotations": annotations or {},
        },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": realnode.image_name("BUSYBOX_IMAGE"),
                    "imagePullPolicy": "Never",
                    "command": command or ["sleep", "100000"],
                }
            ],
        },
    }


def create_running(kube: Kube, namespace: str, pod: dict[str, Any], timeout: float = 60) -> Any:
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    name = pod["metadata"]["name"]

    def running() -> Any:
        got = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        statuses = got.get("status", {}).get("containerStatuses", [])
        if got.get("status", {}).get("phase") == "Running" and all(
            s.get("ready") for s in statuses
        ):
            return got
        return None

    return wait_for(running, timeout, what=f"pod {namespace}/{name} Running")


def exec_in(cluster: LocalCluster, namespace: str, pod: str, *argv: str) -> str:
    return cluster.kubectl("-n", namespace, "exec", pod, "--", *argv, timeout=60).stdout


def ipv4_of(cluster: LocalCluster, namespace: str, pod: str, ifname: str) -> list[str]:
    """The IPv4 addresses of `ifname` in the pod, read with `ip` inside the container."""
    done = cluster.kubectl(
        "-n",
        namespace,
        "exec",
        pod,
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        ifname,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        return []
    return [line.split()[3].split("/")[0] for line in done.stdout.splitlines() if " inet " in line]


def network_status(pod: dict[str, Any]) -> list[dict[str, Any]]:
    raw = pod.get("metadata", {}).get("annotations", {}).get(NETWORK_STATUS, "[]")
    value = json.loads(raw)
    return value if isinstance(value, list) else []


def store_addresses(store: Path) -> set[str]:
    """The addresses host-local holds in one store (one file per address, per network dir)."""
    found: set[str] = set()
    if not store.exists():
        return found
    for path in store.rglob("*"):
        if path.is_file():
            with contextlib.suppress(ValueError):
                found.add(str(ipaddress.ip_address(path.name)))
    return found


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def diagnostics(cluster: LocalCluster) -> str:
    """What a failed real-node test leaves for the reader: pods, events, netshift's logs.

    Attached to the failure report (see conftest.py) so that a red CI run says why a
    component was unreachable, not only that it was.
    """
    parts: list[str] = []

    def run(title: str, *args: str) -> None:
        try:
            done = cluster.kubectl(*args, check=False, timeout=30)
            text = (done.stdout + done.stderr).strip()
        except Exception as err:  # a diagnostic must not hide the failure itself
            text = f"({err})"
        parts.append(f"--- {title}\n{text}")

    run("pods", "get", "pods", "-A", "-o", "wide")
    run("node conditions", "get", "nodes", "-o", "jsonpath={..conditions}")
    run("endpoints of netshift-system", "-n", "netshift-system", "get", "endpointslices")
    run("recent events", "get", "events", "-A", "--sort-by=.lastTimestamp")
    for app in ("webhook", "agent", "controller"):
        selector = f"app.kubernetes.io/component={app}"
        run(
            f"{app} logs",
            *("-n", "netshift-system", "logs", "-l", selector, "--tail=25", "--prefix"),
        )
        run(
            f"{app} logs of the previous container",
            *("-n", "netshift-system", "logs", "-l", selector, "--tail=15", "--prefix"),
            "--previous",
        )
    # The tail of every event list is what matters; keep the whole report readable.
    return "\n".join(p if len(p) < 6000 else p[:1500] + "\n…\n" + p[-4000:] for p in parts)
