"""The node simulator (stand-in for kubelet + runtime + Multus) sets up pods' networks at creation,
keeps each sandbox in the agent's record format, and releases everything with the pod."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from localcluster.cluster import LocalCluster
from localcluster.simnode import SimNode
from netshift import keys
from netshift.kube import Kube, pod_path, wait_for
from netshift.records import RecordStore
from support.agent import ipam_ips, network_status, next_subnet, pod_manifest, wait_running
from support.builders import bridge_config, create_nad, unique


def test_creation_time_networks_are_recorded_attached_reported_and_released_with_the_pod(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    bridge, subnet = unique("nssim"), next_subnet()
    static = subnet.replace(".0/24", ".77/24")
    config = bridge_config("blue", bridge, subnet, tmp_path, capabilities={"ips": True})
    create_nad(kube, namespace, "blue", config)
    wanted = [{"name": "blue", "interface": "data0", "ips": [static]}, {"name": "gone"}]
    try:
        kube.create(
            pod_path(namespace),
            pod_manifest("web", {keys.NETWORKS_KEY: json.dumps(wanted)}),
        )
        pod = wait_running(kube, namespace, "web")
        uid = pod["metadata"]["uid"]
        status = network_status(pod)
        assert status["eth0"]["default"] is True and status["eth0"]["ips"]
        assert status["data0"]["name"] == f"{namespace}/blue"
        assert status["data0"]["ips"] == [static.split("/")[0]]  # the ips capability was passed
        assert ipam_ips(tmp_path, "blue") == {static.split("/")[0]}

        store = RecordStore(cluster.single_node(SimNode).records_dir)
        records = {r.interface: r for r in store.list_pod(uid)}
        assert set(records) == {"eth0", "data0"}
        assert all(r.state == keys.ATTACHED and r.conflist and r.result for r in records.values())
        assert records["eth0"].is_default and not records["data0"].is_default
        meta = store.get_pod_meta(uid)
        assert meta is not None and meta.pod_name == "web"

        def setup_failed() -> list[str]:
            events = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
            return [e["message"] for e in events if e.get("reason") == "NetworkSetupFailed"]

        (message,) = wait_for(setup_failed, 30, what="NetworkSetupFailed event")
        assert f"NetworkAttachmentDefinition {namespace}/gone does not exist" in message

        kube.delete(pod_path(namespace, "web"))
        wait_for(lambda: uid not in store.pods(), 60, what="sandbox records removed")
        assert not ipam_ips(tmp_path, "blue"), "data0 leaked its address"
        assert not Path(f"/var/run/netns/netshift-{uid}").exists()
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
