"""Rollout planning: which running pods a profile's rollout touches and which to patch next.

Pure: the input is the cluster as the caches show it (profiles, namespace
labels, running pods, NADs) and the time; the output is a plan that the shell
(controller/reconcile.py) carries out. Every fact a plan depends on is read
from the pods themselves: the annotations the controller writes when it starts
a pod (`netshift.io/rollout-started`, `netshift.io/rollout-profile`) and the
report the agent writes (`netshift.io/status`). So a restarted controller, or a
new leader, plans exactly what its predecessor would have, and never patches a
pod that already carries what its profile wants.

A plan is about one *rollout name*: the name of a NetworkProfile, which may be
deleted already (then its pods are handed back, see `leaving`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from netshift.annotations import AnnotationError, parse_ref
from netshift.keys import (
    DEFAULT_NETWORK_KEY,
    PROFILE_KEY,
    ROLLOUT_DESIRED_KEY,
    ROLLOUT_PROFILE_KEY,
    ROLLOUT_STARTED_KEY,
    SWITCH_POLICY_KEY,
    SYSTEM_NAMESPACES,
)
from netshift.pod import Pod
from netshift.podip import carry_problem
from netshift.podstatus import (
    SwitchPolicy,
    desired_hash,
    format_switch_policy,
    is_settled,
    parse_status,
)
from netshift.policy import Profile, apply_profile, resolve, why_first

# What a pod is within one rollout.
PENDING: Final = "Pending"  # its annotations differ from what the rollout wants: needs a patch
IN_FLIGHT: Final = "InFlight"  # patched by this rollout; the agent has not finished with it
CONVERGED: Final = "Converged"  # carries the wanted state and the agent reports it converged
FAILED: Final = "Failed"  # the agent reports it degraded, or never reported within the timeout
WAITING: Final = "Waiting"  # carries the wanted state (not patched by us); no agent report yet
INVALID: Final = "Invalid"  # its annotations cannot be read; it is never patched

# Why no pod starts.
BLOCKED_INVALID: Final = "InvalidSpec"
BLOCKED_IGNORE: Final = "ExistingPodsIgnored"
BLOCKED_PAUSED: Final = "Paused"
BLOCKED_FAILURES: Final = "FailureThresholdReached"


@dataclass(frozen=True)
class Snapshot:
    """The cluster as the caches show it."""

    profiles: Sequence[Profile]
    namespaces: Mapping[str, Mapping[str, str]]  # name -> labels
    pods: Sequence[Pod]
    nads: Collection[str] | None = None  # "ns/name" of every NAD; None: do not check
    invalid_profiles: Mapping[str, str] = field(default_factory=dict)  # name -> why unreadable
    excluded_namespaces: Collection[str] = SYSTEM_NAMESPACES
    # "ns/name" -> the type of the NAD's main plugin (netshift.podip); None: not read
    nad_plugins: Mapping[str, str] | None = None

    def winners(self) -> dict[str, Profile | None]:
        """The governing profile of every known namespace (None: no profile)."""
        return {
            ns: None if ns in self.excluded_namespaces else resolve(labels, self.profiles).winner
            for ns, labels in self.namespaces.items()
        }


@dataclass(frozen=True)
class Settings:
    """Controller-wide knobs that no profile carries."""

    pod_timeout: float = 600.0  # a started pod without a report after this long counts as failed
    orphan_max_concurrent: int = 5  # in-flight limit when handing back a deleted profile's pods


@dataclass(frozen=True)
class PodPlan:
    pod: Pod
    state: str
    changes: Mapping[str, str | None] = field(default_factory=dict)  # set when PENDING
    in_flight: bool = False  # patched by this rollout and not settled (a PENDING pod may be too)
    missing_networks: tuple[str, ...] = ()  # NADs the changes need that do not exist
    message: str = ""


@dataclass(frozen=True)
class Conflict:
    """A namespace this profile selects that another profile governs."""

    namespace: str
    winner: str
    why: str  # why the winner governs it rather than this profile (policy.why_first)


@dataclass(frozen=True)
class Counts:
    desired: int = 0  # running pods in the governed namespaces
    updated: int = 0  # of those, carrying what the profile wants
    converged: int = 0
    failed: int = 0
    in_flight: int = 0  # every pod of this rollout not settled yet (also pods handed back)
    pending: int = 0  # still to be patched
    waiting: int = 0
    leaving: int = 0  # to be handed back (their namespace has no profile any more)
    missing: int = 0  # pending pods held back by missing NADs


@dataclass(frozen=True)
class RolloutPlan:
    name: str
    profile: Profile | None  # None: the profile is deleted, or unreadable (see `invalid`)
    invalid: str | None  # why the existing profile object cannot be read
    namespaces: tuple[str, ...]  # governed by this profile, sorted
    conflicts: tuple[Conflict, ...]
    targets: tuple[PodPlan, ...]  # running pods of the governed namespaces
    leaving: tuple[PodPlan, ...]  # pods whose injection this rollout takes back
    in_flight: tuple[Pod, ...]
    starts: tuple[PodPlan, ...]  # to patch now, in this order
    blocked: str | None  # why no pod may start (None: not blocked)
    max_concurrent: int
    counts: Counts
    # With oldDefault Remove: "ns/name: why" of each new default network that cannot carry
    # the pod IPs Kubernetes reports (the agents keep those pods' old defaults instead).
    remove_problems: tuple[str, ...] = ()


def switch_policy_of(profile: Profile) -> str:
    rollout = profile.rollout
    return format_switch_policy(SwitchPolicy(rollout.old_default, float(rollout.drain_seconds)))


# What brings a pod to a profile: desired_changes, or a shell's remembering wrapper of it.
DesiredChanges = Callable[[Pod, "Profile | None"], dict[str, str | None]]


def desired_changes(pod: Pod, profile: Profile | None) -> dict[str, str | None]:
    """What brings the pod to `profile` (None: hand it back); {} when it is there.

    The switch policy goes with every patch that changes something, because the
    agent reads it when it acts on the same patch; on its own it is no reason to
    patch a pod. Raises AnnotationError / ProfileError (ValueError) when the
    pod's annotations cannot be read.
    """
    changes = apply_profile(pod.annotations, pod.namespace, profile)
    if changes and profile is not None:
        policy = switch_policy_of(profile)
        if pod.annotations.get(SWITCH_POLICY_KEY) != policy:
            changes[SWITCH_POLICY_KEY] = policy
    return changes


def start_patch(plan: PodPlan, rollout: str, started: str) -> dict[str, str | None]:
    """The annotation patch that starts a pod: its changes plus the rollout's own marks.

    One mark is the hash of the wish the patch leaves on the pod, so the agent can tell
    that what it does next is the rollout's (Events then go on the profile, not per pod).
    """
    after = {k: v for k, v in {**plan.pod.annotations, **plan.changes}.items() if v is not None}
    return {
        **plan.changes,
        ROLLOUT_STARTED_KEY: started,
        ROLLOUT_PROFILE_KEY: rollout,
        ROLLOUT_DESIRED_KEY: desired_hash(after),
    }


def required_networks(pod: Pod, profile: Profile, changes: Mapping[str, str | None]) -> list[str]:
    """The NADs ("ns/name") the profile's part of the changes refers to."""
    refs = [str(sel.ref(pod.namespace)) for sel in profile.networks]
    default = changes.get(DEFAULT_NETWORK_KEY)
    if default:
        # apply_profile wrote it, so it parses; were it not to, there is nothing to check.
        with contextlib.suppress(AnnotationError):
            refs.append(str(parse_ref(default, pod.namespace)))
    return refs


def _agent_message(pod: Pod) -> str:
    status = parse_status(pod.annotations)
    return status.message if status is not None and status.message else ""


def _in_flight(pod: Pod, rollout: str, now: datetime, settings: Settings) -> tuple[bool, bool]:
    """(in flight, timed out): patched by this rollout and the agent not done with it."""
    started = pod.started_at()
    if pod.annotations.get(ROLLOUT_PROFILE_KEY) != rollout or started is None:
        return False, False
    settled, _ = is_settled(pod.annotations)
    if settled:
        return False, False
    if (now - started).total_seconds() > settings.pod_timeout:
        return False, True
    return True, False


def _classify(
    pod: Pod,
    rollout: str,
    profile: Profile | None,
    now: datetime,
    settings: Settings,
    nads: Collection[str] | None,
    desired: DesiredChanges,
) -> PodPlan:
    try:
        changes = desired(pod, profile)
    except ValueError as err:
        return PodPlan(pod, INVALID, message=str(err))
    in_flight, timed_out = _in_flight(pod, rollout, now, settings)
    if changes:
        missing: tuple[str, ...] = ()
        if profile is not None and nads is not None:
            missing = tuple(
                sorted({r for r in required_networks(pod, profile, changes) if r not in nads})
            )
        return PodPlan(pod, PENDING, changes, in_flight=in_flight, missing_networks=missing)
    settled, failed = is_settled(pod.annotations)
    if settled:
        if failed:
            return PodPlan(pod, FAILED, message=_agent_message(pod) or "the agent reports Degraded")
        return PodPlan(pod, CONVERGED)
    if timed_out:
        return PodPlan(
            pod,
            FAILED,
            message=f"the agent did not report within {settings.pod_timeout:.0f}s of the patch",
        )
    if in_flight:
        return PodPlan(pod, IN_FLIGHT, in_flight=True)
    return PodPlan(pod, WAITING)


def plan_rollout(
    rollout: str,
    snapshot: Snapshot,
    now: datetime,
    settings: Settings | None = None,
    desired: DesiredChanges = desired_changes,
) -> RolloutPlan:
    """Everything the controller needs to know and do for one rollout name, now.

    `desired` computes each pod's changes; the controller passes one that remembers
    them per pod version and profile (the answer is the same, see ChangesMemo).
    """
    settings = settings or Settings()
    profile = next((p for p in snapshot.profiles if p.name == rollout), None)
    invalid = snapshot.invalid_profiles.get(rollout) if profile is None else None
    winners = snapshot.winners()
    namespaces = sorted(ns for ns, w in winners.items() if w is not None and w.name == rollout)
    pods = _place_pods(
        rollout, profile, invalid, set(namespaces), winners, snapshot, now, settings, desired
    )
    failed = sum(1 for t in pods.targets if t.state in (FAILED, INVALID))
    blocked = _blocked(profile, invalid, failed)
    max_concurrent = (
        profile.rollout.max_concurrent if profile is not None else settings.orphan_max_concurrent
    )
    starts = [] if blocked is not None else _starts(pods, max_concurrent)
    return RolloutPlan(
        name=rollout,
        profile=profile,
        invalid=invalid,
        namespaces=tuple(namespaces),
        conflicts=_conflicts(rollout, profile, winners, snapshot),
        targets=tuple(pods.targets),
        leaving=tuple(pods.leaving),
        in_flight=tuple(pods.in_flight),
        starts=tuple(starts),
        blocked=blocked,
        max_concurrent=max_concurrent,
        counts=_counts(pods, failed),
        remove_problems=_remove_problems(profile, namespaces, snapshot),
    )


def _remove_problems(
    profile: Profile | None, namespaces: Sequence[str], snapshot: Snapshot
) -> tuple[str, ...]:
    """Which of the profile's new default networks cannot carry a retired pod IP
    (netshift.podip): the agents refuse those Removes."""
    if profile is None or profile.rollout.old_default != "Remove" or snapshot.nad_plugins is None:
        return ()
    found = set()
    for ns in namespaces:
        ref = apply_profile({}, ns, profile).get(DEFAULT_NETWORK_KEY)
        plugin = snapshot.nad_plugins.get(ref) if ref else None
        why = carry_problem(plugin, (), ()) if plugin is not None else ""
        if why:
            found.add(f"{ref}: {why}")
    return tuple(sorted(found))


def _conflicts(
    rollout: str,
    profile: Profile | None,
    winners: Mapping[str, Profile | None],
    snapshot: Snapshot,
) -> tuple[Conflict, ...]:
    """The namespaces the profile selects but another profile governs."""
    if profile is None:
        return ()
    conflicts: list[Conflict] = []
    for ns, labels in sorted(snapshot.namespaces.items()):
        winner = winners.get(ns)
        if (
            winner is not None
            and winner.name != rollout
            and profile.namespace_selector.matches(labels)
        ):
            conflicts.append(Conflict(ns, winner.name, why_first(winner, profile)))
    return tuple(conflicts)


@dataclass
class _PlacedPods:
    targets: list[PodPlan] = field(default_factory=list)
    leaving: list[PodPlan] = field(default_factory=list)
    in_flight: list[Pod] = field(default_factory=list)


def _place_pods(
    rollout: str,
    profile: Profile | None,
    invalid: str | None,
    governed: Collection[str],
    winners: Mapping[str, Profile | None],
    snapshot: Snapshot,
    now: datetime,
    settings: Settings,
    desired: DesiredChanges,
) -> _PlacedPods:
    """Each eligible pod as a target, a pod to hand back, or neither; and which hold a slot."""
    # A profile that still exists but stopped governing a namespace hands its pods
    # back only when it is Live; a deleted one always does (see docs/controller.md).
    hands_back = invalid is None and (profile is None or profile.rollout.existing_pods == "Live")
    placed = _PlacedPods()
    for pod in sorted(snapshot.pods, key=lambda p: (p.namespace, p.name)):
        if not pod.eligible or pod.namespace not in winners:
            continue
        if pod.namespace in snapshot.excluded_namespaces:
            continue
        plan: PodPlan | None = None
        if pod.namespace in governed and profile is not None:
            plan = _classify(pod, rollout, profile, now, settings, snapshot.nads, desired)
            placed.targets.append(plan)
        elif (
            hands_back
            and winners[pod.namespace] is None
            and pod.annotations.get(PROFILE_KEY) == rollout
        ):
            plan = _classify(pod, rollout, None, now, settings, None, desired)
            if plan.state == PENDING:
                placed.leaving.append(plan)
        if plan is not None:
            if plan.in_flight:
                placed.in_flight.append(pod)
            continue
        # Patched by this rollout, now elsewhere: it holds a slot until the agent is done.
        if _in_flight(pod, rollout, now, settings)[0]:
            placed.in_flight.append(pod)
    return placed


def _blocked(profile: Profile | None, invalid: str | None, failed: int) -> str | None:
    """Why no pod may start now (None: not blocked)."""
    if invalid is not None:
        return BLOCKED_INVALID
    if profile is None:
        return None
    if profile.rollout.existing_pods != "Live":
        return BLOCKED_IGNORE
    if profile.rollout.paused:
        return BLOCKED_PAUSED
    if 0 < profile.rollout.max_failures <= failed:
        return BLOCKED_FAILURES
    return None


def _starts(pods: _PlacedPods, max_concurrent: int) -> list[PodPlan]:
    """The pending pods to patch now, in order, within the free slots."""
    pending = [
        p for p in (*pods.targets, *pods.leaving) if p.state == PENDING and not p.missing_networks
    ]
    pending.sort(key=lambda p: (p.pod.namespace, p.pod.name))
    # A pod already in flight for this rollout gets the newer wish without a new slot.
    starts = [p for p in pending if p.in_flight]
    budget = max(0, max_concurrent - len(pods.in_flight))
    return starts + [p for p in pending if not p.in_flight][:budget]


def _counts(pods: _PlacedPods, failed: int) -> Counts:
    targets = pods.targets
    return Counts(
        desired=len(targets),
        updated=sum(1 for t in targets if t.state not in (PENDING, INVALID)),
        converged=sum(1 for t in targets if t.state == CONVERGED),
        failed=failed,
        in_flight=len(pods.in_flight),
        pending=sum(1 for t in targets if t.state == PENDING),
        waiting=sum(1 for t in targets if t.state == WAITING),
        leaving=len(pods.leaving),
        missing=sum(1 for t in targets if t.state == PENDING and t.missing_networks),
    )
