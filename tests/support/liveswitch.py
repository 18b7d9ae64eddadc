"""What the live-switch tests of the cluster tier share: the real agent and controller as
processes, and pods created as the webhook would have admitted them.

There is no webhook in the test cluster, so the pods are created with the annotations
the webhook would give them: `policy.apply_profile` of the profile, the very function the
webhook calls. `agent` and `controller` are fixtures: a test module imports them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from netshift import keys, podstatus, policy
from netshift.kube import Kube, pod_path
from support.agent import AgentProcess
from support.controller import ControllerProcess


@pytest.fixture(scope="module")
def agent(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """The real agent (real CNI plugins in the pods' namespaces); it must stop cleanly."""
    proc = AgentProcess(cluster, tmp_path_factory.mktemp("switch-agent"))
    proc.start()
    yield proc
    proc.stop()
    assert proc.proc is not None and proc.proc.returncode in (0, -15), proc.log_tail()


@pytest.fixture
def controller(cluster: LocalCluster, kube: Kube, tmp_path: Path) -> Iterator[ControllerProcess]:
    cluster.plane.ensure_namespace("netshift-system")
    proc = ControllerProcess(cluster, tmp_path, f"e2e-{uuid.uuid4().hex[:6]}", "netshift-system")
    yield proc
    proc.stop()


def create_pods_as_admitted(kube: Kube, namespace: str, prof: dict[str, Any], n: int) -> None:
    """Pods with exactly what the mutating webhook would inject under `prof`."""
    injected = policy.apply_profile({}, namespace, policy.profile_from_object(prof))
    annotations = {k: v for k, v in injected.items() if v is not None}
    for i in range(n):
        kube.create(
            pod_path(namespace),
            {
                "metadata": {"name": f"web-{i}", "annotations": annotations},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web"}]},
            },
        )


def pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get(pod_path(namespace))["items"]
    return items


def on_default(kube: Kube, namespace: str, network: str, n: int) -> list[dict[str, Any]] | None:
    """All `n` pods of the namespace, once each reports `network` as its default, converged."""
    items = pods(kube, namespace)
    done = [
        p
        for p in items
        if (st := podstatus.parse_status(p["metadata"].get("annotations") or {}))
        and st.default_network == network
        and st.phase == keys.CONVERGED
    ]
    return items if len(done) == n == len(items) else None
