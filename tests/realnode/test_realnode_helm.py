"""netshift installed, upgraded and uninstalled with Helm on the real node, a hot-plug between.

The session's node has netshift installed by kustomize (`netshift up`). The chart with
values for this node (the image imported into containerd, the node's paths and apiserver
address: translated from the overlay `netshift up` applies) must first render exactly
that overlay's objects. Then the kustomize install is removed (all but the CRDs, so every
NetworkProfile and NAD stays), `helm install` brings netshift back and a pod gets a network
plugged; `helm upgrade` changes the webhooks' failure policy and the controller's replicas
and the network is unplugged; `helm uninstall` removes everything but the CRDs. At the end
the kustomize install is put back as it was, so it runs after the other real-node tests
(the `restarts_node` marker). Timings of each step are printed (`-s`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env
from localcluster.realnode import RealNode
from netshift.kube import ApiError, Kube, nad_path, profile_crd_path
from support.builders import bridge_config, create_nad
from support.realnode import (
    busybox_pod,
    create_running,
    eventually,
    ipv4_of,
    store_addresses,
    webhook_serving,
)

pytestmark = pytest.mark.restarts_node

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "netshift"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
SYSTEM = "netshift-system"
RELEASE = "netshift"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"


def local_values(node: RealNode) -> dict[str, Any]:
    """The chart's values that make the objects of the overlay `netshift up` applies."""
    overlay = node.netshift_overlay()
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]

    def patch(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = yaml.safe_load((overlay / name).read_text())["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        return container, spec

    agent, agent_pod = patch("agent.yaml")
    base = yaml.safe_load((REPO / "manifests/agent/daemonset.yaml").read_text())
    base_args = base["spec"]["template"]["spec"]["containers"][0]["args"]
    assert agent["args"][: len(base_args)] == base_args
    volumes = {v["name"]: v for v in agent_pod["volumes"]}
    state = volumes.pop("state")
    multus_conf = volumes.pop("multus-conf")
    return {
        # manifests/overlays/local: the image is imported, never pulled.
        "image": {"repository": image["newName"], "tag": image["newTag"], "pullPolicy": "Never"},
        "agent": {
            "extraArgs": agent["args"][len(base_args) :],
            "extraEnv": agent["env"],
            "stateHostPath": state["hostPath"]["path"],
            "multusConfHostPath": multus_conf["hostPath"]["path"],
            "extraVolumes": list(volumes.values()),
            "extraVolumeMounts": agent["volumeMounts"],
        },
        "webhook": {"extraEnv": patch("webhook.yaml")[0]["env"]},
        "controller": {"extraEnv": patch("controller.yaml")[0]["env"]},
    }


def normalized(obj: Any) -> Any:
    """Lists of named items (env, volumes, mounts) in name order: a strategic-merge patch
    appends where the chart inserts; the order of those lists means nothing to Kubernetes."""
    if isinstance(obj, dict):
        return {k: normalized(v) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [normalized(v) for v in obj]
        if items and all(isinstance(v, dict) and "name" in v for v in items):
            return sorted(items, key=lambda v: str(v["name"]))
        return items
    return obj


def objects(text: str) -> dict[tuple[str, str, str], Any]:
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in yaml.safe_load_all(text)
        if o
    }


class Helm:
    def __init__(self, cluster: LocalCluster, home: Path) -> None:
        try:
            self.binary = binaries.helm()
        except binaries.MissingBinary as err:
            from support.require import require

            require(False, str(err))
            raise
        self.cluster = cluster
        # helm's cache, config and data under the test's own directory, not root's home.
        self.env = clean_env(
            {f"HELM_{d}_HOME": str(home / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}
        )

    def __call__(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [self.binary, f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout


def kubectl_netshift(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl netshift ...` through the pinned kubectl, the venv's bin on the PATH."""
    env = clean_env(
        {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
            "KUBECONFIG": str(cluster.kubeconfig),
        }
    )
    return subprocess.run(
        [binaries.find("kubectl"), "netshift", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def gone(kube: Kube, path: str) -> bool:
    try:
        kube.get(path)
    except ApiError as err:
        return err.status == 404
    return False


def webhook_admits(kube: Kube, namespace: str) -> bool:
    """A pod created (dry run) in `namespace` passes the webhooks (failurePolicy Fail)."""
    try:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", busybox_pod("probe"), dryRun="All")
    except ApiError:
        return False
    return True


@pytest.fixture
def side_net(real_node: RealNode) -> Iterator[tuple[str, str, Path]]:
    suffix = secrets.token_hex(3)
    bridge, store = f"nsh{suffix}", real_node.root / "cni" / "test-networks" / suffix
    yield bridge, "10.240.9.0/24", store
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_helm_install_upgrade_uninstall_with_a_hot_plug_between(
    real_cluster: LocalCluster,
    real_node: RealNode,
    real_kube: Kube,
    real_namespace: str,
    side_net: tuple[str, str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    helm = Helm(real_cluster, tmp_path / "helm")
    timings: list[tuple[str, float]] = []
    started = time.monotonic()

    def step(name: str) -> None:
        timings.append((name, time.monotonic() - started - sum(t for _, t in timings)))

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(local_values(real_node)))

    # The chart with this node's values is what `netshift up` applied with kustomize.
    rendered = objects(helm("template", RELEASE, str(CHART), "-f", str(values), "--include-crds"))
    overlay = real_cluster.kubectl("kustomize", str(real_node.netshift_overlay())).stdout
    applied = objects(overlay)
    assert sorted(rendered) == sorted(applied)
    for key, obj in applied.items():
        assert normalized(rendered[key]) == normalized(obj), key
    step("helm template == kustomize overlay")

    bridge, subnet, store = side_net
    create_nad(real_kube, real_namespace, "side", bridge_config("side", bridge, subnet, store))
    installed_by_kustomize = tmp_path / "kustomize-install.yaml"
    installed_by_kustomize.write_text(
        yaml.safe_dump_all(
            o for (kind, _, _), o in applied.items() if kind != "CustomResourceDefinition"
        )
    )
    try:
        # 1. Off with the kustomize install, all but the CRDs (profiles and NADs stay).
        real_cluster.kubectl(
            *("delete", "-f", str(installed_by_kustomize), "--ignore-not-found", "--wait"),
            *("--timeout=180s",),
            timeout=240,
        )
        eventually(lambda: gone(real_kube, f"/api/v1/namespaces/{SYSTEM}"), 120, "namespace gone")
        step("kustomize install removed")

        # 2. helm install: netshift serves again; a network is hot-plugged into a new pod.
        helm(
            "install",
            RELEASE,
            str(CHART),
            "-f",
            str(values),
            "--namespace=default",
            "--wait",
            "--timeout=5m",
        )
        step("helm install --wait")
        webhook_serving(real_cluster, real_kube, timeout=120)
        eventually(lambda: webhook_admits(real_kube, real_namespace), 60, "the webhook admits")
        # A new Lease and the webhooks' CA bundle come within seconds of the pods.
        eventually(
            lambda: kubectl_netshift(real_cluster, "status").returncode == 0,
            60,
            "`kubectl netshift status` all well",
        )
        agent = real_kube.get(f"/apis/apps/v1/namespaces/{SYSTEM}/daemonsets/netshift-agent")
        assert agent["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        # Hot-plug: the pod runs with eth0 only, then the annotation asks for the network.
        create_running(real_kube, real_namespace, busybox_pod("web"))
        real_kube.patch_merge(
            f"/api/v1/namespaces/{real_namespace}/pods/web",
            {"metadata": {"annotations": {NETWORKS: "side"}}},
        )
        eventually(
            lambda: bool(ipv4_of(real_cluster, real_namespace, "web", "net1")), 90, "net1 plugged"
        )
        (address,) = ipv4_of(real_cluster, real_namespace, "web", "net1")
        assert address in store_addresses(store)
        step("hot-plug: net1 plugged")

        # 3. helm upgrade: the failure policy and the replicas change; the CA bundle the
        # webhook patched in survives (admission still works); net1 is unplugged.
        helm(
            "upgrade", RELEASE, str(CHART), "-f", str(values), "--namespace=default",
            "--set", "webhook.failurePolicy=Ignore,controller.replicas=1", "--wait", "--timeout=5m",
        )  # fmt: skip
        step("helm upgrade --wait")
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            hooks = real_kube.get(f"{ADMISSION}/{kind}/netshift")["webhooks"]
            assert {h["failurePolicy"] for h in hooks} == {"Ignore"}
            assert all(h["clientConfig"].get("caBundle") for h in hooks), kind
        controller = real_kube.get(
            f"/apis/apps/v1/namespaces/{SYSTEM}/deployments/netshift-controller"
        )
        assert controller["spec"]["replicas"] == 1
        history = json.loads(helm("history", RELEASE, "--namespace=default", "-o", "json"))
        assert [(h["revision"], h["status"]) for h in history][-1] == (2, "deployed"), history
        real_kube.patch_merge(
            f"/api/v1/namespaces/{real_namespace}/pods/web",
            {"metadata": {"annotations": {NETWORKS: None}}},
        )
        eventually(
            lambda: not ipv4_of(real_cluster, real_namespace, "web", "net1"), 90, "net1 unplugged"
        )
        eventually(lambda: address not in store_addresses(store), 30, "net1's address released")
        step("hot-plug: net1 unplugged")

        # 4. helm uninstall: nothing of netshift is left but its CRDs and the user's objects.
        helm("uninstall", RELEASE, "--namespace=default", "--wait", "--timeout=5m")
        eventually(lambda: gone(real_kube, f"/api/v1/namespaces/{SYSTEM}"), 120, "namespace gone")
        for path in (
            f"{ADMISSION}/mutatingwebhookconfigurations/netshift",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/netshift-agent",
        ):
            assert gone(real_kube, path), path
        assert not gone(real_kube, profile_crd_path())
        assert not gone(real_kube, nad_path(real_namespace, "side"))
        step("helm uninstall --wait")
    finally:
        # 5. The kustomize install back, as the session had it (after an uninstall of
        # whatever a failed step left installed by helm).
        if RELEASE in helm("list", "--namespace=default", "--short").split():
            helm("uninstall", RELEASE, "--namespace=default", "--wait", "--timeout=5m")
        eventually(lambda: gone(real_kube, f"/api/v1/namespaces/{SYSTEM}"), 120, "namespace gone")
        real_cluster.up(say=lambda _line: None)
        webhook_serving(real_cluster, real_kube, timeout=120)
        step("kustomize install back (netshift up)")
        with capsys.disabled():
            print("\nhelm on the real node:")
            for name, seconds in timings:
                print(f"  {name:40} {seconds:6.1f} s")
            print(f"  {'total':40} {time.monotonic() - started:6.1f} s")
