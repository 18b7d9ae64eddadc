"""The rollout controller's shell: caches in, annotation patches and profile status out.

Informers keep NetworkProfiles, Namespaces, running Pods (all namespaces) and
NADs. Any event queues the rollout names it may affect, a periodic resync
queues all of them, and `reconcile(name)` reads the caches, asks
controller.rollout for a plan, patches the pods the plan starts, and writes
the profile's status and Events. Level-triggered: a reconcile never depends
on having seen a particular event, and a restart at any moment is normal.

Pods are patched with a JSON merge patch of their annotations that carries the
resourceVersion the plan was computed from, so a pod changed meanwhile (by a
user, by the agent) is not overwritten from a stale read: the apiserver
answers 409 and the pod is planned again from the newer state.

Beside the rollouts, the same caches drive controller.namespacelabels: the label
on the namespaces some profile selects, which is what sends their pods to the
webhook.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.audit import FAILED as AUDIT_FAILED
from controller.audit import GONE, SETTLED, START, AuditLog
from controller.metrics import ControllerMetrics
from controller.namespacelabels import NamespaceLabeler
from controller.overlay import WriteOverlay
from controller.rollout import (
    PodPlan,
    RolloutPlan,
    Settings,
    Snapshot,
    desired_changes,
    plan_rollout,
    start_patch,
)
from controller.status import build_status, failed_pods, transition_events
from netshift.keys import (
    PROFILE_GROUP,
    PROFILE_KIND,
    PROFILE_VERSION,
    ROLLOUT_PROFILE_KEY,
    SYSTEM_NAMESPACES,
)
from netshift.kube import (
    RUNNING_PODS,
    ApiError,
    Informer,
    Kube,
    nad_path,
    namespace_path,
    now_rfc3339,
    object_key,
    pod_path,
    profile_crd_path,
    profile_path,
    record_event,
)
from netshift.pod import Pod
from netshift.podip import nad_main_plugin
from netshift.podstatus import desired_hash, is_settled
from netshift.policy import Profile, ProfileError, profile_from_object, resolve
from netshift.workqueue import Result, WorkQueue

log = logging.getLogger(__name__)

JSON = dict[str, Any]
COMPONENT = "netshift-controller"
# At most one NetworkProfile.status write per profile this often, unless a condition changes.
STATUS_INTERVAL = 1.0


class ChangesMemo:
    """`desired_changes`, remembered per (pod uid, resourceVersion, profile object).

    A rollout plans every pod of its namespaces on every pod event, and a pod's
    changes only change with the pod's version or the profile (whose parsed object
    is replaced whenever any profile changes). Each entry keeps its profile, so an
    id is never reused while it is remembered. Unversioned pods are not remembered.
    """

    LIMIT = 100_000

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str, int], tuple[Profile | None, dict[str, str | None]]] = {}
        self._lock = threading.Lock()

    def __call__(self, pod: Pod, profile: Profile | None) -> dict[str, str | None]:
        if not pod.resource_version:
            return desired_changes(pod, profile)
        key = (pod.uid, pod.resource_version, id(profile))
        with self._lock:
            hit = self._memo.get(key)
        if hit is not None and hit[0] is profile:
            return dict(hit[1])
        changes = desired_changes(pod, profile)  # a ValueError is not remembered
        with self._lock:
            if len(self._memo) >= self.LIMIT:
                self._memo.clear()  # a bound; the next plans compute again
            self._memo[key] = (profile, changes)
        return dict(changes)


@dataclass(frozen=True)
class ControllerOptions:
    workers: int = 4
    resync_seconds: float = 60.0
    settings: Settings = field(default_factory=Settings)
    excluded_namespaces: tuple[str, ...] = SYSTEM_NAMESPACES
    check_networks: bool = True  # hold back pods whose new networks have no NAD yet


class Controller:
    def __init__(
        self,
        kube: Kube,
        options: ControllerOptions | None = None,
        *,
        is_leader: Callable[[], bool] = lambda: True,
        audit: AuditLog | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.options = options or ControllerOptions()
        self._is_leader = is_leader
        self.audit = audit
        self.metrics = metrics if metrics is not None else ControllerMetrics()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._busy = 0  # reconciles running now
        self._pod_writes = WriteOverlay()
        self._profile_writes = WriteOverlay()
        self._profiles_dirty = True
        self._parsed: tuple[list[Profile], dict[str, str]] = ([], {})
        self._rejected: set[tuple[str, str]] = set()
        self._generations: dict[str, Any] = {}
        self._refs_by_ns: dict[str, dict[str, frozenset[str]]] = {}
        self._tracked: dict[str, dict[str, str]] = {}  # rollout -> in-flight pod key -> uid
        self._failures_reported: set[tuple[str, str]] = set()
        self._status_written_at: dict[str, float] = {}  # profile -> monotonic time
        self._desired = ChangesMemo()
        self._patcher = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pod-patch")

        self.profiles = Informer(
            kube, profile_path(), on_event=self._profile_event, name="networkprofiles"
        )
        self.namespaces = Informer(
            kube, namespace_path(), on_event=self._namespace_event, name="namespaces"
        )
        self.pods = Informer(
            kube, pod_path(), params=RUNNING_PODS, on_event=self._pod_event, name="pods"
        )
        self.nads = Informer(kube, nad_path(), on_event=self._nad_event, name="nads")
        self._informers = (self.profiles, self.namespaces, self.pods, self.nads)
        self.queue = WorkQueue(self.reconcile, workers=self.options.workers, name="rollout")
        self.labeler = NamespaceLabeler(
            kube,
            self.namespaces,
            lambda: self.parsed_profiles()[0],
            ready=lambda: self.namespaces.has_synced() and self.profiles.has_synced(),
            active=self.active,
            excluded=self.options.excluded_namespaces,
        )
        self.metrics.leader.set_function(lambda: 1.0 if self.active() else 0.0)
        self.metrics.queue_depth.set_function(self.queue.pending)
        self._resync_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the caches; the workers start once they have synced (in the background)."""
        for informer in self._informers:
            informer.start()
        # As controller-runtime waits for its caches: a plan made from a half-filled cache
        # would hand back the pods of namespaces it has not seen yet. Events queue keys meanwhile.
        threading.Thread(target=self._start_workers, name="start-workers", daemon=True).start()

    def _start_workers(self) -> None:
        while not self.wait_synced(1.0):
            if self._stopping.is_set():
                return
        if self._stopping.is_set():
            return
        self.queue.start()
        self.labeler.start()
        self._resync_thread = threading.Thread(target=self._resync, name="resync", daemon=True)
        self._resync_thread.start()

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop patching at once, wait for running reconciles, then stop the machinery."""
        self._stopping.set()
        self.queue.stop()
        self.labeler.stop()
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=drain_timeout)
        for informer in self._informers:
            informer.stop()
        self._patcher.shutdown(wait=False)

    def wait_synced(self, timeout: float) -> bool:
        return all(informer.wait_synced(timeout) for informer in self._informers)

    def synced(self) -> bool:
        return all(informer.has_synced() for informer in self._informers)

    def active(self) -> bool:
        """May this controller write now? (Not stopping, and the leader.)"""
        return not self._stopping.is_set() and self._is_leader()

    def _resync(self) -> None:
        while not self._stopping.wait(self.options.resync_seconds):
            self.enqueue_all()

    # -- what to reconcile -----------------------------------------------------

    def rollout_names(self) -> set[str]:
        """Every profile, and every (perhaps deleted) profile a pod still refers to."""
        names = {str((o.get("metadata") or {}).get("name")) for o in self.profiles.items()}
        with self._lock:
            for refs in self._refs_by_ns.values():
                for pod_refs in refs.values():
                    names |= pod_refs
        return names

    def enqueue_all(self) -> None:
        for name in self.rollout_names():
            self.queue.add(name)
        self.labeler.add_all()

    def _enqueue_profiles(self) -> None:
        for obj in self.profiles.items():
            self.queue.add(str((obj.get("metadata") or {}).get("name")))

    def _profile_event(self, kind: str, obj: JSON) -> None:
        self._profile_writes.observe(kind, obj)
        meta = obj.get("metadata") or {}
        name = str(meta.get("name"))
        with self._lock:
            self._profiles_dirty = True
            before = self._generations.get(name)
            if kind == "DELETED":
                self._generations.pop(name, None)
            else:
                self._generations[name] = meta.get("generation")
        self.queue.add(name)
        if not (kind == "MODIFIED" and before == meta.get("generation")):
            # A spec change may move namespaces between profiles: everyone's plan changes,
            # and which namespaces some profile selects.
            self._enqueue_profiles()
            self.labeler.add_all()

    def _namespace_event(self, kind: str, obj: JSON) -> None:
        name = str((obj.get("metadata") or {}).get("name"))
        if kind != "DELETED":
            self.labeler.add(name)
        self._enqueue_profiles()
        with self._lock:
            refs = set().union(*self._refs_by_ns.get(name, {}).values())
        for ref in refs:
            self.queue.add(ref)

    def _pod_event(self, kind: str, obj: JSON) -> None:
        self._pod_writes.observe(kind, obj)
        pod = Pod.from_object(obj)
        refs = frozenset(pod.rollout_refs())
        with self._lock:
            in_ns = self._refs_by_ns.setdefault(pod.namespace, {})
            names = set(in_ns.get(pod.name, frozenset())) | refs
            if kind == "DELETED" or not refs:
                in_ns.pop(pod.name, None)
                if not in_ns:
                    self._refs_by_ns.pop(pod.namespace, None)
            else:
                in_ns[pod.name] = refs
        winner = self._winner(pod.namespace)
        if winner is not None:
            names.add(winner)
        for name in names:
            self.queue.add(name)

    def _nad_event(self, kind: str, obj: JSON) -> None:
        self._enqueue_profiles()

    def _winner(self, namespace: str) -> str | None:
        if namespace in self.options.excluded_namespaces:
            return None
        ns = self.namespaces.get(namespace)
        if ns is None:
            return None
        labels = (ns.get("metadata") or {}).get("labels") or {}
        winner = resolve(labels, self.parsed_profiles()[0]).winner
        return winner.name if winner else None

    # -- the cluster as the caches show it ---------------------------------------

    def parsed_profiles(self) -> tuple[list[Profile], dict[str, str]]:
        """(valid profiles, {name: error} of unreadable ones), re-read after any change."""
        with self._lock:
            if not self._profiles_dirty:
                return self._parsed
            self._profiles_dirty = False
        valid: list[Profile] = []
        invalid: dict[str, str] = {}
        for obj in self.profiles.items():
            meta = obj.get("metadata") or {}
            try:
                valid.append(profile_from_object(obj))
            except ProfileError as err:
                name = str(meta.get("name"))
                invalid[name] = str(err)
                key = (name, str(meta.get("resourceVersion")))
                if key not in self._rejected:
                    self._rejected.add(key)
                    log.warning("NetworkProfile %s is invalid and not rolled out: %s", name, err)
        parsed = (sorted(valid, key=lambda p: p.name), invalid)
        with self._lock:
            self._parsed = parsed
        return parsed

    def snapshot(self) -> Snapshot:
        profiles, invalid = self.parsed_profiles()
        namespaces = {
            str(meta.get("name")): {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
            for meta in (ns.get("metadata") or {} for ns in self.namespaces.items())
        }
        pods = [Pod.from_object(o) for o in self._pod_writes.merge(self.pods.items())]
        nads: Collection[str] | None = None
        plugins: dict[str, str] | None = None
        if self.options.check_networks:
            objects = self.nads.items()
            nads = {object_key(o) for o in objects}
            plugins = {object_key(o): nad_main_plugin(o) for o in objects}
        return Snapshot(
            profiles=profiles,
            namespaces=namespaces,
            pods=pods,
            nads=nads,
            invalid_profiles=invalid,
            excluded_namespaces=self.options.excluded_namespaces,
            nad_plugins=plugins,
        )

    def profile_object(self, name: str) -> JSON | None:
        return self._profile_writes.get(name, self.profiles.get(name))

    def plan(self, name: str) -> RolloutPlan:
        return plan_rollout(
            name, self.snapshot(), datetime.now(UTC), self.options.settings, self._desired
        )

    # -- reconcile ---------------------------------------------------------------

    def reconcile(self, name: str) -> Result:
        with self._idle:
            self._busy += 1
        began = time.perf_counter()
        try:
            return self._reconcile(name)
        except Exception:
            self.metrics.reconcile_errors.labels(name).inc()
            raise
        finally:
            self.metrics.reconcile_duration.observe(time.perf_counter() - began)
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _reconcile(self, name: str) -> Result:
        if not self.active():
            self.metrics.forget(name)
            return Result()
        now = datetime.now(UTC)
        snapshot = self.snapshot()
        plan = plan_rollout(name, snapshot, now, self.options.settings, self._desired)
        self._note_finished(plan, snapshot)
        if plan.starts and self.profile_object(name) is None:
            uninstalling = self._uninstalling()
            if uninstalling is None:
                return Result(requeue=True)  # cannot tell now: again after the key's backoff
            if uninstalling:
                # Its pods keep their networks: netshift is being removed, not this profile.
                log.info("rollout %s: the NetworkProfile CRD is being deleted; no hand-back", name)
                return Result()
        started, conflicts = self._start_pods(plan)
        if not self.active():
            return Result()
        final = plan
        if started:
            # Status counts the pods just started as in flight.
            final = plan_rollout(name, self.snapshot(), now, self.options.settings, self._desired)
        status_wait = self._write_status(name, plan, final, started)
        self.metrics.observe_plan(final)
        if conflicts:
            # A pod changed since the plan: its update queues the rollout anyway; this retry
            # (the key's backoff) is for the case where that event came and went meanwhile.
            return Result(requeue=True)
        waits = [w for w in (self._next_timeout(final, now), status_wait) if w is not None]
        return Result(requeue_after=min(waits) if waits else None)

    def _uninstalling(self) -> bool | None:
        """Whether the NetworkProfile CRD is gone or being deleted (None: cannot tell now).

        Deleting the CRD deletes every profile with it: that is netshift being removed,
        and pods are not handed back from profiles deleted that way. Asked of the
        apiserver, not a cache: hand-backs are rare, and a watch could lag the profiles'.
        """
        try:
            crd = self.kube.get(profile_crd_path())
        except ApiError as err:
            if err.status == 404:
                return True
            log.warning("cannot read the NetworkProfile CRD (%s); hand-backs wait", err)
            return None
        return bool((crd.get("metadata") or {}).get("deletionTimestamp"))

    def _next_timeout(self, plan: RolloutPlan, now: datetime) -> float | None:
        """Seconds until the first in-flight pod times out, so it is counted failed then."""
        waits = []
        for pod in plan.in_flight:
            started = pod.started_at()
            if started is not None:
                age = (now - started).total_seconds()
                waits.append(self.options.settings.pod_timeout - age + 1.0)
        return max(1.0, min(waits)) if waits else None

    def _start_pods(self, plan: RolloutPlan) -> tuple[int, int]:
        """Patch the pods the plan starts; (patched, conflicts)."""
        in_flight = {p.key for p in plan.in_flight}
        tracked = self._tracked.setdefault(plan.name, {})
        started = conflicts = 0
        # Side by side: the pods are independent, and each patch is a round trip that the
        # pods settled meanwhile would otherwise wait behind.
        outcomes = self._patcher.map(lambda pp: self._timed_patch(plan.name, pp), plan.starts)
        timed = list(outcomes)
        results = [outcome for outcome, _ in timed]
        if "inactive" in results:
            log.info("rollout %s: no longer the leader; stopped patching", plan.name)
        for pod_plan, (outcome, took) in zip(plan.starts, timed, strict=True):
            if outcome == "conflict":
                conflicts += 1
                self.metrics.patch_conflicts.labels(plan.name).inc()
                continue
            if outcome != "patched":
                continue
            started += 1
            self.metrics.pods_started.labels(plan.name).inc()
            pod = pod_plan.pod
            new = pod.key not in in_flight
            in_flight.add(pod.key)
            tracked[pod.key] = pod.uid
            if self.audit is not None:
                self.audit.write(START, pod.key, plan.name, len(in_flight), took)
            log.info(
                "rollout %s: %s pod %s (%d in flight, max %d)",
                plan.name,
                "started" if new else "re-targeted",
                pod.key,
                len(in_flight),
                plan.max_concurrent,
            )
        return started, conflicts

    def _timed_patch(self, rollout: str, pod_plan: PodPlan) -> tuple[str, float]:
        """The patch's outcome and its round trip (the audit log's start lines carry it)."""
        sent = time.monotonic()
        outcome = self._patch_pod(rollout, pod_plan)
        return outcome, time.monotonic() - sent

    def _patch_pod(self, rollout: str, pod_plan: PodPlan) -> str:
        if not self.active():
            return "inactive"
        pod = pod_plan.pod
        changes = start_patch(pod_plan, rollout, now_rfc3339())
        body = {"metadata": {"resourceVersion": pod.resource_version, "annotations": changes}}
        self._pod_writes.expect(pod.key)
        try:
            result = self.kube.patch_merge(pod_path(pod.namespace, pod.name), body)
        except ApiError as err:
            self._pod_writes.cancel(pod.key)
            if err.status == 409:
                log.debug("rollout %s: %s changed meanwhile; planning again", rollout, pod.key)
                return "conflict"
            if err.status == 404:
                return "gone"
            log.warning("rollout %s: could not patch pod %s: %s", rollout, pod.key, err)
            return "error"
        self._pod_writes.put(result)
        return "patched"

    def _note_finished(self, plan: RolloutPlan, snapshot: Snapshot) -> None:
        """Audit the pods that left this rollout's in-flight set since the last reconcile."""
        current = {p.key: p.uid for p in plan.in_flight}
        tracked = self._tracked.get(plan.name, {})
        by_key = {p.key: p for p in snapshot.pods}
        for key, uid in sorted(tracked.items()):
            if key in current:
                continue
            pod = by_key.get(key)
            event = GONE  # deleted, stopped running, or patched by another rollout
            if pod is not None and pod.uid == uid and pod.eligible:
                settled, failed = is_settled(pod.annotations)
                if settled:
                    event = AUDIT_FAILED if failed else SETTLED
                elif pod.annotations.get(ROLLOUT_PROFILE_KEY) == plan.name:
                    event = AUDIT_FAILED  # still ours and not settled: it timed out
            if self.audit is not None:
                self.audit.write(event, key, plan.name, len(current))
            if event == AUDIT_FAILED:
                log.warning("rollout %s: pod %s failed", plan.name, key)
        self._tracked[plan.name] = current

    def _write_status(
        self, name: str, acted: RolloutPlan, final: RolloutPlan, started: int
    ) -> float | None:
        """Write the profile's status if it changed; seconds until a deferred write is due.

        A status that only moves counters is written at most once per STATUS_INTERVAL per
        profile (the reconcile then comes back for the latest one): during a rollout every
        converged pod changes it. A change worth an Event (a condition's transition) is
        written at once, so the Events and the status they are derived from stay as before.
        """
        obj = self.profile_object(name)
        if obj is None:
            return None
        previous = obj.get("status")
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        status = build_status(final, generation, previous, now_rfc3339())
        if status != previous:
            events = transition_events(acted, previous, status, started)
            due = self._status_written_at.get(name, -STATUS_INTERVAL) + STATUS_INTERVAL
            wait = due - time.monotonic()
            if not events and wait > 0:
                self._report_failures(obj, final)
                return wait
            self._profile_writes.expect(name)
            try:
                result = self.kube.patch_merge(profile_path(name, "status"), {"status": status})
            except ApiError as err:
                self._profile_writes.cancel(name)
                if err.status != 404:
                    log.warning("could not write the status of NetworkProfile %s: %s", name, err)
                return None
            self._status_written_at[name] = time.monotonic()
            self._profile_writes.put(result)
            for event in events:
                self._event(obj, event.reason, event.message, event.type)
        self._report_failures(obj, final)
        return None

    def _report_failures(self, obj: JSON, plan: RolloutPlan) -> None:
        by_key = {t.pod.key: t.pod for t in plan.targets}
        for key, uid, message in failed_pods(plan):
            mark = (uid, desired_hash(by_key[key].annotations))
            if mark in self._failures_reported:
                continue
            if len(self._failures_reported) > 100_000:
                self._failures_reported.clear()  # a bound; at worst an Event is repeated
            self._failures_reported.add(mark)
            self._event(obj, "PodFailed", f"pod {key}: {message}", "Warning")

    def _event(self, obj: JSON, reason: str, message: str, type_: str) -> None:
        involved = {
            **obj,
            "apiVersion": f"{PROFILE_GROUP}/{PROFILE_VERSION}",
            "kind": PROFILE_KIND,
        }
        record_event(self.kube, involved, reason, message, type_, COMPONENT)
