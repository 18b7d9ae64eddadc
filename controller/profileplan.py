"""What applying (or deleting) a NetworkProfile would do, before it is done: `netshift plan`.

Pure: the input is the cluster as it is now (a controller.rollout.Snapshot) and
the profile object from the user's file (or the name to delete); the output is
what would follow from it, computed with the functions that will do the work:
policy.resolve picks (and explains) each namespace's profile as the webhook and
the controller will, policy.apply_profile gives what a new pod gets, and
controller.rollout.plan_rollout on the cluster *after* the change gives the
running pods the controller would patch, with the exact annotation changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from controller.rollout import (
    BLOCKED_FAILURES,
    BLOCKED_IGNORE,
    BLOCKED_INVALID,
    BLOCKED_PAUSED,
    INVALID,
    PENDING,
    PodPlan,
    RolloutPlan,
    Settings,
    Snapshot,
    plan_rollout,
    required_networks,
)
from netshift.keys import DEFAULT_NETWORK_KEY
from netshift.pod import Pod
from netshift.podip import carry_problem
from netshift.policy import (
    Profile,
    ProfileError,
    Resolution,
    apply_profile,
    profile_from_object,
    resolve,
)

CREATE: Final = "create"
UPDATE: Final = "update"
DELETE: Final = "delete"

# How the pods that are running now are treated in a namespace (from the governing rollout).
LIVE: Final = "Live"
IGNORE: Final = "Ignore"  # only new pods get the change; running pods keep their networks
PAUSED: Final = "Paused"  # Live, but spec.rollout.paused: nothing starts until resumed
HALTED: Final = "Halted"  # Live, but rollout.maxFailures is reached already
NONE: Final = "-"  # no profile before nor after

# What the change does to the conflicts this profile is part of in a namespace.
CONFLICT_NONE: Final = ""
CONFLICT_CREATES: Final = "creates"
CONFLICT_ENDS: Final = "ends"
CONFLICT_REMAINS: Final = "remains"

_BLOCKED_MODE: Final = {
    None: LIVE,
    BLOCKED_IGNORE: IGNORE,
    BLOCKED_PAUSED: PAUSED,
    BLOCKED_FAILURES: HALTED,
    BLOCKED_INVALID: IGNORE,
}


@dataclass(frozen=True)
class AnnotationChange:
    key: str
    before: str | None  # None: absent
    after: str | None  # None: removed

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "before": self.before, "after": self.after}


@dataclass(frozen=True)
class NamespacePlan:
    namespace: str
    selected: bool  # the profile (after the change; before it, for a delete) selects it
    winner_before: str | None
    winner_after: str | None
    contenders: tuple[str, ...]  # every profile selecting it after the change, winner first
    conflict: str  # CONFLICT_*
    conflict_message: str
    running: int  # running pods a rollout may touch (eligible)
    changing: int  # of those, pods whose annotations would change
    unreadable: int  # pods whose annotations cannot be read: never patched
    rollout: str  # LIVE | IGNORE | PAUSED | HALTED | NONE: what happens to the running pods
    rollout_by: str | None  # the rollout (profile name) that would patch them
    sample: str | None  # ns/name of a pod that would change
    sample_diff: tuple[AnnotationChange, ...]
    new_pod: tuple[AnnotationChange, ...]  # what the webhook gives a pod created after it
    missing_networks: tuple[str, ...]  # NADs ("ns/name") the new winner needs that do not exist
    # With oldDefault Remove: what reaches the switched pods by the IPs Kubernetes reports
    # afterwards, and why that Remove cannot be made safe ("" when it can, or no Remove).
    after_remove: str = ""
    remove_problem: str = ""

    @property
    def changes_hands(self) -> bool:
        return self.winner_before != self.winner_after

    @property
    def will_roll(self) -> int:
        """Running pods the controller would patch (now, or on resume for a paused rollout)."""
        return self.changing if self.rollout in (LIVE, PAUSED, HALTED) else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "selected": self.selected,
            "winnerBefore": self.winner_before,
            "winnerAfter": self.winner_after,
            "contenders": list(self.contenders),
            "conflict": self.conflict or None,
            "conflictMessage": self.conflict_message or None,
            "pods": {
                "running": self.running,
                "changing": self.changing,
                "willRoll": self.will_roll,
                "unreadable": self.unreadable,
            },
            "rollout": self.rollout,
            "rolloutBy": self.rollout_by,
            "samplePod": self.sample,
            "sampleDiff": [c.to_json() for c in self.sample_diff],
            "newPod": [c.to_json() for c in self.new_pod],
            "missingNetworks": list(self.missing_networks),
            "afterRemove": self.after_remove or None,
            "removeProblem": self.remove_problem or None,
        }


@dataclass(frozen=True)
class ProfilePlan:
    name: str
    action: str  # CREATE | UPDATE | DELETE
    errors: tuple[str, ...]  # why the profile cannot be applied (the ProfileError texts)
    profile: Profile | None  # as it would be after the change (None: deleted or invalid)
    namespaces: tuple[NamespacePlan, ...]  # every namespace the change matters to, sorted

    @property
    def missing_networks(self) -> tuple[str, ...]:
        return tuple(sorted({n for ns in self.namespaces for n in ns.missing_networks}))

    @property
    def remove_problems(self) -> tuple[str, ...]:
        return tuple(
            f"{ns.namespace}: {ns.remove_problem}" for ns in self.namespaces if ns.remove_problem
        )

    @property
    def safe(self) -> bool:
        """Applying it is safe: it is valid, every network it needs exists, and a Remove of the
        old default can keep the pod IPs Kubernetes reports answering."""
        return not self.errors and not self.missing_networks and not self.remove_problems

    @property
    def existing_pods(self) -> str | None:
        return self.profile.rollout.existing_pods if self.profile else None

    def governed(self) -> tuple[str, ...]:
        return tuple(ns.namespace for ns in self.namespaces if ns.winner_after == self.name)

    def to_json(self) -> dict[str, Any]:
        rollout = self.profile.rollout if self.profile else None
        return {
            "name": self.name,
            "action": self.action,
            "safe": self.safe,
            "errors": list(self.errors),
            "missingNetworks": list(self.missing_networks),
            "removeProblems": list(self.remove_problems),
            "rollout": None
            if rollout is None
            else {
                "existingPods": rollout.existing_pods,
                "maxConcurrent": rollout.max_concurrent,
                "paused": rollout.paused,
                "maxFailures": rollout.max_failures,
            },
            "selectedNamespaces": [ns.namespace for ns in self.namespaces if ns.selected],
            "governedNamespaces": list(self.governed()),
            "pods": {
                "changing": sum(ns.changing for ns in self.namespaces),
                "willRoll": sum(ns.will_roll for ns in self.namespaces),
            },
            "namespaces": [ns.to_json() for ns in self.namespaces],
        }


def plan_apply(
    obj: Mapping[str, Any], current: Snapshot, now: datetime, settings: Settings | None = None
) -> ProfilePlan:
    """What `kubectl apply` of the profile object would do to the cluster `current`."""
    name = _name_of(obj)
    exists = name is not None and (
        any(p.name == name for p in current.profiles) or name in current.invalid_profiles
    )
    action = UPDATE if exists else CREATE
    try:
        profile = profile_from_object(obj)
    except ProfileError as err:
        return ProfilePlan(name or "", action, (str(err),), None, ())
    return _plan(profile.name, profile, action, current, now, settings)


def plan_delete(
    name: str, current: Snapshot, now: datetime, settings: Settings | None = None
) -> ProfilePlan:
    """What deleting the NetworkProfile `name` would do."""
    if not any(p.name == name for p in current.profiles) and name not in current.invalid_profiles:
        return ProfilePlan(name, DELETE, (f'NetworkProfile "{name}" does not exist',), None, ())
    return _plan(name, None, DELETE, current, now, settings)


def _name_of(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) and name else None


def _plan(
    name: str,
    new: Profile | None,
    action: str,
    current: Snapshot,
    now: datetime,
    settings: Settings | None,
) -> ProfilePlan:
    old = next((p for p in current.profiles if p.name == name), None)
    others = [p for p in current.profiles if p.name != name]
    after = replace(
        current,
        profiles=sorted([*others, new] if new else others, key=lambda p: p.name),
        invalid_profiles={k: v for k, v in current.invalid_profiles.items() if k != name},
    )
    before_winners = current.winners()
    after_winners = after.winners()
    plans: dict[str, RolloutPlan] = {}

    def rollout_plan(rollout: str) -> RolloutPlan:
        if rollout not in plans:
            plans[rollout] = plan_rollout(rollout, after, now, settings)
        return plans[rollout]

    rows = []
    for ns, labels in sorted(current.namespaces.items()):
        if ns in current.excluded_namespaces:
            continue
        was = old is not None and old.namespace_selector.matches(labels)
        will = new is not None and new.namespace_selector.matches(labels)
        if not (was or will):
            continue
        winner_before = before_winners.get(ns)
        winner_after = after_winners.get(ns)
        contenders = resolve(labels, after.profiles)
        conflict, message = _conflict(name, resolve(labels, current.profiles), contenders)
        before_name = winner_before.name if winner_before else None
        after_name = winner_after.name if winner_after else None
        # Where another profile governs before and after, this change does nothing to the pods.
        touched = before_name != after_name or name in (before_name, after_name)
        # The rollout that patches the running pods: the new winner's, or the one handing them back.
        by = (after_name or before_name) if touched else None
        pod_plans = _pod_plans(rollout_plan(by), ns) if by else ()
        mode = _mode(rollout_plan(by)) if by else NONE
        changing = [p for p in pod_plans if p.state == PENDING]
        sample = changing[0] if changing else None
        new_pod = apply_profile({}, ns, winner_after) if touched and winner_after else {}
        after_remove, remove_problem = _after_remove(
            winner_after if touched else None, changing, current.nad_plugins
        )
        rows.append(
            NamespacePlan(
                namespace=ns,
                selected=will if new is not None else was,
                winner_before=before_name,
                winner_after=after_name,
                contenders=tuple(p.name for p in contenders.ranked),
                conflict=conflict,
                conflict_message=message,
                running=sum(1 for p in current.pods if p.namespace == ns and p.eligible),
                changing=len(changing),
                unreadable=sum(1 for p in pod_plans if p.state == INVALID),
                rollout=mode,
                rollout_by=by,
                sample=sample.pod.key if sample else None,
                sample_diff=_diff(sample.pod.annotations, sample.changes) if sample else (),
                new_pod=_diff({}, new_pod),
                missing_networks=_missing(ns, winner_after, after)
                if touched and winner_after
                else (),
                after_remove=after_remove,
                remove_problem=remove_problem,
            )
        )
    return ProfilePlan(name, action, (), new, tuple(rows))


def _after_remove(
    profile: Profile | None, changing: Sequence[PodPlan], plugins: Mapping[str, str] | None
) -> tuple[str, str]:
    """(what reaches the pods by their reported IPs after a Remove, why it cannot be made safe)
    for the pods whose default network the rollout changes."""
    if profile is None or profile.rollout.old_default != "Remove" or plugins is None:
        return "", ""
    targets = sorted(
        {
            str(p.changes[DEFAULT_NETWORK_KEY])
            for p in changing
            if p.changes.get(DEFAULT_NETWORK_KEY)
        }
    )
    said, problems = [], []
    for ref in targets:
        plugin = plugins.get(ref)
        if plugin is None:
            continue  # a missing NAD: said so already
        why = carry_problem(plugin, (), ())
        if why:
            problems.append(f"Remove onto {ref} is refused: {why}; the old default would stay")
        else:
            said.append(
                f"after Remove, the pod IPs Kubernetes reports (kubelet probes, Services, "
                f"NetworkPolicies) answer through {ref} ({plugin}) and stay reserved in the old "
                "network's pool until each pod is deleted"
            )
    return "; ".join(said), "; ".join(problems)


def _conflict(name: str, before: Resolution, after: Resolution) -> tuple[str, str]:
    was = len(before.ranked) > 1 and any(p.name == name for p in before.ranked)
    will = len(after.ranked) > 1 and any(p.name == name for p in after.ranked)
    if not will or after.winner is None:
        return (CONFLICT_ENDS if was else CONFLICT_NONE), ""
    winner = after.winner
    if winner.name == name:
        message = "wins over " + ", ".join(f'"{p.name}" ({after.why(p)})' for p in after.losers)
    else:
        own = next(p for p in after.losers if p.name == name)
        message = f'loses to "{winner.name}" ({after.why(own)})'
    return (CONFLICT_REMAINS if was else CONFLICT_CREATES), message


def _pod_plans(plan: RolloutPlan, namespace: str) -> tuple[PodPlan, ...]:
    return tuple(p for p in (*plan.targets, *plan.leaving) if p.pod.namespace == namespace)


def _mode(plan: RolloutPlan) -> str:
    return _BLOCKED_MODE.get(plan.blocked, LIVE)


def _diff(
    annotations: Mapping[str, str], changes: Mapping[str, str | None]
) -> tuple[AnnotationChange, ...]:
    return tuple(
        AnnotationChange(key, annotations.get(key), value) for key, value in sorted(changes.items())
    )


def _missing(namespace: str, profile: Profile, after: Snapshot) -> tuple[str, ...]:
    if after.nads is None:
        return ()
    # What a new pod needs is what every pod of the namespace needs from this profile.
    changes = apply_profile({}, namespace, profile)
    refs = required_networks(Pod(namespace, ""), profile, changes)
    return tuple(sorted({r for r in refs if r not in after.nads}))
