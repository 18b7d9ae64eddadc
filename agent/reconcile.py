"""The node agent's reconciler: for each pod on this node, make its interfaces match its annotations.

Level-triggered: every run observes the pod (from the watch cache), the agent's
records and the live netns (`agent.observe`), plans (`agent.plan`, pure),
carries the plan out with CNI and netlink (`agent.execute`) and reports the
outcomes through an annotation patch and then Events (`agent.report`), which
a background sender records so that they never delay the next pod. One pod is
never handled by two workers at once (the work queue is keyed by pod UID).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.execute import Executor
from agent.metrics import AgentMetrics, orphaned
from agent.netns import NetnsError, NetnsResolver, Sandbox
from agent.networks import NetworkConfigs
from agent.observe import as_current, observe
from agent.plan import Wish, next_requeue, plan_pod
from agent.report import Report, build_report
from netshift.cni.config import ConfList, load_conflist
from netshift.cni.executor import CniExecutor
from netshift.keys import NETSHIFT_NAMESPACE
from netshift.kube import (
    ApiError,
    EventSender,
    Informer,
    Kube,
    nad_path,
    now_rfc3339,
    patch_annotations,
    pod_path,
)
from netshift.nadpolicy import (
    OFF,
    POLICY_CONFIGMAP,
    NadPolicy,
    NadPolicyError,
    policy_from_configmap,
)
from netshift.pod import Pod
from netshift.records import RecordStore
from netshift.workqueue import WorkQueue

log = logging.getLogger("netshift.agent")
COMPONENT = "netshift-agent"
CLEANUP_RETRY = 10.0


@dataclass
class AgentSettings:
    node: str
    plugin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    records_dir: str = "/var/lib/netshift/records"
    # The cluster's own network (Multus's clusterNetwork): what a pod without a
    # default-network annotation has as eth0. Needed to switch back to it or to
    # remove it after a switch.
    cluster_network_conf: str | None = None
    workers: int = 10  # pods are independent (one worker per pod at a time); CNI waits on plugins
    resync_seconds: float = 60.0
    cni_timeout: float = 30.0
    # (namespace, name) of the cluster's NAD policy ConfigMap; None: no policy.
    nad_policy: tuple[str, str] | None = (NETSHIFT_NAMESPACE, POLICY_CONFIGMAP)


class Agent:
    def __init__(
        self,
        kube: Kube,
        settings: AgentSettings,
        resolver: NetnsResolver,
        on_timing: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.kube = kube
        self.s = settings
        self.resolver = resolver
        self.store = RecordStore(settings.records_dir)
        cluster_net: ConfList | None = None
        if settings.cluster_network_conf:
            with open(settings.cluster_network_conf) as f:
                cluster_net = load_conflist(f.read())
        self._pods_by_uid: dict[str, dict[str, Any]] = {}
        self._seen_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self.queue = WorkQueue(self.reconcile, workers=settings.workers, name="agent")
        self.pods = Informer(
            kube,
            "/api/v1/pods",
            params={"fieldSelector": f"spec.nodeName={settings.node}"},
            on_event=self._on_pod,
            name="agent pods",
        )
        self.nads = Informer(kube, nad_path(), name="agent nads")
        self.policy_objects: Informer | None = None
        if settings.nad_policy is not None:
            ns, name = settings.nad_policy
            self.policy_objects = Informer(
                kube,
                f"/api/v1/namespaces/{ns}/configmaps",
                params={"fieldSelector": f"metadata.name={name}"},
                name="agent nad-policy",
            )
        self.configs = NetworkConfigs(self.nads.get, cluster_net, self._nad_policy)
        self.metrics = AgentMetrics()
        self.metrics.queue_depth.set_function(lambda: float(self.queue.pending()))
        self.metrics.records_on_disk.set_function(self._records_on_disk)
        self.metrics.orphaned_records.set_function(self._orphaned_records)
        self.metrics.nad_policy_enabled.set_function(self._nad_policy_state)
        self.executor = Executor(
            self.store,
            CniExecutor(list(settings.plugin_dirs), timeout=settings.cni_timeout),
            self.configs,
            self._sandbox_now,
            self.metrics,
        )
        # Events name the node they come from: the agent's admission policy requires it.
        self.events = EventSender(kube, COMPONENT, instance=settings.node)
        self.on_timing = on_timing
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------

    @property
    def informers(self) -> tuple[Informer, ...]:
        policy = (self.policy_objects,) if self.policy_objects is not None else ()
        return (self.nads, *policy, self.pods)

    def start(self) -> None:
        for informer in self.informers:
            informer.start()
        for informer in self.informers:
            if not informer.wait_synced(60):
                raise RuntimeError(f"informer {informer.name} did not sync in 60s")
        self.queue.start()
        self.resync()  # full reconcile at start-up: records against live pods
        threading.Thread(target=self._resync_loop, name="resync", daemon=True).start()
        log.info("agent ready on node %s", self.s.node)

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()
        self.events.flush()
        for informer in self.informers:
            informer.stop()

    def synced(self) -> bool:
        return all(informer.has_synced() for informer in self.informers)

    def _nad_policy(self) -> NadPolicy:
        if self.policy_objects is None:
            return OFF
        objects = self.policy_objects.items()
        return policy_from_configmap(objects[0] if objects else None)

    def _nad_policy_state(self) -> float:
        try:
            return 1.0 if self._nad_policy().enabled else 0.0
        except NadPolicyError:
            return -1.0

    def _records_on_disk(self) -> float:
        return float(sum(len(self.store.list_pod(uid)) for uid in self.store.pods()))

    def _orphaned_records(self) -> float:
        records = [(uid, len(self.store.list_pod(uid))) for uid in self.store.pods()]
        with self._lock:
            return float(orphaned(records, dict(self._pods_by_uid)))

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.s.resync_seconds):
            self.resync()

    def resync(self) -> None:
        with self._lock:
            uids = set(self._pods_by_uid)
        for uid in uids | set(self.store.pods()):
            self.queue.add(uid)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if kind == "DELETED":
                self._pods_by_uid.pop(uid, None)
            else:
                self._pods_by_uid[uid] = pod
            self._seen_at.setdefault(uid, time.time())
        self.queue.add(uid)

    def pod(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._pods_by_uid.get(uid)

    # -- reconcile -------------------------------------------------------------

    def _netns_gone(self, pod: Mapping[str, Any]) -> bool:
        try:
            return self.resolver.resolve(pod) is None
        except NetnsError:
            return False

    def _sandbox_now(self, uid: str) -> Sandbox | None:
        """The pod's sandbox now (None when unknown): a DEL of what was made there runs there."""
        pod = self.pod(uid)
        if pod is None:
            return None
        with contextlib.suppress(NetnsError):
            return self.resolver.resolve(pod)
        return None

    def _ready_sandbox(
        self, obj: Mapping[str, Any], pod: Pod
    ) -> tuple[Sandbox | None, float | None]:
        """The netns of a running pod on the pod network, or why not now (and when to look again)."""
        if pod.host_network:
            return None, None  # no network namespace of its own: nothing to plug into
        if pod.phase != "Running":
            # The runtime (and Multus) may still be setting the sandbox up. The pod's
            # update to Running queues it again, so an earlier edit is not lost.
            return None, None
        try:
            sandbox = self.resolver.resolve(obj)
        except NetnsError as err:
            log.warning(
                "pod %s: cannot find its netns: %s",
                pod.key,
                err,
                extra={"pod": pod.key, "resolver": repr(self.resolver), "error": str(err)},
            )
            return None, 5.0
        # None: not started yet (or torn down, or being replaced): the wish waits on the pod.
        return sandbox, (None if sandbox else 1.0)

    def reconcile(self, uid: str) -> float | None:
        with self._lock:
            seen = self._seen_at.pop(uid, time.time())
        obj = self.pod(uid)
        pod = Pod.from_object(obj) if obj is not None else None
        if obj is None or pod is None or pod.phase in ("Succeeded", "Failed"):
            # What could not be released yet is tried again (and at every resync).
            return None if self.cleanup(uid) else CLEANUP_RETRY
        if pod.terminating:
            if self._netns_gone(obj):
                return None if self.cleanup(uid) else CLEANUP_RETRY
            # Graceful shutdown: the pod keeps every network until its sandbox is gone;
            # the runtime's teardown (or the pod's final deletion) brings it back here.
            return CLEANUP_RETRY
        sandbox, wait = self._ready_sandbox(obj, pod)
        if sandbox is None:
            return wait
        started = time.monotonic()
        retry, report = self.converge(pod, sandbox)
        if retry is not None:
            self.metrics.queue_retries.inc()
        cni_seconds = time.monotonic() - started
        t_status = time.monotonic()
        self.publish(pod, report)
        if self.on_timing is not None and (report.changed or report.problem):
            self.on_timing(
                {
                    "pod": pod.key,
                    "uid": uid,
                    "seen_at": seen,
                    "cni_seconds": round(cni_seconds, 4),
                    "status_seconds": round(time.monotonic() - t_status, 4),
                    "done_at": time.time(),
                }
            )
        return retry

    def converge(self, pod: Pod, sandbox: Sandbox) -> tuple[float | None, Report]:
        """Observe, plan, execute; the report of it and when to look again."""
        obs = observe(pod, sandbox, self.store, self.executor.host_netns)
        cluster = self.configs.cluster_net
        wish = Wish(pod.namespace, pod.annotations, cluster.name if cluster else None)
        plan = plan_pod(wish, obs.seen(), time.time())
        done = self.executor.run(obs, plan)
        report = build_report(
            pod.annotations,
            obs.network_status,
            done.records,
            done.outcomes,
            plan.forget,
            now_rfc3339(),
        )
        after = [as_current(r) for r in done.records]
        return (None if report.problem else next_requeue(plan, after, time.time())), report

    def publish(self, pod: Pod, report: Report) -> None:
        """One patch of the two status annotations, then the Events of what was done.

        The patch is what the controller and the user wait for; the Events go to the
        background sender after it (a Warning is never dropped, see EventSender).
        """
        ref = _event_object(pod)
        try:
            if report.changes:
                patch_annotations(
                    self.kube, pod_path(pod.namespace, pod.name), dict(report.changes)
                )
        except ApiError as err:
            if err.status != 404:
                raise
        finally:
            # Also when the patch failed: what was done stays done, and is told.
            for e in report.events:
                self.events.send(ref, e.reason, e.message, e.type)
        if report.changes and report.problem:
            self.events.send(ref, "InvalidNetworks", report.problem, "Warning")

    def cleanup(self, uid: str) -> bool:
        """The pod is gone or finished: DEL every attachment the agent holds. True when none is left."""
        return self.executor.cleanup(uid)

    def release_all(self) -> int:
        """DEL every attachment in the records, for a node being taken down. Returns what is left."""
        left = 0
        for uid in self.store.pods():
            if not self.cleanup(uid):
                left += len(self.store.list_pod(uid))
        return left


def _event_object(pod: Pod) -> dict[str, Any]:
    """What an Event names as its object."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "resourceVersion": pod.resource_version,
        },
    }
