"""The API paths of the kinds netshift reads and writes: one home, the apiserver's spelling."""

from __future__ import annotations

import pytest

from netshift.kube import (
    configmap_path,
    crd_path,
    deployment_path,
    event_path,
    lease_path,
    nad_path,
    namespace_path,
    node_path,
    pod_path,
    profile_crd_path,
    profile_path,
    secret_path,
    service_path,
    webhook_configuration_path,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (pod_path(), "/api/v1/pods"),
        (pod_path("ns"), "/api/v1/namespaces/ns/pods"),
        (pod_path("ns", "web"), "/api/v1/namespaces/ns/pods/web"),
        (nad_path(), "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions"),
        (
            nad_path("ns", "blue"),
            "/apis/k8s.cni.cncf.io/v1/namespaces/ns/network-attachment-definitions/blue",
        ),
        (profile_path(), "/apis/netshift.io/v1alpha1/networkprofiles"),
        (profile_path("corp"), "/apis/netshift.io/v1alpha1/networkprofiles/corp"),
        (profile_path("corp", "status"), "/apis/netshift.io/v1alpha1/networkprofiles/corp/status"),
        (
            profile_crd_path(),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/networkprofiles.netshift.io",
        ),
        (crd_path(), "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
        (namespace_path(), "/api/v1/namespaces"),
        (namespace_path("ns"), "/api/v1/namespaces/ns"),
        (node_path("n1", "status"), "/api/v1/nodes/n1/status"),
        (configmap_path("ns"), "/api/v1/namespaces/ns/configmaps"),
        (secret_path("ns", "tls"), "/api/v1/namespaces/ns/secrets/tls"),
        (service_path("ns", "web"), "/api/v1/namespaces/ns/services/web"),
        (event_path("ns"), "/api/v1/namespaces/ns/events"),
        (lease_path("ns", "l"), "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
        (deployment_path("ns"), "/apis/apps/v1/namespaces/ns/deployments"),
        (
            webhook_configuration_path("validating", "netshift"),
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/netshift",
        ),
    ],
)
def test_each_kind_has_the_apiservers_path(path: str, expected: str) -> None:
    assert path == expected
