"""NetworkProfile.status and the profile's Events, computed from a rollout plan.

Pure. The status is rebuilt from the plan on every reconcile; the only thing
carried over from the previous status is each condition's
lastTransitionTime, kept as long as the condition's status does not change,
so that writing the same status again is a no-op and a restarted controller
writes nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from controller.rollout import (
    BLOCKED_FAILURES,
    BLOCKED_IGNORE,
    BLOCKED_INVALID,
    BLOCKED_PAUSED,
    INVALID,
    RolloutPlan,
)
from netshift.keys import FAILED

PROGRESSING: Final = "Progressing"
COMPLETE: Final = "Complete"
CONFLICT: Final = "Conflict"

# Progressing reasons beyond the blocking ones of controller.rollout.
ROLLING_OUT: Final = "RollingOut"
FINISHED: Final = "RolloutFinished"
MISSING_NETWORKS: Final = "MissingNetworks"
# Complete reasons.
ALL_CONVERGED: Final = "AllPodsConverged"
PODS_FAILED: Final = "PodsFailed"
NOT_CONVERGED: Final = "PodsNotConverged"
# RemoveSafe (only for a profile with rollout.oldDefault Remove) and its reasons.
REMOVE_SAFE: Final = "RemoveSafe"
POD_IPS_CARRIED: Final = "PodIPsCarried"
REMOVE_REFUSED: Final = "RemoveRefused"
# Conflict reasons.
OTHER_PROFILE_WINS: Final = "NamespaceGovernedByOtherProfile"
NO_CONFLICT: Final = "NoConflict"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str


@dataclass(frozen=True)
class ProfileEvent:
    reason: str
    message: str
    type: str = "Normal"


def _pods(n: int) -> str:
    return f"{n} pod" if n == 1 else f"{n} pods"


def progress_summary(plan: RolloutPlan) -> str:
    c = plan.counts
    text = (
        f"{c.updated} of {_pods(c.desired)} updated, {c.converged} converged, "
        f"{c.failed} failed, {c.in_flight} in flight (max {plan.max_concurrent})"
    )
    if c.leaving:
        text += f", {_pods(c.leaving)} to hand back"
    return text


def _missing(plan: RolloutPlan) -> str:
    names = sorted({n for t in plan.targets for n in t.missing_networks})
    return (
        f"{_pods(plan.counts.missing)} wait for NetworkAttachmentDefinitions that do not exist: "
        + ", ".join(names)
    )


def progressing(plan: RolloutPlan) -> Condition:
    c = plan.counts
    summary = progress_summary(plan)
    if plan.blocked == BLOCKED_INVALID:
        return Condition(PROGRESSING, "False", BLOCKED_INVALID, plan.invalid or "invalid spec")
    work_left = c.pending + c.leaving > 0
    if plan.blocked == BLOCKED_IGNORE and work_left:
        return Condition(
            PROGRESSING,
            "False",
            BLOCKED_IGNORE,
            f"rollout.existingPods is Ignore: {_pods(c.pending)} keep their networks until "
            f"they are recreated; {summary}",
        )
    if plan.blocked == BLOCKED_PAUSED and work_left:
        return Condition(PROGRESSING, "False", BLOCKED_PAUSED, f"rollout.paused is true; {summary}")
    if plan.blocked == BLOCKED_FAILURES and work_left:
        limit = plan.profile.rollout.max_failures if plan.profile else 0
        return Condition(
            PROGRESSING,
            "False",
            BLOCKED_FAILURES,
            f"{c.failed} failed pods reach rollout.maxFailures ({limit}); no more pods start "
            f"until the failures are fixed or the limit is raised; {summary}",
        )
    if c.in_flight or plan.starts or c.waiting:
        return Condition(PROGRESSING, "True", ROLLING_OUT, summary)
    if c.missing and c.missing == c.pending and not c.leaving:
        return Condition(PROGRESSING, "False", MISSING_NETWORKS, f"{_missing(plan)}; {summary}")
    if work_left:
        return Condition(PROGRESSING, "True", ROLLING_OUT, summary)
    return Condition(PROGRESSING, "False", FINISHED, summary)


def complete(plan: RolloutPlan) -> Condition:
    c = plan.counts
    if c.converged == c.desired and not c.in_flight and not c.leaving:
        message = (
            f"all {_pods(c.desired)} converged"
            if c.desired
            else "no running pods in the governed namespaces"
        )
        return Condition(COMPLETE, "True", ALL_CONVERGED, message)
    if c.failed and c.pending == c.waiting == c.in_flight == c.leaving == 0:
        failed = [t for t in plan.targets if t.state in (FAILED, INVALID)]
        shown = ", ".join(f"{t.pod.key} ({t.message})" for t in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        return Condition(COMPLETE, "False", PODS_FAILED, f"failed: {shown}{more}")
    return Condition(COMPLETE, "False", NOT_CONVERGED, progress_summary(plan))


def conflict(plan: RolloutPlan) -> Condition:
    if not plan.conflicts:
        return Condition(
            CONFLICT, "False", NO_CONFLICT, "no other profile governs a namespace this one selects"
        )
    parts = [
        f'namespace {c.namespace} is governed by NetworkProfile "{c.winner}" ({c.why})'
        for c in plan.conflicts
    ]
    return Condition(CONFLICT, "True", OTHER_PROFILE_WINS, "; ".join(parts))


def remove_safe(plan: RolloutPlan) -> Condition | None:
    """Whether the agents can retire the old defaults (None: the profile keeps them)."""
    if plan.profile is None or plan.profile.rollout.old_default != "Remove":
        return None
    if plan.remove_problems:
        return Condition(
            REMOVE_SAFE,
            "False",
            REMOVE_REFUSED,
            "the old default stays (as with Keep) on pods switched onto "
            + "; ".join(plan.remove_problems),
        )
    return Condition(
        REMOVE_SAFE,
        "True",
        POD_IPS_CARRIED,
        "the pod IPs Kubernetes reports keep answering through the new default network and "
        "stay reserved in the old one until each pod is deleted",
    )


def conditions(plan: RolloutPlan) -> list[Condition]:
    remove = remove_safe(plan)
    return [progressing(plan), complete(plan), conflict(plan), *([remove] if remove else [])]


def _condition_map(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for cond in (status or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and isinstance(cond.get("type"), str):
            found[cond["type"]] = cond
    return found


def build_status(
    plan: RolloutPlan, generation: int, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The whole status subresource; `now` stamps conditions whose status changed."""
    before = _condition_map(previous)
    c = plan.counts
    conds = []
    for cond in conditions(plan):
        old = before.get(cond.type)
        since = now
        if old is not None and old.get("status") == cond.status and old.get("lastTransitionTime"):
            since = str(old["lastTransitionTime"])
        conds.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return {
        "observedGeneration": generation,
        "selectedNamespaces": list(plan.namespaces),
        "namespaceCount": len(plan.namespaces),
        "pods": {
            "desired": c.desired,
            "updated": c.updated,
            "converged": c.converged,
            "failed": c.failed,
            "inFlight": c.in_flight,
        },
        "conditions": conds,
    }


def condition_of(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    return _condition_map(status).get(type_, {})


def transition_events(
    plan: RolloutPlan,
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    started: int = 0,
) -> list[ProfileEvent]:
    """Events that the change from `previous` to `current` status is worth.

    `plan` is the plan the reconcile acted on and `started` how many pods it
    patched.
    Derived from the stored status, not from memory: a restarted controller
    whose first status equals the stored one emits nothing.
    """
    events: list[ProfileEvent] = []
    was = {t: condition_of(previous, t) for t in (PROGRESSING, COMPLETE, CONFLICT)}
    now = {t: condition_of(current, t) for t in (PROGRESSING, COMPLETE, CONFLICT)}
    if started and was[PROGRESSING].get("status") != "True":
        profile = plan.profile
        generation = profile.generation if profile else 0
        events.append(
            ProfileEvent(
                "RolloutStarted",
                f"rolling generation {generation} onto {_pods(plan.counts.pending)} in "
                f"{len(plan.namespaces)} namespaces, at most {plan.max_concurrent} at a time",
            )
        )
    if (
        now[PROGRESSING].get("reason") == BLOCKED_FAILURES
        and was[PROGRESSING].get("reason") != BLOCKED_FAILURES
    ):
        events.append(
            ProfileEvent("RolloutHalted", str(now[PROGRESSING].get("message", "")), "Warning")
        )
    if (
        now[COMPLETE].get("status") == "True"
        and was[COMPLETE].get("status") != "True"
        and plan.counts.desired
    ):
        events.append(ProfileEvent("RolloutComplete", str(now[COMPLETE].get("message", ""))))
    if now[CONFLICT].get("status") == "True" and (
        was[CONFLICT].get("status") != "True"
        or was[CONFLICT].get("message") != now[CONFLICT].get("message")
    ):
        events.append(ProfileEvent("Conflict", str(now[CONFLICT].get("message", "")), "Warning"))
    return events


def failed_pods(plan: RolloutPlan) -> Sequence[tuple[str, str, str]]:
    """(pod key, uid, message) of every failed target pod."""
    return [(t.pod.key, t.pod.uid, t.message) for t in plan.targets if t.state in (FAILED, INVALID)]
