"""The webhook's manifests apply to the real apiserver, and its ServiceAccount may read what
the webhook needs and write nothing but its own Secret and webhook configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.cluster import LocalCluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "webhook"
REGISTRATION = MANIFESTS.parent / "registration"
SA = "system:serviceaccount:netshift-system:netshift-webhook"

ALLOWED = [
    ("list", "namespaces", None),
    ("watch", "namespaces", None),
    ("list", "networkprofiles.netshift.io", None),
    ("watch", "networkprofiles.netshift.io", None),
    ("list", "network-attachment-definitions.k8s.cni.cncf.io", "*"),
    ("watch", "network-attachment-definitions.k8s.cni.cncf.io", "*"),
    ("get", "secrets/netshift-webhook-tls", "netshift-system"),
    ("update", "secrets/netshift-webhook-tls", "netshift-system"),
    ("get", "configmaps/netshift-nad-policy", "netshift-system"),
    ("watch", "configmaps/netshift-nad-policy", "netshift-system"),
    ("get", "mutatingwebhookconfigurations.admissionregistration.k8s.io/netshift", None),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/netshift", None),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/netshift", None),
]
DENIED = [
    ("create", "secrets", "netshift-system"),
    ("list", "secrets", "netshift-system"),
    ("get", "secrets/other", "netshift-system"),
    ("get", "secrets/netshift-webhook-tls", "default"),
    ("delete", "secrets/netshift-webhook-tls", "netshift-system"),
    ("get", "pods", "default"),
    ("list", "configmaps", "netshift-system"),
    ("update", "configmaps/netshift-nad-policy", "netshift-system"),
    ("get", "configmaps/netshift-nad-policy", "default"),
    ("patch", "pods", "default"),
    ("create", "events", "default"),
    ("update", "namespaces", None),
    ("create", "networkprofiles.netshift.io", None),
    ("update", "networkprofiles.netshift.io", None),
    ("create", "network-attachment-definitions.k8s.cni.cncf.io", "default"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None),
    ("delete", "mutatingwebhookconfigurations.admissionregistration.k8s.io/netshift", None),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/other", None),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/other", None),
]


@pytest.fixture(scope="module")
def rbac(cluster: LocalCluster) -> LocalCluster:
    manifest = cluster.kubectl(
        "create", "namespace", "netshift-system", "--dry-run=client", "-o", "yaml"
    )
    cluster.kubectl("apply", "-f", "-", input=manifest.stdout)
    for name in ("serviceaccount.yaml", "rbac.yaml", "secret.yaml"):
        cluster.kubectl("apply", "-f", str(MANIFESTS / name))
    return cluster


def can_i(cluster: LocalCluster, verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["--all-namespaces"] if namespace == "*" else ["-n", namespace] if namespace else []
    result = cluster.kubectl("auth", "can-i", verb, resource, f"--as={SA}", *scope, check=False)
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize(("verb", "resource", "namespace"), ALLOWED)
def test_the_webhook_may_read_what_it_needs_and_keep_its_own_tls(
    rbac: LocalCluster, verb: str, resource: str, namespace: str | None
) -> None:
    assert can_i(rbac, verb, resource, namespace)


@pytest.mark.parametrize(("verb", "resource", "namespace"), DENIED)
def test_the_webhook_may_write_nothing_else(
    rbac: LocalCluster, verb: str, resource: str, namespace: str | None
) -> None:
    assert not can_i(rbac, verb, resource, namespace)


def test_every_webhook_manifest_is_accepted_by_the_apiserver(rbac: LocalCluster) -> None:
    # Server-side dry run: validated and defaulted by the real apiserver, nothing stored,
    # so the Fail-policy webhook configurations never take effect on the test cluster.
    result = rbac.kubectl("apply", "--dry-run=server", "-k", str(MANIFESTS))
    assert "deployment.apps/netshift-webhook" in result.stdout
    # The registration lives apart (first in manifests/, so a delete removes it first).
    registration = rbac.kubectl("apply", "--dry-run=server", "-k", str(REGISTRATION))
    assert "mutatingwebhookconfiguration" in registration.stdout.lower()
    assert "validatingwebhookconfiguration" in registration.stdout.lower()
