"""`netshift agent --cri-socket` as a process: real kube-apiserver, real containerd sandboxes.

The pod is bound to a node name that only this agent serves; no kubelet runs for it, so the
test does the kubelet's and Multus's part: it makes the pod's sandbox in a private containerd
(tests/support/cri.py, labelled with the pod's UID), sets the pod Running and writes the runtime's
network-status. The full real node (kubelet + containerd + Multus) is issue 9's node work.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import netlink
from localcluster.cluster import LocalCluster
from netshift import keys
from netshift.kube import Kube, pod_path, wait_for
from support.agent import AgentProcess, annotate, get_pod, network_status, pod_manifest
from support.builders import bridge_config, create_nad
from support.cri import Containerd, cluster_conflist, private_containerd


class CriAgent(AgentProcess):
    """The agent for node `node`, finding netns through the CRI socket of `containerd`."""

    def __init__(self, cluster: LocalCluster, workdir: Path, c: Containerd, node: str) -> None:
        super().__init__(cluster, workdir)
        self.c, self.node = c, node
        self.conf = workdir / "cluster.conflist"

    def argv(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(json.dumps(cluster_conflist(self.c)))
        argv = super().argv()
        i = argv.index("--netns-template")
        del argv[i : i + 2]
        argv[argv.index("--node") + 1] = self.node
        argv[argv.index("--cluster-network-conf") + 1] = str(self.conf)
        return [*argv, "--cri-socket", self.c.endpoint]


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    with private_containerd() as c:
        yield c


def live_ips(netns: str) -> dict[str, list[str]]:
    return {
        i.name: [a.split("/")[0] for a in i.addresses]
        for i in netlink.list_interfaces(netns)
        if i.name != "lo"
    }


def as_the_kubelet(kube: Kube, c: Containerd, pod: dict[str, Any], attempt: int) -> str:
    """Make the pod's sandbox, write Multus's network-status, set the pod Running."""
    meta = pod["metadata"]
    sandbox = c.runp(meta["uid"], meta["name"], meta["namespace"], attempt)
    eth0 = live_ips(c.netns(sandbox))["eth0"]
    status = [{"name": c.network, "interface": "eth0", "ips": eth0, "default": True}]
    path = pod_path(meta["namespace"], meta["name"])
    kube.patch_merge(
        path, {"metadata": {"annotations": {keys.NETWORK_STATUS_KEY: json.dumps(status)}}}
    )
    kube.request(
        "PATCH",
        path + "/status",
        body={"status": {"phase": "Running", "podIP": eth0[0], "podIPs": [{"ip": eth0[0]}]}},
        content_type="application/merge-patch+json",
    )
    return sandbox


def test_agent_on_cri_plugs_with_the_sandbox_id_and_rebuilds_a_recreated_sandbox(
    cluster: LocalCluster, kube: Kube, namespace: str, containerd: Containerd, tmp_path: Path
) -> None:
    c, node = containerd, f"cri-{secrets.token_hex(3)}"
    ipam = tmp_path / "ipam-blue"
    bridge = f"nsb{secrets.token_hex(3)}"
    create_nad(kube, namespace, "blue", bridge_config("blue", bridge, "10.249.7.0/24", ipam))
    manifest = pod_manifest("web-0")
    manifest["spec"]["nodeName"] = node
    pod = kube.create(pod_path(namespace), manifest)
    a = as_the_kubelet(kube, c, pod, 0)
    agent = CriAgent(cluster, tmp_path / "agent", c, node)
    agent.start()
    try:

        def reserved() -> dict[str, str]:
            store = ipam / "blue"
            if not store.is_dir():
                return {}
            return {
                e.name: e.read_text().splitlines()[0]
                for e in store.iterdir()
                if e.name[0].isdigit()
            }

        def converged(sandbox: str) -> dict[str, Any] | None:
            live = live_ips(c.netns(sandbox))
            status = network_status(get_pod(kube, namespace, "web-0"))
            got = {k: v.get("ips") for k, v in status.items()}
            return got if "data0" in live and got == live else None

        annotate(kube, namespace, "web-0", {keys.NETWORKS_KEY: "blue@data0"})
        wait_for(lambda: converged(a), 30, what="data0 plugged and reported")
        assert list(reserved().values()) == [a], "CNI_CONTAINERID is the sandbox id"

        # The sandbox is replaced, as the kubelet does after `crictl stopp` (attempt 1).
        c.stopp(a)
        c.rmp(a)
        b = as_the_kubelet(kube, c, get_pod(kube, namespace, "web-0"), 1)
        wait_for(lambda: converged(b), 30, what="the view rebuilt in the new sandbox")
        assert list(reserved().values()) == [b], f"the old address is released: {reserved()}"
        log = agent.log_path.read_text()
        assert "sandbox replaced" in log
        assert "mount the host" not in log

        # No kubelet confirms a graceful deletion here: the pod goes at once, as after it.
        kube.delete(pod_path(namespace, "web-0"), gracePeriodSeconds="0")
        wait_for(lambda: reserved() == {}, 30, what="data0's address released at deletion")
    finally:
        agent.stop()
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
