"""The node simulator: the stand-in for kubelet + container runtime + Multus on the local cluster.

It is the only simulated piece of netshift and is named as such everywhere.
For every pod bound to its node it does what those three would do for the
pod's *network*, with real CNI plugins in real network namespaces:

- creates `/var/run/netns/netshift-<pod UID>` (there is no container; the
  namespace itself is the sandbox),
- attaches the cluster default network as `eth0` (bridge + host-local), or the
  NAD named by `v1.multus-cni.io/default-network`, as Multus does at sandbox
  creation,
- attaches the networks the pod's `k8s.v1.cni.cncf.io/networks` annotation asks
  for at creation, writes the initial `network-status`, sets the pod Running
  with its podIP,
- on deletion DELs what *it* attached (from its records, kept in the
  agent's record format: `netshift.records`), removes the namespace and
  finally removes the pod object, as kubelet does.

It also keeps the Node object Ready (status heartbeat + Lease). The agent never
talks to it: it finds the namespaces through its generic path-template
resolver, exactly as it would find a runtime's namespaces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netshift import annotations as ann
from netshift import keys
from netshift.attachments import AttachmentRecord, PodMeta
from netshift.cni.config import CniError, ConfList, load_conflist
from netshift.cni.executor import CniExecutor
from netshift.cni.nad import attachment_runtime, nad_conflist, recorded_invocation
from netshift.cni.results import result_ips
from netshift.cni.status import network_status_entry
from netshift.keys import ATTACHED, ATTACHING, DEFAULT, FAILED, SECONDARY
from netshift.kube import (
    ApiError,
    Informer,
    Kube,
    lease_path,
    nad_path,
    node_path,
    now_rfc3339,
    patch_annotations,
    pod_path,
    record_event,
)
from netshift.records import RecordStore
from netshift.workqueue import Result, WorkQueue
from nodesim import legacy

log = logging.getLogger("netshift.nodesim")

NETNS_DIR = Path("/var/run/netns")
CLUSTER_NETWORK = "netshift-cluster"
COMPONENT = "netshift-nodesim"
NODE_LEASE_NAMESPACE = "kube-node-lease"  # the kubelet's heartbeat Leases live here
CLEANUP_RETRY = 10.0  # a sandbox whose DEL failed is torn down again after this long


def netns_name(uid: str) -> str:
    return f"netshift-{uid}"


def cluster_conflist(bridge: str, subnet: str, ipam_dir: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": CLUSTER_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,  # test traffic never leaves this machine
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": ipam_dir,
                },
            }
        ],
    }


@dataclass
class Settings:
    node: str
    state_dir: Path
    bridge: str
    subnet: str
    plugin_dirs: tuple[str, ...]
    workers: int = 4
    heartbeat_seconds: float = 10.0


class NodeSimulator:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.s = settings
        # <state dir>/pods/<uid>/: pod.meta (the sandbox) and one record per attachment.
        self.store = RecordStore(settings.state_dir / "pods")
        legacy.adopt_old_records(self.store.root, self.store)
        self.conf_path = settings.state_dir / "net.d" / f"00-{CLUSTER_NETWORK}.conflist"
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            json.dumps(
                cluster_conflist(
                    settings.bridge, settings.subnet, str(settings.state_dir / "ipam")
                ),
                indent=2,
            )
        )
        self.cluster_net = load_conflist(self.conf_path.read_text())
        self.cni = CniExecutor(list(settings.plugin_dirs))
        self.queue = WorkQueue(self.reconcile, workers=settings.workers, name="nodesim")
        self.pods = Informer(
            kube,
            pod_path(),
            params={"fieldSelector": f"spec.nodeName={settings.node}"},
            on_event=self._on_pod,
            name="nodesim pods",
        )
        self._pods_by_uid: dict[str, dict[str, Any]] = {}
        self._index_lock = threading.Lock()
        self._started = now_rfc3339()
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------

    def run(self) -> None:
        ready = self.s.state_dir / "ready"
        ready.unlink(missing_ok=True)
        self.heartbeat()
        threading.Thread(target=self._heartbeat_loop, daemon=True, name="heartbeat").start()
        self.queue.start()
        self.pods.start()
        if not self.pods.wait_synced(60):
            raise RuntimeError("pod informer did not sync in 60s")
        # Sandboxes whose pod vanished while we were down: tear them down now.
        for uid in self.store.pods():
            self.queue.add(uid)
        ready.write_text(str(os.getpid()))
        log.info("node simulator ready on node %s (cluster network %s)", self.s.node, self.s.subnet)
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()
        self.pods.stop()

    def release_all(self) -> int:
        """Tear down every sandbox on record (CNI DEL, netns removed) without the apiserver.

        Returns how many attachments could not be released.
        """
        return sum(self.teardown(uid, None) for uid in self.store.pods())

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.s.heartbeat_seconds):
            try:
                self.heartbeat()
            except Exception as err:
                log.warning("node heartbeat failed: %s", err)

    def heartbeat(self) -> None:
        now = now_rfc3339()
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "100Gi"}

        def cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._started,
            }

        status = {
            "conditions": [
                cond(
                    "Ready", "True", "NodeSimulatorReady", "the netshift node simulator is running"
                ),
                cond("MemoryPressure", "False", "NodeSimulator", "simulated"),
                cond("DiskPressure", "False", "NodeSimulator", "simulated"),
                cond("PIDPressure", "False", "NodeSimulator", "simulated"),
                cond("NetworkUnavailable", "False", "NodeSimulator", "cluster network is up"),
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.s.node},
            ],
            "nodeInfo": {
                "kubeletVersion": "netshift-node-simulator",
                "containerRuntimeVersion": "netshift-node-simulator://0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "netshift node simulator",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kubeProxyVersion": "",
            },
        }
        self.kube.patch_merge(node_path(self.s.node, "status"), {"status": status})
        micro = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        try:
            self.kube.patch_merge(
                lease_path(NODE_LEASE_NAMESPACE, self.s.node), {"spec": {"renewTime": micro}}
            )
        except ApiError as err:
            if err.status != 404:
                raise
            self.kube.create(
                lease_path(NODE_LEASE_NAMESPACE),
                {
                    "metadata": {"name": self.s.node},
                    "spec": {
                        "holderIdentity": self.s.node,
                        "leaseDurationSeconds": 40,
                        "renewTime": micro,
                    },
                },
            )

    # -- reconcile -------------------------------------------------------------

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._index_lock:
            if kind == "DELETED":
                self._pods_by_uid.pop(uid, None)
            else:
                self._pods_by_uid[uid] = pod
        self.queue.add(uid)

    def _pod_by_uid(self, uid: str) -> dict[str, Any] | None:
        with self._index_lock:
            return self._pods_by_uid.get(uid)

    def _has_sandbox(self, uid: str) -> bool:
        return self.store.get_pod_meta(uid) is not None or bool(self.store.list_pod(uid))

    def reconcile(self, uid: str) -> Result:
        pod = self._pod_by_uid(uid)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            if (pod is not None or self._has_sandbox(uid)) and self.teardown(uid, pod):
                return Result(requeue_after=CLEANUP_RETRY)  # a DEL failed: its record stays
            return Result()
        eth0 = self.store.get(uid, "eth0")
        if eth0 is None or eth0.state != ATTACHED:
            # A new sandbox (also for a pod that outlived a `netshift down`): new pod IP.
            # One made only in part before a crash goes first, as a runtime would redo it.
            if self._has_sandbox(uid) and self.teardown(uid, None):
                return Result(requeue_after=CLEANUP_RETRY)
            self.set_running(pod, self.create_sandbox(pod))
        elif pod.get("status", {}).get("phase") != "Running":
            self.set_running(pod, eth0)
        return Result()

    def _nad_conflist(self, ref: ann.NetworkRef) -> ConfList:
        try:
            nad: dict[str, Any] | None = self.kube.get(nad_path(ref.namespace, ref.name))
        except ApiError as err:
            if err.status != 404:
                raise
            nad = None
        return nad_conflist(nad, ref)

    def _add(
        self,
        pod: Mapping[str, Any],
        network: str,
        ifname: str,
        conflist: ConfList,
        selection: ann.NetworkSelection | None = None,
    ) -> AttachmentRecord:
        meta = pod["metadata"]
        uid = meta["uid"]
        netns = str(NETNS_DIR / netns_name(uid))
        default = selection is None
        # Written before ADD: a crash from here on leaves a record to DEL, never a leak.
        rec = self.store.put(
            AttachmentRecord(
                pod_uid=uid,
                pod_namespace=meta["namespace"],
                pod_name=meta["name"],
                network=network,
                interface=ifname,
                state=ATTACHING,
                conflist=conflist.to_dict(),
                container_id=uid,
                netns=netns,
                selection=selection.to_json() if selection else {},
                is_default=default,
                role=DEFAULT if default else SECONDARY,
            )
        )
        runtime = attachment_runtime(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=uid,
            netns=netns,
            ifname=ifname,
            selection=selection,
        )
        try:
            result = self.cni.add(conflist, runtime)
        except CniError as err:
            if err.rollback_error is None:
                self.store.delete(uid, ifname)  # rolled back: nothing left to undo
            else:
                self.store.put(replace(rec, state=FAILED, message=str(err)))
            raise
        return self.store.put(replace(rec, state=ATTACHED, result=result))

    def create_sandbox(self, pod: Mapping[str, Any]) -> AttachmentRecord:
        """Make the pod's netns and attach its networks; returns the record of eth0."""
        meta = pod["metadata"]
        uid, ns = meta["uid"], meta["namespace"]
        annotations: Mapping[str, str] = meta.get("annotations") or {}
        name = netns_name(uid)
        netns = str(NETNS_DIR / name)
        # Before the namespace exists, so a crash from here on is still torn down.
        self.store.put_pod_meta(
            PodMeta(pod_uid=uid, pod_namespace=ns, pod_name=meta["name"], netns=netns)
        )
        if not Path(netns).exists():
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)

        network, conflist = CLUSTER_NETWORK, self.cluster_net
        if keys.DEFAULT_NETWORK_KEY in annotations:
            ref = ann.parse_default_network(annotations[keys.DEFAULT_NETWORK_KEY], ns)
            network, conflist = str(ref), self._nad_conflist(ref)
        eth0 = self._add(pod, network, "eth0", conflist)

        failures: list[str] = []
        if annotations.get(keys.NETWORKS_KEY):
            try:
                selections = ann.parse_networks(annotations[keys.NETWORKS_KEY])
                wanted = ann.desired_attachments(selections, ns, current=())
            except ann.AnnotationError as err:
                failures.append(str(err))
                wanted = []
            for att in wanted:
                try:
                    net = self._nad_conflist(att.ref)
                    self._add(pod, str(att.ref), att.interface, net, att.selection)
                except (CniError, ApiError, ValueError) as err:
                    failures.append(f"{att.ref}@{att.interface}: {err}")
        for failure in failures:
            # Multus would fail the sandbox; the simulator keeps the pod and says why.
            record_event(self.kube, pod, "NetworkSetupFailed", failure, "Warning", COMPONENT)
        self._write_network_status(pod)
        return eth0

    def _write_network_status(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        attached = [r for r in self.store.list_pod(meta["uid"]) if r.state == ATTACHED]
        entries = [
            network_status_entry(r.network, r.interface, r.result, r.is_default)
            for r in sorted(attached, key=lambda r: (not r.is_default, r.created_at))
        ]
        patch_annotations(
            self.kube,
            pod_path(meta["namespace"], meta["name"]),
            {keys.NETWORK_STATUS_KEY: ann.format_network_status(entries)},
        )

    def set_running(self, pod: Mapping[str, Any], eth0: AttachmentRecord) -> None:
        meta = pod["metadata"]
        ips = [ip.split("/")[0] for ip in result_ips(eth0.result or {}, "eth0")]
        now = now_rfc3339()
        containers = pod.get("spec", {}).get("containers", [])
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ips[0] if ips else None,
            "podIPs": [{"ip": ip} for ip in ips],
            "startTime": now,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "containerID": f"netshift-sim://{meta['uid']}/{c['name']}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in containers
            ],
        }
        try:
            self.kube.patch_merge(
                pod_path(meta["namespace"], meta["name"]) + "/status", {"status": status}
            )
        except ApiError as err:
            if err.status != 404:
                raise

    def teardown(self, uid: str, pod: Mapping[str, Any] | None) -> int:
        """DEL every recorded attachment with its recorded config, remove the netns and the pod.

        Returns how many attachments are left: their DEL failed, their records stay.
        """
        name = netns_name(uid)
        netns = str(NETNS_DIR / name)
        live = netns if Path(netns).exists() else ""
        left = 0
        # The reverse of the order of ADD: secondaries, newest first, then eth0.
        for rec in sorted(self.store.list_pod(uid), key=lambda r: (r.is_default, -r.created_at)):
            invocation = recorded_invocation(rec, live)
            try:
                if invocation is not None:
                    self.cni.delete(*invocation, rec.result)
            except CniError as err:
                log.warning("DEL %s of pod %s failed: %s", rec.interface, uid, err)
                left += 1
                continue
            self.store.delete(uid, rec.interface)
        if live:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.store.delete_pod(uid)  # refused while a record is left
        if pod is not None:
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                # As kubelet does once the sandbox is gone: remove the object for good.
                self.kube.delete(
                    pod_path(meta["namespace"], meta["name"]),
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                )
        log.info("pod %s torn down", uid)
        return left
