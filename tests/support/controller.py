"""Helpers for the controller tests: plan builders (pure) and cluster helpers.

The cluster helpers include `StandInAgent`, the stand-in agent: it plays the agent's
part where no agent runs in the test cluster. For every running pod of its namespaces
whose netshift.io/status does not describe the current wish, it writes the report the
agent would write (observed = desired_hash, phase Converged, or Degraded for the pods
it is told to fail) after a delay.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.rollout import RolloutPlan, Settings, Snapshot, plan_rollout, start_patch
from localcluster.cluster import LocalCluster
from localcluster.procs import main_python
from netshift.keys import CONVERGED, DEGRADED, ROLLOUT_STARTED_KEY, STATUS_KEY
from netshift.kube import (
    ApiError,
    Informer,
    Kube,
    lease_path,
    namespace_path,
    now_rfc3339,
    pod_path,
    wait_for,
)
from netshift.pod import Pod
from netshift.podstatus import PodNetStatus, desired_hash, parse_status
from netshift.policy import Profile, profile_from_object
from support.builders import PROFILES, create_nad, profile_object

# --- pure builders --------------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
STAMP = "2025-06-01T12:00:00.000000Z"


def profile(
    name: str = "blue",
    *,
    labels: Mapping[str, str] | None = None,
    default: str | None = "net-b",
    networks: list[dict[str, Any]] | None = None,
    priority: int = 0,
    **rollout: Any,
) -> Profile:
    return profile_from_object(
        rollout_profile(
            name,
            labels={"team": "a"} if labels is None else labels,
            default=default,
            networks=networks,
            priority=priority,
            **rollout,
        )
        | {"metadata": {"name": name, "generation": 1}}
    )


def pod(namespace: str, name: str, annotations: Mapping[str, str] | None = None, **kw: Any) -> Pod:
    return Pod(
        namespace, name, uid=f"uid-{namespace}-{name}", annotations=dict(annotations or {}), **kw
    )


def patched(p: Pod, patch: Mapping[str, str | None]) -> Pod:
    annotations = dict(p.annotations)
    for key, value in patch.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    return replace(p, annotations=annotations)


def reported(p: Pod, phase: str = CONVERGED, message: str = "") -> Pod:
    """The agent's report on the pod's current wish, as the agent would write it."""
    status = PodNetStatus(observed=desired_hash(p.annotations), phase=phase, message=message)
    return patched(p, {STATUS_KEY: status.to_json()})


def snapshot(
    profiles: list[Profile],
    pods: list[Pod],
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
    **kw: Any,
) -> Snapshot:
    ns = namespaces if namespaces is not None else {"ns1": {"team": "a"}, "ns2": {"team": "a"}}
    return Snapshot(profiles=profiles, namespaces=ns, pods=pods, **kw)


def plan(name: str, snap: Snapshot, now: datetime = NOW, **kw: Any) -> RolloutPlan:
    return plan_rollout(name, snap, now, Settings(**kw) if kw else None)


def pods(n: int, namespace: str = "ns1") -> list[Pod]:
    return [pod(namespace, f"p{i:02d}") for i in range(n)]


def start(p: Pod, rollout_plan: RolloutPlan, stamp: str = STAMP) -> Pod:
    pp = next(s for s in rollout_plan.starts if s.pod.key == p.key)
    return patched(p, start_patch(pp, rollout_plan.name, stamp))


def states(rollout_plan: RolloutPlan) -> dict[str, str]:
    return {t.pod.key: t.state for t in rollout_plan.targets}


# --- cluster objects -------------------------------------------------------------


def rollout_profile(
    name: str,
    *,
    labels: Mapping[str, str],
    default: str | None = "net-b",
    networks: list[dict[str, Any]] | None = None,
    priority: int = 0,
    **rollout: Any,
) -> dict[str, Any]:
    """`builders.profile_object` with the rollout tests' defaults: network net-b, three pods
    at a time."""
    return profile_object(
        name,
        labels=labels,
        default=default,
        networks=networks,
        priority=priority,
        **{"maxConcurrent": 3, **rollout},
    )


def create_profile(kube: Kube, name: str, **kw: Any) -> dict[str, Any]:
    return kube.create(PROFILES, rollout_profile(name, **kw))


def patch_profile(kube: Kube, name: str, spec: Mapping[str, Any]) -> None:
    kube.patch_merge(f"{PROFILES}/{name}", {"spec": dict(spec)})


def delete_profile(kube: Kube, name: str) -> None:
    with contextlib.suppress(ApiError):
        kube.delete(f"{PROFILES}/{name}")


def profile_status(kube: Kube, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kube.get(f"{PROFILES}/{name}").get("status") or {}
    return status


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def label_namespace(kube: Kube, namespace: str, labels: Mapping[str, str | None]) -> None:
    kube.patch_merge(namespace_path(namespace), {"metadata": {"labels": dict(labels)}})


def create_pods(kube: Kube, namespace: str, n: int, prefix: str = "p") -> list[str]:
    names = [f"{prefix}{i:02d}" for i in range(n)]
    for name in names:
        kube.create(
            pod_path(namespace),
            {
                "metadata": {"name": name, "labels": {"app": "rollout-test"}},
                "spec": {
                    "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        )
    return names


def running_pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get(pod_path(namespace))["items"]
    return [p for p in items if (p.get("status") or {}).get("phase") == "Running"]


def wait_running(kube: Kube, namespace: str, n: int, timeout: float = 90) -> None:
    wait_for(lambda: len(running_pods(kube, namespace)) == n, timeout, what=f"{n} running pods")


def rollout_setup(
    kube: Kube, namespace: str, n: int, *, label: str = "rollout", nads: Sequence[str] = ("net-b",)
) -> list[str]:
    """A namespace labelled `label=<namespace>`, its NADs, and `n` running pods; their names."""
    label_namespace(kube, namespace, {label: namespace})
    for nad in nads:
        create_nad(kube, namespace, nad)
    names = create_pods(kube, namespace, n)
    wait_running(kube, namespace, n)
    return names


def annotations_of(kube: Kube, namespace: str) -> dict[str, dict[str, str]]:
    return {
        p["metadata"]["name"]: dict(p["metadata"].get("annotations") or {})
        for p in running_pods(kube, namespace)
    }


# --- the agent's part ------------------------------------------------------------


@dataclass
class Report:
    pod: str  # ns/name
    at: float  # time.time() just before the report was written
    phase: str
    started: str | None  # the pod's rollout-started annotation when reported


@dataclass
class StandInAgent:
    """The stand-in agent (the controller's tests run no agent and no real node): reports
    on each running pod's current wish, `delay` seconds after first seeing it.

    `fail` names pods (ns/name) reported Degraded instead of Converged; `hold`
    names pods it does not report on at all while they are in it.
    """

    kube: Kube
    namespaces: Sequence[str]
    delay: float = 0.3
    fail: set[str] = field(default_factory=set)
    hold: set[str] = field(default_factory=set)
    reports: list[Report] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._seen: dict[tuple[str, str], float] = {}
        self._informers = [
            Informer(self.kube, pod_path(ns), name=f"stand-in agent {ns}") for ns in self.namespaces
        ]
        self._thread = threading.Thread(target=self._run, name="stand-in agent", daemon=True)

    def start(self) -> StandInAgent:
        for informer in self._informers:
            informer.start()
            informer.wait_synced(30)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for informer in self._informers:
            informer.stop()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for informer in self._informers:
                for obj in informer.items():
                    try:
                        self._consider(obj)
                    except ApiError as err:
                        if err.status != 409:  # 409: the pod changed; look again next round
                            self.errors.append(repr(err))
                    except Exception as err:
                        self.errors.append(repr(err))

    def _consider(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if (obj.get("status") or {}).get("phase") != "Running" or meta.get("deletionTimestamp"):
            return
        if key in self.hold:
            return
        annotations: dict[str, str] = dict(meta.get("annotations") or {})
        wish = desired_hash(annotations)
        status = parse_status(annotations)
        if status is not None and status.observed == wish:
            return
        first = self._seen.setdefault((key, wish), time.monotonic())
        if time.monotonic() - first < self.delay:
            return
        phase = DEGRADED if key in self.fail else CONVERGED
        report = PodNetStatus(
            observed=wish,
            phase=phase,
            message="stand-in agent: told to fail this pod" if phase == DEGRADED else "",
            updated_at=now_rfc3339(),
        )
        at = time.time()
        self.kube.patch_merge(
            pod_path(meta["namespace"], meta["name"]),
            {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": {STATUS_KEY: report.to_json()},
                }
            },
        )
        self.reports.append(Report(key, at, phase, annotations.get(ROLLOUT_STARTED_KEY)))

    def in_flight_intervals(self) -> list[tuple[float, float, str]]:
        """(start, settle, pod) of every controller start the agent reported on."""
        intervals = []
        seen: set[tuple[str, str]] = set()
        for r in self.reports:
            if r.started and (r.pod, r.started) not in seen:
                seen.add((r.pod, r.started))
                begin = datetime.fromisoformat(r.started).timestamp()
                intervals.append((begin, r.at, r.pod))
        return intervals


def max_overlap(intervals: Iterable[tuple[float, float, Any]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    points = []
    for begin, end, _ in intervals:
        points.append((begin, 1))
        points.append((end, -1))
    highest = current = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        current += delta
        highest = max(highest, current)
    return highest


# --- the audit log ----------------------------------------------------------------


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def audit_max_in_flight(records: Iterable[Mapping[str, Any]], profile: str) -> int:
    """Replay the log: +1 per start (of a pod not already open), -1 per end."""
    open_pods: set[str] = set()
    highest = 0
    for r in records:
        if r["profile"] != profile:
            continue
        if r["event"] == "start":
            open_pods.add(r["pod"])
        else:
            open_pods.discard(r["pod"])
        highest = max(highest, len(open_pods), int(r["inflight"]))
    return highest


# --- controllers as processes -------------------------------------------------------


class ControllerProcess:
    """`netshift controller` as a child process, as it runs in production."""

    def __init__(
        self,
        cluster: LocalCluster,
        workdir: Path,
        identity: str,
        lease_namespace: str,
        *extra: str,
    ) -> None:
        self.identity = identity
        self.audit = workdir / f"audit-{identity}.jsonl"
        self.log = workdir / f"controller-{identity}.log"
        argv = [
            *main_python(),
            "--log-format=text",
            "-v",
            "controller",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--lease-namespace={lease_namespace}",
            f"--identity={identity}",
            f"--audit-log={self.audit}",
            "--lease-duration=4",
            "--renew-interval=1",
            "--retry-interval=0.5",
            "--resync-seconds=5",
            *extra,
        ]
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in wait()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        self.proc = subprocess.Popen(
            argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=workdir
        )

    def signal(self, signum: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log_file.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def lease_holder(kube: Kube, namespace: str, name: str = "netshift-controller") -> str | None:
    try:
        lease = kube.get(lease_path(namespace, name))
    except ApiError:
        return None
    holder = (lease.get("spec") or {}).get("holderIdentity")
    return str(holder) if holder else None
