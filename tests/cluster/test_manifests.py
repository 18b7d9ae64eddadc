"""manifests/ installs netshift on a real apiserver, with least-privilege ServiceAccounts.

The whole kustomization is applied server-side to the test cluster's apiserver,
as a user would (`kubectl apply --server-side -k manifests/`). Its pods never
run real containers here (there is no image and no runtime); the objects
existing and the permissions of every ServiceAccount (`kubectl auth can-i`) are
what is checked. Everything but the CRDs is deleted afterwards: the webhook
configurations (failurePolicy Fail, no webhook behind them) would otherwise
refuse every pod the following tests create, and netshift-system is waited for
until it is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.cluster import LocalCluster
from netshift.kube import ApiError, wait_for

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SYSTEM = "netshift-system"
NAD = "network-attachment-definitions.k8s.cni.cncf.io"
PROFILES = "networkprofiles.netshift.io"
LEASES = "leases.coordination.k8s.io"

# (verb, resource, namespace: None = cluster-scoped / all namespaces, extra kubectl args)
Check = tuple[str, str, str | None, tuple[str, ...]]

ALLOWED: dict[str, list[Check]] = {
    "netshift-controller": [
        *[(v, PROFILES, None, ()) for v in ("get", "list", "watch")],
        ("patch", PROFILES, None, ("--subresource=status",)),
        ("update", PROFILES, None, ("--subresource=status",)),
        *[(v, "namespaces", None, ()) for v in ("get", "list", "watch", "patch")],
        *[(v, "pods", None, ()) for v in ("get", "list", "watch", "patch")],
        ("patch", "pods", "some-app", ()),
        ("get", f"customresourcedefinitions.apiextensions.k8s.io/{PROFILES}", None, ()),
        *[(v, NAD, None, ()) for v in ("get", "list", "watch")],
        ("create", "events", "default", ()),
        ("create", LEASES, SYSTEM, ()),
        ("get", f"{LEASES}/netshift-controller", SYSTEM, ()),
        ("update", f"{LEASES}/netshift-controller", SYSTEM, ()),
    ],
    "netshift-agent": [
        *[(v, "pods", None, ()) for v in ("get", "list", "watch", "patch")],
        *[(v, NAD, None, ()) for v in ("get", "list", "watch")],
        ("create", "events", "some-app", ()),
        *[(v, "configmaps/netshift-nad-policy", SYSTEM, ()) for v in ("get", "list", "watch")],
    ],
}

# Denied to every ServiceAccount of netshift.
DENIED_TO_ALL: list[Check] = [
    ("get", "secrets", "default", ()),
    ("list", "secrets", None, ()),
    ("delete", "pods", "some-app", ()),
    ("create", "pods", "some-app", ()),
    ("patch", "nodes", None, ()),
    ("create", NAD, "some-app", ()),
    ("delete", NAD, "some-app", ()),
    ("delete", PROFILES, None, ()),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, ()),
    ("delete", "validatingadmissionpolicies.admissionregistration.k8s.io", None, ()),
    ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io", None, ()),
]

DENIED: dict[str, list[Check]] = {
    "netshift-controller": [
        ("update", "pods", "some-app", ()),  # annotations by merge patch only
        ("patch", PROFILES, None, ()),  # the spec is the user's
        ("update", PROFILES, None, ()),
        ("create", "events", "some-app", ()),  # profile Events live in "default"
        ("update", LEASES, "kube-system", ()),
        ("update", f"{LEASES}/someone-else", SYSTEM, ()),
        ("get", "secrets", SYSTEM, ()),
        ("update", "namespaces", None, ()),  # its label by merge patch only
        ("delete", "namespaces", None, ()),
        ("get", f"customresourcedefinitions.apiextensions.k8s.io/{NAD}", None, ()),
        ("patch", "events", "default", ()),  # Events are created, never patched
    ],
    "netshift-agent": [
        ("patch", "events", "some-app", ()),
        ("patch", "namespaces", None, ()),
        ("patch", PROFILES, None, ("--subresource=status",)),
        ("create", LEASES, SYSTEM, ()),
        ("update", "pods", "some-app", ()),
        ("get", "secrets", SYSTEM, ()),
        ("get", "configmaps/someone-else", SYSTEM, ()),
        ("update", "configmaps/netshift-nad-policy", SYSTEM, ()),
    ],
}


def build(cluster: LocalCluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("kustomize", str(MANIFESTS)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster) -> Iterator[list[dict[str, Any]]]:
    objects = build(cluster)
    result = cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS), check=False)
    try:
        assert result.returncode == 0, result.stderr
        yield objects
    finally:
        # Webhook configurations first: without a webhook behind them they refuse pods.
        order = {"MutatingWebhookConfiguration": 0, "ValidatingWebhookConfiguration": 0}
        doomed = sorted(
            (o for o in objects if o["kind"] != "CustomResourceDefinition"),
            key=lambda o: order.get(o["kind"], 1),
        )
        cluster.kubectl(
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            "-",
            input=yaml.safe_dump_all(doomed),
            check=False,
        )
        # A namespace that is still terminating refuses new objects: the next test that
        # runs a controller in netshift-system could not create its Lease there.
        names = [o["metadata"]["name"] for o in doomed if o["kind"] == "Namespace"]
        wait_for(lambda: all(_gone(cluster, ns) for ns in names), 120, what=f"{names} deleted")


def _gone(cluster: LocalCluster, namespace: str) -> bool:
    try:
        cluster.kube().get(f"/api/v1/namespaces/{namespace}")
    except ApiError as err:
        if err.status == 404:
            return True
        raise
    return False


def can_i(cluster: LocalCluster, sa: str, check: Check) -> bool:
    verb, resource, namespace, extra = check
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = cluster.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        *scope,
        *extra,
        f"--as=system:serviceaccount:{SYSTEM}:{sa}",
        check=False,
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i said {answer!r}: {result.stderr}"
    return answer == "yes"


def describe(check: Check) -> str:
    verb, resource, namespace, extra = check
    where = f"in {namespace}" if namespace else "cluster-wide"
    return f"{verb} {resource} {' '.join(extra)} {where}".replace("  ", " ")


def test_the_whole_kustomization_applies_server_side_and_every_object_exists(
    cluster: LocalCluster, installed: list[dict[str, Any]]
) -> None:
    got = cluster.kubectl("get", "-f", "-", "-o", "name", input=yaml.safe_dump_all(installed))
    names = got.stdout.split()
    assert len(names) == len(installed)
    kinds = {o["kind"] for o in installed}
    assert {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "DaemonSet",
        "PodDisruptionBudget",
    } <= kinds
    # Applying again changes nothing and conflicts with nothing.
    again = cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
    assert "serverside-applied" in again.stdout


def test_the_documented_uninstall_removes_all_but_the_profile_crd_webhooks_first(
    installed: list[dict[str, Any]],
) -> None:
    """`kubectl delete -k manifests/ -l app.kubernetes.io/name=netshift` (README): the
    label is on every object but the NetworkProfile CRD, and the webhook configurations
    come first in the build, so a delete removes them before the webhook they call."""
    unlabelled = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in installed
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/name") != "netshift"
    ]
    assert unlabelled == [f"CustomResourceDefinition/{PROFILES}"]
    kinds = [o["kind"] for o in installed]
    assert kinds[:2] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    assert NAD not in {o["metadata"]["name"] for o in installed}


def test_the_controller_runs_two_leader_elected_replicas(
    cluster: LocalCluster, installed: list[dict[str, Any]]
) -> None:
    out = cluster.kubectl("get", "deployment/netshift-controller", "-n", SYSTEM, "-o", "yaml")
    deployment = yaml.safe_load(out.stdout)
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["serviceAccountName"] == "netshift-controller"
    container = spec["containers"][0]
    assert container["command"] == ["netshift"]
    assert container["args"][0] == "controller"
    assert "--lease-namespace=$(POD_NAMESPACE)" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pdb = yaml.safe_load(
        cluster.kubectl("get", "pdb/netshift-controller", "-n", SYSTEM, "-o", "yaml").stdout
    )
    assert pdb["spec"]["minAvailable"] == 1


def test_the_agent_runs_unprivileged_on_every_node_with_the_host_mounts(
    cluster: LocalCluster, installed: list[dict[str, Any]]
) -> None:
    out = cluster.kubectl("get", "daemonset/netshift-agent", "-n", SYSTEM, "-o", "yaml")
    spec = yaml.safe_load(out.stdout)["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    container = spec["containers"][0]
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"],
    }
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert container["command"] == ["netshift", "agent", "--node", "$(NODE_NAME)"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    for path in ("/opt/cni/bin", "/usr/lib/cni", "/etc/cni/net.d", "/var/lib/cni"):
        assert host[mounts[path]["name"]] == path
    assert mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    assert host[mounts["/host/proc"]["name"]] == "/proc"
    # What it only reads is mounted read-only; it writes IPAM state and its records.
    for path in ("/opt/cni/bin", "/usr/lib/cni", "/etc/cni/net.d", "/run/netns", "/host/proc"):
        assert mounts[path]["readOnly"] is True, path
    assert mounts["/sys/fs/cgroup"]["readOnly"] is True
    assert not mounts["/var/lib/cni"].get("readOnly") and not mounts["/var/lib/netshift"].get(
        "readOnly"
    )
    assert host[mounts["/var/lib/netshift"]["name"]] == "/var/lib/netshift"


def service_accounts(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount")


def test_every_component_has_its_own_service_account(installed: list[dict[str, Any]]) -> None:
    assert {"netshift-controller", "netshift-agent", "netshift-webhook"} <= set(
        service_accounts(installed)
    )


@pytest.mark.parametrize("sa", ["netshift-controller", "netshift-agent"])
def test_a_service_account_may_do_what_its_component_needs(
    cluster: LocalCluster, installed: list[dict[str, Any]], sa: str
) -> None:
    refused = [describe(c) for c in ALLOWED[sa] if not can_i(cluster, sa, c)]
    assert not refused, f"{sa} is refused what it needs: {refused}"


def test_no_service_account_may_do_more(
    cluster: LocalCluster, installed: list[dict[str, Any]]
) -> None:
    too_much = [
        f"{sa}: {describe(c)}"
        for sa in service_accounts(installed)
        for c in DENIED_TO_ALL + DENIED.get(sa, [])
        if can_i(cluster, sa, c)
    ]
    assert not too_much, f"allowed beyond least privilege: {too_much}"


@pytest.mark.parametrize("component", ["webhook", "controller", "agent"])
def test_each_component_exposes_metrics_by_annotation_and_on_a_service_port(
    installed: list[dict[str, Any]], component: str
) -> None:
    [deployment] = [
        o
        for o in installed
        if o["kind"] in ("Deployment", "DaemonSet")
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == int(annotations["prometheus.io/port"])
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    labels = template["metadata"]["labels"]
    services = [
        o
        for o in installed
        if o["kind"] == "Service"
        and o["spec"]["selector"].items() <= labels.items()
        and any(p["name"] == "http-metrics" for p in o["spec"]["ports"])
    ]
    assert services, f"no Service with an http-metrics port selects the {component} pods"
    [port] = [p for p in services[0]["spec"]["ports"] if p["name"] == "http-metrics"]
    assert port["targetPort"] == "health"
