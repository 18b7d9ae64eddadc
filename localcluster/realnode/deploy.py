"""What runs as pods on the real node: Multus (kube-system) and netshift (netshift-system).

Both from the images imported into containerd (`imagePullPolicy: Never`): Multus from
manifests/multus.yaml, netshift with `kubectl apply -k` of an overlay on top of the
repository's manifests/overlays/local that holds what depends on the node (paths, the
apiserver's port). The documents are filled here (pure) and applied with the plane's
kubectl.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from localcluster import binaries
from localcluster.errors import NodeError
from localcluster.plane import Plane
from localcluster.realnode import templates
from localcluster.realnode.config import multus_daemon_config
from localcluster.realnode.images import MULTUS_BIN, image_name
from localcluster.realnode.layout import Layout

OVERLAY_FILES = ("kustomization.yaml", "agent.yaml", "webhook.yaml", "controller.yaml")
ROLLOUTS = (
    "daemonset/netshift-agent",
    "deployment/netshift-webhook",
    "deployment/netshift-controller",
)


def multus_objects(layout: Layout, *, apiserver_port: int) -> list[dict[str, Any]]:
    return templates.documents(
        "multus.yaml",
        {
            "daemon_config": json.dumps(multus_daemon_config(layout), indent=2),
            "multus_image": image_name("MULTUS_IMAGE"),
            "multus_bin": MULTUS_BIN,
            "cni_bin": str(layout.cni_bin),
            "node_root": str(layout.root),
            "netns_dir": str(layout.netns_dir),
            "apiserver_port": str(apiserver_port),
        },
    )


def netshift_overlay(
    layout: Layout,
    *,
    agent_args: Sequence[str],
    apiserver_port: int,
    pod_apiserver_host: str,
) -> dict[str, dict[str, Any]]:
    """The overlay's files (name -> document). `agent_args`: the agent's flags for this node,
    after the base's; `pod_apiserver_host`: where pods on the pod network reach the apiserver."""
    out = layout.manifests_dir / "netshift"
    image, _, tag = image_name("NETSHIFT_IMAGE").rpartition(":")
    values = {
        "base": os.path.relpath(binaries.REPO / "manifests" / "overlays" / "local", out),
        "image": image,
        "tag": tag,
        "agent_args": [*base_args("agent/daemonset.yaml", "agent"), *agent_args],
        "node_root": str(layout.root),
        "agent_dir": str(layout.agent_dir),
        "multus_conf_dir": str(layout.cluster_conf_dir),
        "apiserver_port": str(apiserver_port),
        "pod_apiserver_host": pod_apiserver_host,
    }
    return {name: templates.document(f"netshift/{name}", values) for name in OVERLAY_FILES}


def base_args(manifest: str, container: str) -> list[str]:
    """The args of one container in manifests/ (what an overlay's patch must keep)."""
    doc = yaml.safe_load((binaries.REPO / "manifests" / manifest).read_text())
    for c in doc["spec"]["template"]["spec"]["containers"]:
        if c["name"] == container:
            return [str(a) for a in c.get("args", [])]
    return []


def write_overlay(out: Path, files: dict[str, dict[str, Any]]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in files.items():
        (out / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def apply_multus(plane: Plane, objects: list[dict[str, Any]], path: Path) -> None:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))


def apply_netshift(plane: Plane, overlay: Path) -> None:
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(overlay))


def restart_multus(plane: Plane) -> None:
    plane.kubectl("-n", "kube-system", "rollout", "restart", "daemonset/multus")


def restart_netshift(plane: Plane) -> None:
    """A rebuilt image under the same name: running pods keep the old one until restarted."""
    plane.kubectl("-n", "netshift-system", "rollout", "restart", *ROLLOUTS)


def wait_rollouts(plane: Plane, deadline: float) -> None:
    for obj in ROLLOUTS:
        left = max(5, int(deadline - time.monotonic()))
        done = plane.kubectl(
            "-n",
            "netshift-system",
            "rollout",
            "status",
            obj,
            f"--timeout={left}s",
            check=False,
            timeout=left + 10,
        )
        if done.returncode != 0:
            raise NodeError(f"{obj} not ready: {done.stderr.strip()}\n" + pods_report(plane))


def pods_report(plane: Plane) -> str:
    done = plane.kubectl("get", "pods", "-A", "-o", "wide", check=False)
    return done.stdout + done.stderr
