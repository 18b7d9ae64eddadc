"""Uninstalling netshift from the real node leaves a healthy cluster, then a reinstall cleans up.

The documented uninstall, `kubectl delete -k` of netshift's manifests (the session's
overlay of them) `-l app.kubernetes.io/name=netshift` (all but the NetworkProfile CRD),
while pods run with networks the agent hot-plugged: the webhook configurations go first,
the pods keep running with their interfaces, new pods are created (in the namespace a
profile selects, too) and pods are deleted. Nothing DELs the hot-plugged attachment of a
pod deleted while netshift is gone (Multus only DELs what it attached at creation), so
its address stays reserved; reinstalling netshift releases it (the agent's start-up
resync DELs the records of pods that no longer exist), and the profile, which stayed,
rolls its networks onto the pod created meanwhile. It removes netshift from the session's
cluster, so it runs with the tests that restart the node (after every other real-node
test) and installs netshift again before it ends.
"""

from __future__ import annotations

import functools
import secrets
import subprocess

import pytest

from localcluster.cluster import LocalCluster
from localcluster.realnode import RealNode, deploy
from netshift.annotations import format_networks, parse_networks
from netshift.keys import PROFILE_KEY
from netshift.kube import ApiError, Kube, nad_path
from support.builders import PROFILES, bridge_config, create_nad, namespace_profile
from support.realnode import (
    busybox_pod,
    create_running,
    eventually,
    ipv4_of,
    pod_deleted,
    store_addresses,
    wait_webhook_injects,
    webhook_serving,
)

pytestmark = pytest.mark.restarts_node
NETWORKS = "k8s.v1.cni.cncf.io/networks"
SYSTEM = "netshift-system"


def _gone(kube: Kube, path: str) -> bool:
    try:
        kube.get(path)
    except ApiError as err:
        return err.status == 404
    return False


def _running_unchanged(kube: Kube, namespace: str, name: str, uid: str) -> bool:
    pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    statuses = pod["status"].get("containerStatuses", [])
    return (
        pod["metadata"]["uid"] == uid
        and pod["status"].get("phase") == "Running"
        and all(s.get("restartCount") == 0 and s.get("ready") for s in statuses)
    )


def _add_network(cluster: LocalCluster, kube: Kube, namespace: str, pod: str, element: str) -> None:
    """Hot-plug: the pod's networks annotation plus `element`, as a user would edit it."""
    got = kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod}")
    current = parse_networks(got["metadata"]["annotations"].get(NETWORKS, ""))
    value = format_networks([*current, *parse_networks(element)])
    cluster.kubectl("-n", namespace, "annotate", "--overwrite", "pod", pod, f"{NETWORKS}={value}")


def _has_address(cluster: LocalCluster, namespace: str, pod: str, ifname: str) -> bool:
    return bool(ipv4_of(cluster, namespace, pod, ifname))


def test_uninstall_keeps_pods_running_and_a_reinstall_releases_what_deleted_pods_held(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> None:
    suffix = secrets.token_hex(3)
    bridge, store = f"nsu{suffix}", real_node.root / "cni" / "test-networks" / suffix
    create_nad(
        real_kube,
        real_namespace,
        "side",
        bridge_config(f"uninstall-{suffix}", bridge, "10.240.11.0/24", store),
    )
    # A profile gives the namespace's new pods net2 (attached by Multus at creation).
    name = f"uninstall-{real_namespace}"
    profile = namespace_profile(name, real_namespace, "side")
    del profile["spec"]["defaultNetwork"]
    profile["spec"]["networks"] = [{"name": "side", "interface": "net2"}]
    real_kube.create(PROFILES, profile)
    wait_webhook_injects(real_kube, real_namespace, PROFILE_KEY)
    uids = {}
    for pod in ("kept", "dropped"):
        made = create_running(real_kube, real_namespace, busybox_pod(pod))
        uids[pod] = made["metadata"]["uid"]
        assert made["metadata"]["annotations"][PROFILE_KEY] == name
        _add_network(real_cluster, real_kube, real_namespace, pod, "side@net1")  # the agent's
    addresses: dict[tuple[str, str], str] = {}
    for pod in uids:
        for ifname in ("net1", "net2"):
            eventually(
                functools.partial(_has_address, real_cluster, real_namespace, pod, ifname),
                60,
                f"{ifname} in {pod}",
            )
            (addresses[pod, ifname],) = ipv4_of(real_cluster, real_namespace, pod, ifname)
    assert store_addresses(store) == set(addresses.values())
    desired = {
        pod: real_kube.get(f"/api/v1/namespaces/{real_namespace}/pods/{pod}")["metadata"][
            "annotations"
        ][NETWORKS]
        for pod in uids
    }

    overlay = real_node.netshift_overlay()
    try:
        # The documented uninstall: everything but the NetworkProfile CRD (the only object
        # without the label), so the profile stays for a reinstall.
        done = real_cluster.kubectl(
            *("delete", "-k", str(overlay), "-l", "app.kubernetes.io/name=netshift"),
            "--wait=true",
            timeout=300,
        )
        deleted = [line for line in done.stdout.splitlines() if " deleted" in line]
        # The registration goes first: no stale configuration ever calls a webhook that is gone.
        assert deleted[0].startswith("mutatingwebhookconfiguration"), deleted
        assert deleted[1].startswith("validatingwebhookconfiguration"), deleted
        eventually(lambda: _gone(real_kube, f"/api/v1/namespaces/{SYSTEM}"), 180, "netshift gone")
        # The NADs and the profile are not netshift's machinery: they stay.
        real_kube.get(f"{nad_path(real_namespace)}/side")
        real_kube.get(f"{PROFILES}/{name}")

        # The pods keep running, with every interface and the annotations they had.
        for pod, uid in uids.items():
            assert _running_unchanged(real_kube, real_namespace, pod, uid), pod
            got = real_kube.get(f"/api/v1/namespaces/{real_namespace}/pods/{pod}")
            assert got["metadata"]["annotations"][NETWORKS] == desired[pod]
        for ifname in ("net1", "net2"):
            assert ipv4_of(real_cluster, real_namespace, "kept", ifname) == [
                addresses["kept", ifname]
            ]
        # New pods, in the namespace the profile selects too: created as if netshift had
        # never been there.
        fresh = create_running(real_kube, real_namespace, busybox_pod("fresh"))
        assert PROFILE_KEY not in (fresh["metadata"].get("annotations") or {})
        assert not ipv4_of(real_cluster, real_namespace, "fresh", "net2")
        # A pod deleted meanwhile: Multus gives back what it attached (eth0, net2), nobody
        # the agent's net1.
        real_kube.delete(f"/api/v1/namespaces/{real_namespace}/pods/dropped")
        eventually(lambda: pod_deleted(real_kube, real_namespace, "dropped"), 60, "dropped deleted")
        assert store_addresses(store) == {
            addresses["kept", "net1"],
            addresses["kept", "net2"],
            addresses["dropped", "net1"],
        }
    finally:
        deploy.apply_netshift(real_cluster.plane, real_node.netshift_overlay())
        for workload in (
            "daemonset/netshift-agent",
            "deployment/netshift-webhook",
            "deployment/netshift-controller",
        ):
            real_cluster.kubectl(
                *("-n", SYSTEM, "rollout", "status", workload, "--timeout=180s"), timeout=200
            )
        webhook_serving(real_cluster, real_kube, timeout=120)

    # The agent's start-up resync DELs what the deleted pod held; the running pod keeps its;
    # the profile (Live) rolls its network onto the pod created while netshift was gone.
    eventually(
        functools.partial(_has_address, real_cluster, real_namespace, "fresh", "net2"),
        90,
        "the rollout giving fresh its net2",
    )
    (fresh_net2,) = ipv4_of(real_cluster, real_namespace, "fresh", "net2")
    held = {addresses["kept", "net1"], addresses["kept", "net2"], fresh_net2}
    eventually(lambda: store_addresses(store) == held, 60, "dropped's net1 released")
    for ifname in ("net1", "net2"):
        assert ipv4_of(real_cluster, real_namespace, "kept", ifname) == [addresses["kept", ifname]]
    for pod in ("kept", "fresh"):
        real_kube.delete(f"/api/v1/namespaces/{real_namespace}/pods/{pod}")
    for pod in ("kept", "fresh"):
        gone = functools.partial(pod_deleted, real_kube, real_namespace, pod)
        eventually(gone, 60, f"{pod} deleted")
    eventually(lambda: not store_addresses(store), 60, "every address back in host-local")
    real_kube.delete(f"{PROFILES}/{name}")
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
