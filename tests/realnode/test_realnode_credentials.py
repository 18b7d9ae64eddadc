"""A stolen netshift credential reaches no further than netshift's own work (real node).

Writes are forged with tokens of netshift's ServiceAccounts, as whoever took root on a
node (or read a controller pod's token) would: the agent's token bound to its DaemonSet
pod (`kubectl create token --bound-object-kind Pod`, which carries the node-name claim
of the pod's node, as the kubelet-mounted token does) and the controller's. The
ValidatingAdmissionPolicies of manifests/ deny each with their own message, while the
agent's own report still passes. "Another node's pod" is a pod bound to a Node object
this test registers and no kubelet runs: it stays Pending, which is all admission needs.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env
from localcluster.realnode import RealNode
from netshift.kube import ApiError, Kube
from support.builders import bridge_config, create_nad
from support.realnode import busybox_pod, create_running, eventually, ipv4_of

NETWORKS = "k8s.v1.cni.cncf.io/networks"
STATUS = "netshift.io/status"
SYSTEM = "netshift-system"
AGENT_POLICY = "ValidatingAdmissionPolicy 'netshift-agent-pod-writes'"
EVENTS_POLICY = "ValidatingAdmissionPolicy 'netshift-agent-events'"
CONTROLLER_POLICY = "ValidatingAdmissionPolicy 'netshift-controller-pod-writes'"
NAMESPACE_POLICY = "ValidatingAdmissionPolicy 'netshift-controller-namespace-writes'"


@dataclass
class As:
    """kubectl with nothing but a bearer token: the ServiceAccount's rights, no admin's."""

    cluster: LocalCluster
    token: str

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                binaries.find("kubectl"),
                "--kubeconfig=/dev/null",
                f"--server=https://127.0.0.1:{self.cluster.port('apiserver')}",
                f"--certificate-authority={self.cluster.plane.ca_file}",
                f"--token={self.token}",
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )


def agent_pod(kube: Kube, node: str) -> str:
    """The agent pod of `node` (the DaemonSet has one on the test's ghost node too)."""
    pods = kube.get(
        f"/api/v1/namespaces/{SYSTEM}/pods",
        labelSelector="app.kubernetes.io/component=agent",
        fieldSelector=f"spec.nodeName={node}",
    )["items"]
    [pod] = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return str(pod["metadata"]["name"])


def token(cluster: LocalCluster, sa: str, *bound: str) -> str:
    return cluster.kubectl("-n", SYSTEM, "create", "token", sa, *bound).stdout.strip()


@pytest.fixture
def ghost_node(real_kube: Kube) -> Iterator[str]:
    """A Node object no kubelet runs: "another node" for the policy."""
    name = f"ghost-{secrets.token_hex(3)}"
    real_kube.create("/api/v1/nodes", {"metadata": {"name": name}})
    yield name
    with contextlib.suppress(ApiError):
        real_kube.delete(f"/api/v1/nodes/{name}")


def denied(done: subprocess.CompletedProcess[str], policy: str, message: str) -> bool:
    text = done.stderr
    return done.returncode != 0 and policy in text and message in text


def event(namespace: str, pod: str, *, kind: str, component: str, host: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": kind,
                "name": pod,
                "namespace": namespace,
            },
            "reason": "Attached",
            "message": "forged",
            "type": "Normal",
            "source": {"component": component, "host": host},
            "reportingComponent": component,
            "reportingInstance": host,
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:00Z",
            "count": 1,
        }
    )


def test_a_pod_bound_agent_token_writes_only_the_report_of_its_own_nodes_pods(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str, ghost_node: str
) -> None:
    node = real_cluster.nodes[0].name
    create_running(real_kube, real_namespace, busybox_pod("mine"))
    theirs = busybox_pod("theirs")
    theirs["spec"]["nodeName"] = ghost_node
    real_kube.create(f"/api/v1/namespaces/{real_namespace}/pods", theirs)
    agent = As(
        real_cluster,
        token(
            real_cluster,
            "netshift-agent",
            "--bound-object-kind=Pod",
            f"--bound-object-name={agent_pod(real_kube, node)}",
        ),
    )
    claims = json.loads(agent("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert claims["extra"]["authentication.kubernetes.io/node-name"] == [node]

    def write(pod: str, *args: str) -> subprocess.CompletedProcess[str]:
        return agent("-n", real_namespace, *args[:1], "pod", pod, *args[1:], "--overwrite")

    # Its own node's pod, its own report: passes (the agent rewrites it at its next look).
    assert write("mine", "annotate", "k8s.v1.cni.cncf.io/network-status=[]").returncode == 0
    # Another node's pod: not even the report.
    done = write("theirs", "annotate", f"{STATUS}={{}}")
    assert denied(done, AGENT_POLICY, f"netshift-agent of node {node} may not write pod"), done
    assert f'which is on node "{ghost_node}"' in done.stderr
    # Its own node's pod, anything but the report.
    done = write("mine", "annotate", f"{NETWORKS}=side@net1")
    assert denied(done, AGENT_POLICY, f"this write changes {NETWORKS}"), done
    done = write("mine", "annotate", f"{STATUS}={{}}", "v1.multus-cni.io/default-network=x")
    assert denied(done, AGENT_POLICY, "this write changes v1.multus-cni.io/default-network")
    done = write("mine", "annotate", "note=forged")
    assert denied(done, AGENT_POLICY, "this write changes note"), done
    done = write("mine", "label", "app=forged")
    assert denied(done, AGENT_POLICY, "may not change a pod's labels"), done
    done = agent(
        *("-n", real_namespace, "patch", "pod", "mine"),
        *("-p", '{"spec":{"activeDeadlineSeconds":5}}'),
    )
    assert denied(done, AGENT_POLICY, "may not change a pod's spec"), done
    # Events: only as netshift-agent of its node, about pods.
    create = ("-n", real_namespace, "create", "-f", "-")
    ok = event(real_namespace, "mine", kind="Pod", component="netshift-agent", host=node)
    assert agent(*create, input=ok).returncode == 0
    for forged, message in (
        (
            event(real_namespace, "mine", kind="Pod", component="netshift-agent", host=ghost_node),
            "must name that node as its reportingInstance",
        ),
        (
            event(real_namespace, "mine", kind="Node", component="netshift-agent", host=node),
            "Events about pods only",
        ),
        (
            event(real_namespace, "mine", kind="Pod", component="kubelet", host=node),
            "must name netshift-agent as its reporting component",
        ),
    ):
        done = agent(*create, input=forged)
        assert denied(done, EVENTS_POLICY, message), done
    # RBAC alone still says yes to every pod of the cluster: the policy is what narrows it.
    assert agent("auth", "can-i", "patch", "pods", "-n", "kube-system").stdout.strip() == "yes"


def test_an_agent_token_without_the_node_claim_writes_nothing(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str
) -> None:
    create_running(real_kube, real_namespace, busybox_pod("mine"))
    unbound = As(real_cluster, token(real_cluster, "netshift-agent"))
    done = unbound("-n", real_namespace, "annotate", "pod", "mine", f"{STATUS}={{}}", "--overwrite")
    assert denied(done, AGENT_POLICY, "this token carries no node-name claim"), done


def test_the_controller_token_changes_only_its_own_annotations_and_label(
    real_cluster: LocalCluster, real_kube: Kube, real_namespace: str
) -> None:
    create_running(real_kube, real_namespace, busybox_pod("mine"))
    controller = As(real_cluster, token(real_cluster, "netshift-controller"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return controller("-n", real_namespace, *args, "--overwrite")

    assert run("annotate", "pod", "mine", "netshift.io/rollout-desired=x").returncode == 0
    done = run("annotate", "pod", "mine", f"{STATUS}={{}}")
    assert denied(done, CONTROLLER_POLICY, f"this write changes {STATUS}"), done
    done = run("annotate", "pod", "mine", "k8s.v1.cni.cncf.io/network-status=[]")
    assert denied(done, CONTROLLER_POLICY, "this write changes k8s.v1.cni.cncf.io/network-status")
    done = run("label", "pod", "mine", "app=forged")
    assert denied(done, CONTROLLER_POLICY, "may not change a pod's labels"), done
    # Namespaces: its own label only (never, say, Pod Security's).
    done = controller(
        *("label", "namespace", real_namespace), "pod-security.kubernetes.io/enforce=privileged"
    )
    assert denied(done, NAMESPACE_POLICY, "this write changes pod-security"), done
    done = controller("annotate", "namespace", real_namespace, "note=forged")
    assert denied(done, NAMESPACE_POLICY, "may not change a namespace's annotations"), done


def test_the_agents_own_reports_and_events_pass_its_policy(
    real_cluster: LocalCluster, real_node: RealNode, real_kube: Kube, real_namespace: str
) -> None:
    """The real agent, with the token the kubelet mounts: a hot-plug is reported, its Event
    recorded (named after the node), and the policy denied nothing of it."""
    suffix = secrets.token_hex(3)
    bridge, store = f"nsq{suffix}", real_node.root / "cni" / "test-networks" / suffix
    create_nad(
        real_kube,
        real_namespace,
        "side",
        bridge_config(f"cred-{suffix}", bridge, "10.240.9.0/24", Path(store)),
    )
    try:
        create_running(real_kube, real_namespace, busybox_pod("hot"))
        real_cluster.kubectl(
            "-n", real_namespace, "annotate", "pod", "hot", f"{NETWORKS}=side@net1"
        )
        eventually(lambda: bool(ipv4_of(real_cluster, real_namespace, "hot", "net1")), 60, "net1")

        def attached() -> list[dict[str, Any]]:
            events = real_kube.get(
                f"/api/v1/namespaces/{real_namespace}/events",
                fieldSelector="involvedObject.name=hot,reason=Attached",
            )["items"]
            return [e for e in events if e.get("reportingComponent") == "netshift-agent"]

        eventually(lambda: bool(attached()), 30, "the agent's Attached Event")
        [ev] = attached()
        assert ev["reportingInstance"] == real_cluster.nodes[0].name
        assert ev["source"] == {"component": "netshift-agent", "host": real_cluster.nodes[0].name}
        pod = real_kube.get(f"/api/v1/namespaces/{real_namespace}/pods/hot")
        assert STATUS in pod["metadata"]["annotations"]
        logs = real_cluster.kubectl(
            *("-n", SYSTEM, "logs", "-l", "app.kubernetes.io/component=agent", "--tail=-1")
        ).stdout
        assert "ValidatingAdmissionPolicy" not in logs
    finally:
        with contextlib.suppress(ApiError):
            real_kube.delete(f"/api/v1/namespaces/{real_namespace}/pods/hot")
        eventually(lambda: not _exists(real_kube, real_namespace, "hot"), 60, "pod deleted")
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _exists(kube: Kube, namespace: str, name: str) -> bool:
    try:
        kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except ApiError as err:
        return err.status != 404
    return True
