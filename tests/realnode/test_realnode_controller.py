"""The controller's leader killed mid-rollout on the real node: the other replica finishes it.

netshift's controller runs as two replicas (a Deployment) with a Lease; the leader's pod is
deleted while a profile's switch rolls out to real pods one at a time. The standby takes
the Lease, the rollout completes, no pod is restarted or recreated, and deleting the pods
leaves every host-local store empty.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.demokit import bridge_nad
from localcluster.realnode import RealNode, image_name
from netshift import podstatus
from netshift.keys import DEFAULT_NETWORK_KEY
from netshift.kube import ApiError, Kube, lease_path, nad_path, profile_path, wait_for
from support.builders import namespace_profile
from support.realnode import eventually, store_addresses, wait_webhook_injects

PODS = 6
LEASE = lease_path("netshift-system", "netshift-controller")


@pytest.fixture
def two_networks(
    real_node: RealNode, real_kube: Kube, real_namespace: str
) -> Iterator[dict[str, Path]]:
    """Networks a and b (gateway + default route each); their host-local stores by name."""
    suffix = secrets.token_hex(3)
    third = secrets.randbelow(120) * 2 + 1
    stores: dict[str, Path] = {}
    bridges = []
    for i, key in enumerate(("a", "b")):
        store = real_node.root / "cni" / "test-networks" / f"{suffix}{key}"
        bridge = f"nsc{suffix}{key}"
        real_kube.create(
            nad_path(real_namespace),
            bridge_nad(real_namespace, key, bridge, f"10.240.{third + i}.0/24", store),
        )
        stores[key] = store
        bridges.append(bridge)
    yield stores
    for bridge in bridges:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": PODS,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": image_name("BUSYBOX_IMAGE"),
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "100000"],
                        }
                    ],
                },
            },
        },
    }


def _pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector="app=web"
    )["items"]
    return items


def _on(kube: Kube, namespace: str, network: str) -> int:
    """Running pods whose agent reports `network` as their default."""
    done = 0
    for pod in _pods(kube, namespace):
        status = podstatus.parse_status(pod["metadata"].get("annotations") or {})
        if pod["status"].get("phase") == "Running" and status is not None:
            done += status.default_network == f"{namespace}/{network}"
    return done


def _empty(store: Path) -> Callable[[], bool]:
    return lambda: not store_addresses(store)


def _paused(kube: Kube, name: str, paused: bool) -> None:
    kube.patch_merge(
        profile_path(name),
        {"spec": {"rollout": {"paused": paused}}},
    )


def _leader(kube: Kube) -> str:
    return str(kube.get(LEASE)["spec"].get("holderIdentity") or "")


def test_the_standby_controller_finishes_a_rollout_whose_leader_was_killed(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str, two_networks: dict[str, Path]
) -> None:
    ns = real_namespace
    name = f"p-{ns}"
    real_kube.create(
        profile_path(),
        namespace_profile(name, ns, "a", maxConcurrent=1, oldDefault="Keep"),
    )
    try:
        # Created through the webhook (the namespace labelled selected): born on network a.
        wait_webhook_injects(real_kube, ns, DEFAULT_NETWORK_KEY)
        real_kube.create(f"/apis/apps/v1/namespaces/{ns}/deployments", _deployment())
        wait_for(lambda: _on(real_kube, ns, "a") == PODS, 120, what=f"{PODS} pods on network a")
        before = {p["metadata"]["uid"] for p in _pods(real_kube, ns)}
        leader = _leader(real_kube)
        assert leader.startswith("netshift-controller-"), leader

        real_kube.patch_merge(
            profile_path(name),
            {"spec": {"defaultNetwork": f"{ns}/b"}},
        )
        # One pod at a time; once the first has moved, pause the rollout so that work is
        # certainly left, kill the leader, and resume: the standby must finish it.
        wait_for(lambda: _on(real_kube, ns, "b") >= 1, 60, what="the rollout under way")
        _paused(real_kube, name, True)
        moved = _on(real_kube, ns, "b")
        assert moved < PODS, "the rollout finished before the kill"
        real_cluster.kubectl(
            "-n", "netshift-system", "delete", "pod", leader, "--grace-period=0", "--force"
        )
        _paused(real_kube, name, False)
        wait_for(
            lambda: _on(real_kube, ns, "b") == PODS,
            120,
            what="every pod on network b after the leader was killed",
        )
        assert _leader(real_kube) not in ("", leader), "no other controller took the Lease"
        after = _pods(real_kube, ns)
        assert {p["metadata"]["uid"] for p in after} == before, "pods were recreated"
        restarts = [c["restartCount"] for p in after for c in p["status"]["containerStatuses"]]
        assert restarts == [0] * PODS, restarts

        def complete() -> bool:
            status = real_kube.get(profile_path(name))
            conditions = status.get("status", {}).get("conditions") or []
            return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)

        eventually(complete, 60, "the profile's status Complete")
    finally:
        with contextlib.suppress(ApiError):
            real_kube.delete(profile_path(name))
    real_kube.delete(f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    eventually(lambda: not _pods(real_kube, ns), 90, "the pods deleted")
    for key, store in two_networks.items():
        eventually(_empty(store), 60, f"network {key}'s host-local store empty")
