"""The controller's Prometheus series (prometheus_client, on a registry of its own).

Only the leader reports rollouts: a standby forgets them, so a sum over the
replicas counts each rollout once. `leader` says which replica that is.
`rollout_state` says what `netshift rollout status` would say of each rollout
(controller.progress.classify): the alerting rules page on it
(manifests/monitoring/netshift.rules.yaml).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import asdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.progress import classify
from controller.rollout import RolloutPlan
from controller.status import complete, progressing
from netshift.metrics import OPERATION_BUCKETS, new_registry, sample_value


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        r = self.registry
        self.leader = Gauge(
            "netshift_controller_leader",
            "1 while this replica holds the Lease and may write, else 0.",
            registry=r,
        )
        self.rollouts_in_progress = Gauge(
            "netshift_controller_rollouts_in_progress",
            "NetworkProfiles whose rollout is Progressing (pods in flight or still to start).",
            registry=r,
        )
        self.pods_in_flight = Gauge(
            "netshift_controller_pods_in_flight",
            "Pods patched by a rollout that their agent has not settled yet, by profile.",
            ("profile",),
            registry=r,
        )
        self.pods_started = Counter(
            "netshift_controller_pods_started",
            "Pods whose desired annotations a rollout patched, by profile.",
            ("profile",),
            registry=r,
        )
        self.patch_conflicts = Counter(
            "netshift_controller_patch_conflicts",
            "Pod patches refused with 409 because the pod changed since it was read "
            "(planned again), by profile.",
            ("profile",),
            registry=r,
        )
        self.reconcile_errors = Counter(
            "netshift_controller_reconcile_errors",
            "Reconciles that raised (retried after a second), by profile.",
            ("profile",),
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "netshift_controller_reconcile_duration_seconds",
            "Time one reconcile of one rollout took.",
            buckets=OPERATION_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "netshift_controller_queue_depth",
            "Rollouts queued, running or waiting for a retry.",
            registry=r,
        )
        self.rollout_state = Gauge(
            "netshift_controller_rollout_state",
            "1 for each rollout's current state (Progressing, Paused, Complete, Failed, Stuck; "
            "as `netshift rollout status` reads it) and the reason of its condition, by profile.",
            ("profile", "state", "reason"),
            registry=r,
        )
        self.rollout_pods = Gauge(
            "netshift_controller_rollout_pods",
            "Pods of a rollout by what they are (desired, updated, converged, failed, pending), "
            "by profile.",
            ("profile", "state"),
            registry=r,
        )
        self._lock = threading.Lock()
        self._progressing: set[str] = set()
        self._states: dict[str, tuple[str, str]] = {}  # profile -> (state, reason) exported

    def observe_plan(self, plan: RolloutPlan) -> None:
        """Record where a rollout stands after a reconcile acted on it."""
        if plan.profile is None and not plan.in_flight and not plan.leaving:
            self.forget(plan.name)
            return
        self.pods_in_flight.labels(plan.name).set(plan.counts.in_flight)
        c = plan.counts
        for state, n in (
            ("desired", c.desired),
            ("updated", c.updated),
            ("converged", c.converged),
            ("failed", c.failed),
            ("pending", c.pending),
        ):
            self.rollout_pods.labels(plan.name, state).set(n)
        cond = progressing(plan)
        state, reason, _ = classify(asdict(cond), asdict(complete(plan)))
        with self._lock:
            if cond.status == "True":
                self._progressing.add(plan.name)
            else:
                self._progressing.discard(plan.name)
            self.rollouts_in_progress.set(len(self._progressing))
            # One series per rollout: the old one goes, so Prometheus sees it end at once.
            before = self._states.get(plan.name)
            if before is not None and before != (state, reason):
                self.rollout_state.remove(plan.name, *before)
            self._states[plan.name] = (state, reason)
            self.rollout_state.labels(plan.name, state, reason).set(1)

    def forget(self, name: str) -> None:
        """The rollout is gone, or this replica does not lead: report nothing for it."""
        with self._lock:
            self._progressing.discard(name)
            self.rollouts_in_progress.set(len(self._progressing))
            state = self._states.pop(name, None)
            if state is not None:
                self.rollout_state.remove(name, *state)
        with contextlib.suppress(KeyError):
            self.pods_in_flight.remove(name)
        for pods in ("desired", "updated", "converged", "failed", "pending"):
            with contextlib.suppress(KeyError):
                self.rollout_pods.remove(name, pods)

    def value(self, name: str, **labels: str) -> float:
        return sample_value(self.registry, name, **labels)
