"""The node agent's reconciler: for each pod on this node, make its interfaces match its annotations.

Level-triggered: every run observes the pod (from the watch cache) and, when the
planner needs it, where its netns is; the planner (`agent.plan`, pure) says
whether to release the pod, leave it, or converge it. To converge, it observes
the agent's records and the live netns (`agent.observe`), plans, carries the
plan out with CNI and netlink (`agent.execute`) and reports the outcomes
through an annotation patch and then Events (`agent.report`), which a
background sender records so that they never delay the next pod. Every run
returns when to look at the pod again, as the planner says. One pod is never
handled by two workers at once (the work queue is keyed by pod UID).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.execute import Executor
from agent.metrics import AgentMetrics, orphaned
from agent.netns import NetnsError, NetnsResolver, Sandbox
from agent.networks import NetworkConfigs
from agent.observe import as_current, observe
from agent.plan import (
    Netns,
    Retry,
    Step,
    Wish,
    after_release,
    needs_netns,
    networks_named,
    next_requeue,
    parse_network_id,
    plan_lifecycle,
    plan_pod,
    plan_release,
    pods_naming,
)
from agent.report import Report, build_report
from netshift.annotations import NetworkRef
from netshift.cni.confdir import NodeConfDir
from netshift.cni.config import ConfList, load_conflist
from netshift.cni.executor import CniExecutor
from netshift.cni.nodeconf import DEFAULT_CONF_DIR
from netshift.keys import NETSHIFT_NAMESPACE
from netshift.kube import (
    ApiError,
    EventSender,
    Informer,
    Kube,
    configmap_path,
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
from netshift.records import CorruptRecord, RecordStore
from netshift.workqueue import Result, TerminalError, WorkQueue

log = logging.getLogger("netshift.agent")
COMPONENT = "netshift-agent"


@dataclass
class AgentSettings:
    node: str
    plugin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    records_dir: str = "/var/lib/netshift/records"
    # The cluster's own network (Multus's clusterNetwork): what a pod without a
    # default-network annotation has as eth0. Needed to switch back to it or to
    # remove it after a switch.
    cluster_network_conf: str | None = None
    # The node's Multus conf dir: where a NAD without spec.config finds its CNI conf file.
    node_conf_dir: str | None = DEFAULT_CONF_DIR
    workers: int = 10  # pods are independent (one worker per pod at a time); CNI waits on plugins
    resync_seconds: float = 60.0
    cni_timeout: float = 30.0
    # A failed ADD or DEL is tried again after this backoff (agent.plan.Retry).
    retry: Retry = field(default_factory=Retry)
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
        # The NADs changed since each pod was last reconciled (see `_on_nad`), and the
        # resourceVersion of each NAD last seen (a re-list replays unchanged ones).
        self._changed: dict[str, set[NetworkRef]] = {}
        self._nad_versions: dict[str, str] = {}
        self._started = False
        self._lock = threading.Lock()
        self.queue = WorkQueue(self.reconcile, workers=settings.workers, name="agent")
        self.pods = Informer(
            kube,
            pod_path(),
            params={"fieldSelector": f"spec.nodeName={settings.node}"},
            on_event=self._on_pod,
            name="agent pods",
        )
        self.nads = Informer(kube, nad_path(), on_event=self._on_nad, name="agent nads")
        self.policy_objects: Informer | None = None
        if settings.nad_policy is not None:
            ns, name = settings.nad_policy
            self.policy_objects = Informer(
                kube,
                configmap_path(ns),
                params={"fieldSelector": f"metadata.name={name}"},
                name="agent nad-policy",
            )
        node_conf = (
            NodeConfDir(settings.node_conf_dir, settings.node).lookup
            if settings.node_conf_dir
            else None
        )
        self.configs = NetworkConfigs(self.nads.get, cluster_net, self._nad_policy, node_conf)
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
        with self._lock:
            self._started = True
        # The NADs may have changed in any way while the agent was away: for each pod's
        # first reconcile, all the networks it names count as changed.
        wishes = self._wishes()
        held = self._held()
        with self._lock:
            for uid in set(wishes) | set(held):
                named = networks_named(wishes.get(uid), held.get(uid, ()))
                self._changed.setdefault(uid, set()).update(named)
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

    def _on_nad(self, kind: str, nad: dict[str, Any]) -> None:
        """A NAD added, changed or deleted: reconcile now the pods it concerns (the planner
        says which), with the NAD among their changed networks, so that a failed attachment
        of it is tried again at once rather than after its backoff."""
        meta = nad.get("metadata") or {}
        ref = NetworkRef(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        version = str(meta.get("resourceVersion") or "")
        with self._lock:
            if kind == "DELETED":
                self._nad_versions.pop(str(ref), None)
            elif version and self._nad_versions.get(str(ref)) == version:
                return  # a re-list replaying a NAD that did not change
            else:
                self._nad_versions[str(ref)] = version
            if not self._started:
                return  # the start-up reconcile of every pod covers it
        uids = pods_naming(ref, self._wishes(), self._held())
        if uids:
            log.debug("NAD %s %s: reconciling %d pod(s)", ref, kind.lower(), len(uids))
        for uid in uids:
            with self._lock:
                self._changed.setdefault(uid, set()).add(ref)
            self.queue.add(uid)

    def _wishes(self) -> dict[str, Wish]:
        """What each pod of this node asks for, from the watch cache."""
        with self._lock:
            objects = list(self._pods_by_uid.items())
        wishes = {}
        for uid, obj in objects:
            pod = Pod.from_object(obj)
            wishes[uid] = Wish(pod.namespace, pod.annotations)
        return wishes

    def _held(self) -> dict[str, set[NetworkRef]]:
        """The networks of the agent's records, per pod (gone pods included)."""
        return {
            uid: {parse_network_id(r.network) for r in self.store.list_pod(uid)}
            for uid in self.store.pods()
        }

    def pod(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._pods_by_uid.get(uid)

    # -- reconcile -------------------------------------------------------------

    def _sandbox_now(self, uid: str) -> Sandbox | None:
        """The pod's sandbox now (None when unknown): a DEL of what was made there runs there."""
        pod = self.pod(uid)
        if pod is None:
            return None
        with contextlib.suppress(NetnsError):
            return self.resolver.resolve(pod)
        return None

    def _find_netns(self, obj: Mapping[str, Any], pod: Pod) -> tuple[Netns, Sandbox | None]:
        try:
            sandbox = self.resolver.resolve(obj)
        except NetnsError as err:
            if not pod.terminating:
                log.warning(
                    "pod %s: cannot find its netns: %s",
                    pod.key,
                    err,
                    extra={"pod": pod.key, "resolver": repr(self.resolver), "error": str(err)},
                )
            return Netns.UNREADABLE, None
        return (Netns.FOUND, sandbox) if sandbox is not None else (Netns.ABSENT, None)

    def reconcile(self, uid: str) -> Result:
        try:
            return Result(requeue_after=self._reconcile(uid))
        except CorruptRecord as err:
            # A record file no retry can read: a person has to (RecordStore.corrupt lists it).
            raise TerminalError(f"pod {uid}: {err}") from err

    def _reconcile(self, uid: str) -> float | None:
        """Observe, plan, execute, report; when to look at the pod again (None: at its next event)."""
        with self._lock:
            seen = self._seen_at.pop(uid, time.time())
            changed = self._changed.pop(uid, set())
        obj = self.pod(uid)
        pod = Pod.from_object(obj) if obj is not None else None
        netns, sandbox = Netns.UNKNOWN, None
        if obj is not None and pod is not None and needs_netns(pod):
            netns, sandbox = self._find_netns(obj, pod)
        life = plan_lifecycle(pod, netns)
        if life.step is not Step.CONVERGE:
            log.debug("pod %s: %s (%s)", pod.key if pod else uid, life.step.value, life.why)
            return self.release(uid) if life.step is Step.RELEASE else life.requeue_after
        assert pod is not None and sandbox is not None  # converge: running, its netns found
        picked = time.time()
        started = time.monotonic()
        try:
            retry, report = self.converge(pod, sandbox, changed)
        except BaseException:
            with self._lock:  # not looked at after all: the next run gets them
                self._changed.setdefault(uid, set()).update(changed)
            raise
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
                    "picked_at": picked,
                    "cni_seconds": round(cni_seconds, 4),
                    "status_seconds": round(time.monotonic() - t_status, 4),
                    "done_at": time.time(),
                }
            )
        return retry

    def converge(
        self, pod: Pod, sandbox: Sandbox, changed: Collection[NetworkRef] = ()
    ) -> tuple[float | None, Report]:
        """Observe, plan, execute; the report of it and when to look again. `changed`: the
        NADs added, changed or deleted since the pod was last looked at."""
        obs = observe(pod, sandbox, self.store, self.executor.host_netns)
        cluster = self.configs.cluster_net
        wish = Wish(pod.namespace, pod.annotations, cluster.name if cluster else None)
        plan = plan_pod(wish, obs.seen(), time.time(), changed, self.s.retry)
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

    def release(self, uid: str) -> float | None:
        """The pod is gone or finished: DEL what the agent holds for it; when to try the rest."""
        held = [as_current(r) for r in self.store.list_pod(uid)]
        left = self.executor.release(uid, plan_release(held))
        return after_release([as_current(r) for r in left])

    def release_all(self) -> int:
        """DEL every attachment in the records, for a node being taken down. Returns what is left."""
        left = 0
        for uid in self.store.pods():
            if not self.executor.cleanup(uid):
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
