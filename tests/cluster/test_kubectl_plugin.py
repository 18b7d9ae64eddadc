"""`kubectl netshift ...`: the pinned kubectl finds `kubectl-netshift` (installed with netshift)
on the PATH and runs netshift's plan, rollout and status commands through it, against the
cluster of $KUBECONFIG, as a platform team would call them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env
from netshift.kube import Kube
from support.builders import PROFILES, create_nad, profile_object
from support.controller import create_pods, create_profile, label_namespace, wait_running

VENV_BIN = str(Path(sys.executable).parent)


def kubectl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The pinned kubectl with the venv's bin first on the PATH (where pip put the plugin)."""
    env = clean_env(
        {"PATH": VENV_BIN + os.pathsep + os.environ["PATH"], "KUBECONFIG": str(cluster.kubeconfig)}
    )
    return subprocess.run(
        [binaries.find("kubectl"), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_kubectl_lists_the_plugin(cluster: LocalCluster) -> None:
    done = kubectl(cluster, "plugin", "list")
    assert os.path.join(VENV_BIN, "kubectl-netshift") in done.stdout, done.stdout + done.stderr


def test_kubectl_netshift_plan_rollout_and_status(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    labels = {"plugin": namespace}
    label_namespace(kube, namespace, labels)
    create_pods(kube, namespace, 2)
    wait_running(kube, namespace, 2)
    name = f"plugin-{namespace}"
    manifest = tmp_path / "profile.yaml"
    manifest.write_text(yaml.safe_dump(profile_object(name, labels=labels, default="net-p")))

    # The NAD the profile needs does not exist yet: unsafe, exit 1, named.
    done = kubectl(cluster, "netshift", "plan", "-f", str(manifest))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{namespace}/net-p" in done.stdout + done.stderr

    create_nad(kube, namespace, "net-p")
    done = kubectl(cluster, "netshift", "plan", "-f", str(manifest), "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert (plan["action"], plan["safe"], plan["pods"]["changing"]) == ("create", True, 2)

    # rollout pause / resume patch the profile; status of one that does not exist is 1.
    create_profile(kube, name, labels=labels, default="net-p")
    done = kubectl(cluster, "netshift", "rollout", "pause", name)
    assert done.returncode == 0 and f"networkprofile.netshift.io/{name} paused" in done.stdout
    assert kube.get(f"{PROFILES}/{name}")["spec"]["rollout"]["paused"] is True
    done = kubectl(cluster, "netshift", "rollout", "resume", name)
    assert done.returncode == 0, done.stderr
    assert kube.get(f"{PROFILES}/{name}")["spec"]["rollout"]["paused"] is False
    done = kubectl(cluster, "netshift", "rollout", "status", f"{name}-nope", "--timeout", "5s")
    assert done.returncode == 1 and "not found" in done.stderr
    kube.delete(f"{PROFILES}/{name}")

    # This cluster runs netshift as host processes, not as workloads: status says so, exit 1.
    done = kubectl(cluster, "netshift", "status")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "netshift-webhook       not installed" in done.stdout
