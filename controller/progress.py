"""A rollout's progress as a NetworkProfile's status reports it: `netshift rollout status`.

Pure: reads back what controller/status.py writes (pod counts and the
Progressing / Complete conditions) and says whether the rollout is done, how,
and how to show it (a bar on a terminal, one line per change elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from controller.rollout import BLOCKED_FAILURES, BLOCKED_IGNORE, BLOCKED_INVALID, BLOCKED_PAUSED
from controller.status import COMPLETE, PODS_FAILED, PROGRESSING, condition_of

# What the rollout is, for someone waiting on it.
OBSERVING: Final = "Observing"  # the controller has not written a status for this generation yet
ROLLING: Final = "Progressing"
PAUSED: Final = "Paused"
DONE: Final = "Complete"
FAILED: Final = "Failed"  # rollout.maxFailures reached, or finished with failed pods
STUCK: Final = "Stuck"  # will not finish as it is: invalid spec, or existingPods Ignore

# Exit codes of `netshift rollout status`.
EXIT_COMPLETE: Final = 0
EXIT_FAILED: Final = 1  # FAILED or STUCK, or the profile does not exist (any more)
EXIT_TIMEOUT: Final = 2


@dataclass(frozen=True)
class Progress:
    name: str
    generation: int
    observed_generation: int
    desired: int = 0
    updated: int = 0
    converged: int = 0
    failed: int = 0
    in_flight: int = 0
    state: str = OBSERVING
    reason: str = ""
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, STUCK)

    @property
    def exit_code(self) -> int | None:
        """The exit code when finished, else None."""
        if self.state == DONE:
            return EXIT_COMPLETE
        if self.state in (FAILED, STUCK):
            return EXIT_FAILED
        return None


def _int(raw: object) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else 0


def read_progress(obj: Mapping[str, Any]) -> Progress:
    """The progress of the rollout of one NetworkProfile object (as the API server returns it)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    pods = status.get("pods") or {}
    base = Progress(
        name=str(meta.get("name", "")),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        desired=_int(pods.get("desired")),
        updated=_int(pods.get("updated")),
        converged=_int(pods.get("converged")),
        failed=_int(pods.get("failed")),
        in_flight=_int(pods.get("inFlight")),
    )
    if not status or base.observed_generation < base.generation:
        return _with(
            base,
            OBSERVING,
            "",
            f"waiting for the controller to observe generation {base.generation}",
        )
    state, reason, message = classify(
        condition_of(status, PROGRESSING), condition_of(status, COMPLETE)
    )
    return _with(base, state, reason, message)


def classify(progressing: Mapping[str, Any], complete: Mapping[str, Any]) -> tuple[str, str, str]:
    """(state, reason, message) of a rollout from its Progressing and Complete conditions.

    One reading for `netshift rollout status` (from the status it fetched) and for the
    controller's rollout_state metric (from the conditions it is about to write), so
    that an alert and the command never disagree about a rollout.
    """
    reason = str(progressing.get("reason", ""))
    if complete.get("status") == "True":
        return DONE, str(complete.get("reason", "")), str(complete.get("message", ""))
    if reason == BLOCKED_FAILURES:
        return FAILED, reason, str(progressing.get("message", ""))
    if complete.get("reason") == PODS_FAILED:
        return FAILED, PODS_FAILED, str(complete.get("message", ""))
    if reason in (BLOCKED_INVALID, BLOCKED_IGNORE):
        return STUCK, reason, str(progressing.get("message", ""))
    if reason == BLOCKED_PAUSED:
        return PAUSED, reason, str(progressing.get("message", ""))
    return ROLLING, reason, str(progressing.get("message", ""))


def _with(base: Progress, state: str, reason: str, message: str) -> Progress:
    return replace(base, state=state, reason=reason, message=message)


def counts(p: Progress) -> str:
    return (
        f"{p.converged}/{p.desired} converged, {p.failed} failed, {p.in_flight} in flight, "
        f"{p.updated} updated"
    )


def progress_line(p: Progress) -> str:
    """One line: what a log or a pipe gets, once per change."""
    text = f"NetworkProfile {p.name}: {p.state}"
    if p.state != OBSERVING:
        text += f": {counts(p)}"
    if p.reason:
        text += f" ({p.reason})"
    return text


def progress_bar(p: Progress, width: int = 30) -> str:
    """A terminal bar: converged #, failed x, in flight >, the rest ."""
    total = max(p.desired, 1)

    def cells(n: int) -> int:
        return min(width, round(width * n / total))

    done = cells(p.converged)
    failed = min(width - done, cells(p.failed))
    flying = min(width - done - failed, cells(p.in_flight))
    if p.desired == 0 and p.state == DONE:
        done = width
    bar = "#" * done + "x" * failed + ">" * flying
    bar += "." * (width - len(bar))
    text = (
        f"[{bar}] {p.converged}/{p.desired} converged  {p.failed} failed  {p.in_flight} in flight"
    )
    return text + f"  {p.state}" + (f" ({p.reason})" if p.reason else "")


def final_message(p: Progress) -> str:
    if p.state == DONE:
        return f'NetworkProfile "{p.name}" rolled out: {p.message or counts(p)}'
    return f'NetworkProfile "{p.name}" rollout {p.state.lower()}: {p.message or counts(p)}'
