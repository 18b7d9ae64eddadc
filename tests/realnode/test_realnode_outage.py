"""A netshift outage on the real node reaches only the namespaces a NetworkProfile selects.

Every webhook replica is taken away (the Deployment scaled to 0): a pod in a namespace
no profile selects is still created and runs, a pod in a selected namespace is refused
(failurePolicy Fail holds where netshift governs), and a namespace created meanwhile is
created (the namespace webhook never blocks) and then labelled by the controller.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from localcluster.cluster import LocalCluster
from netshift.keys import SELECTED_LABEL
from netshift.kube import ApiError, Kube, has_default_service_account, wait_for
from support.builders import PROFILES, namespace_profile
from support.realnode import busybox_pod, create_running, eventually, webhook_endpoints

NETWORKS = "k8s.v1.cni.cncf.io/networks"


def labels_of(kube: Kube, namespace: str) -> dict[str, str]:
    return dict(kube.get(f"/api/v1/namespaces/{namespace}")["metadata"].get("labels") or {})


@contextlib.contextmanager
def a_namespace(kube: Kube, labels: dict[str, str] | None = None) -> Iterator[str]:
    name = f"r-{uuid.uuid4().hex[:10]}"
    kube.create(
        "/api/v1/namespaces",
        {"metadata": {"name": name, "labels": {"netshift.io/test": "true", **(labels or {})}}},
    )
    try:
        wait_for(lambda: has_default_service_account(kube, name), 30, what="its ServiceAccount")
        yield name
    finally:
        with contextlib.suppress(ApiError):
            kube.delete(f"/api/v1/namespaces/{name}")


@contextlib.contextmanager
def webhook_gone(cluster: LocalCluster, kube: Kube) -> Iterator[None]:
    """Every webhook replica gone, and back (serving) afterwards."""
    scale = ("-n", "netshift-system", "scale", "deployment/netshift-webhook")
    cluster.kubectl(*scale, "--replicas=0")
    try:
        eventually(lambda: webhook_endpoints(kube) == 0, 60, "no webhook endpoint")

        def no_webhook_pod() -> bool:
            pods = kube.get(
                "/api/v1/namespaces/netshift-system/pods",
                labelSelector="app.kubernetes.io/component=webhook",
            )["items"]
            return not pods

        eventually(no_webhook_pod, 90, "every webhook pod gone")
        yield
    finally:
        cluster.kubectl(*scale, "--replicas=2")
        eventually(lambda: webhook_endpoints(kube) == 2, 120, "both webhook replicas serving")


def test_with_every_webhook_replica_gone_only_selected_namespaces_refuse_pods(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str
) -> None:
    team = f"outage-{uuid.uuid4().hex[:6]}"
    name = f"outage-{real_namespace}"
    profile = namespace_profile(name, real_namespace, "unused")
    del profile["spec"]["defaultNetwork"]  # it only has to select: no network is needed
    profile["spec"]["namespaceSelector"] = {"matchLabels": {"netshift.io/team": team}}
    real_kube.create(PROFILES, profile)
    pods = f"/api/v1/namespaces/{real_namespace}/pods"

    def labelled_at_creation() -> bool:
        probe = {"metadata": {"name": f"probe-{team}", "labels": {"netshift.io/team": team}}}
        made = real_kube.create("/api/v1/namespaces", probe, dryRun="All")
        return bool(made["metadata"]["labels"].get(SELECTED_LABEL) == "true")

    try:
        # The webhook's caches follow the new profile through a watch.
        eventually(labelled_at_creation, 30, "the namespace webhook to know the profile")
        with a_namespace(real_kube, {"netshift.io/team": team}) as selected:
            # Created with the labels the profile selects: labelled in the same write.
            assert labels_of(real_kube, selected).get(SELECTED_LABEL) == "true"
            assert SELECTED_LABEL not in labels_of(real_kube, real_namespace)
            with webhook_gone(real_cluster, real_kube):
                # Unselected: a plain pod is created and runs, whatever netshift's state.
                create_running(real_kube, real_namespace, busybox_pod("plain"))
                # Selected: refused, as before (a pod without its networks is worse).
                with pytest.raises(ApiError) as refused:
                    real_kube.create(f"/api/v1/namespaces/{selected}/pods", busybox_pod("p"))
                assert 'failed calling webhook "mutate.pods.netshift.io"' in str(refused.value)
                # A pod that names networks still needs validation, wherever it is.
                named = busybox_pod("named", annotations={NETWORKS: "side@net1"})
                with pytest.raises(ApiError) as unvalidated:
                    real_kube.create(pods, named)
                assert 'failed calling webhook "validate.pods.netshift.io"' in str(
                    unvalidated.value
                )
                # A namespace is never blocked; the controller labels it meanwhile.
                with a_namespace(real_kube, {"netshift.io/team": team}) as late:
                    eventually(
                        lambda: labels_of(real_kube, late).get(SELECTED_LABEL) == "true",
                        30,
                        f"the controller to label {late}",
                    )
                    with pytest.raises(ApiError):
                        real_kube.create(f"/api/v1/namespaces/{late}/pods", busybox_pod("p"))

            # Back: the selected namespace gets its pods again, through the webhook, once
            # kube-proxy sends the Service to the new endpoints (until its next sync it still
            # REJECTs, "connection refused", a moment after they are ready).
            def admitted() -> bool:
                try:
                    real_kube.create(
                        f"/api/v1/namespaces/{selected}/pods", busybox_pod("a"), dryRun="All"
                    )
                except ApiError as err:
                    assert "connection refused" in str(err), err
                    return False
                return True

            eventually(admitted, 30, "the Service to reach the webhook again")
            after = real_kube.create(f"/api/v1/namespaces/{selected}/pods", busybox_pod("a"))
            assert after["metadata"]["annotations"].get("netshift.io/profile") == name
            # Its profile gone, the namespace is no longer selected.
            real_kube.delete(f"{PROFILES}/{name}")
            eventually(lambda: SELECTED_LABEL not in labels_of(real_kube, selected), 30, "no label")
    finally:
        with contextlib.suppress(ApiError):
            real_kube.delete(f"{PROFILES}/{name}")
