"""netshift's own per-pod annotations: the agent's status report and the switch policy.

`netshift.io/status` is written by the agent on the pod's node (as an annotation
patch) and read by the controller and by people (`kubectl get pod -o yaml`).
Its `observed` field is the hash of the desired annotations the agent last
acted on, so a reader knows whether the report is about the current wish.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from netshift.keys import (
    CONVERGED,
    DEFAULT_NETWORK_KEY,
    DEGRADED,
    NETWORKS_KEY,
    ROLLOUT_DESIRED_KEY,
    STATUS_KEY,
    SWITCH_POLICY_KEY,
)


def desired_hash(annotations: Mapping[str, str]) -> str:
    """A short hash of everything that states what networks a pod wants."""
    wish = [annotations.get(k, "") for k in (NETWORKS_KEY, DEFAULT_NETWORK_KEY, SWITCH_POLICY_KEY)]
    return hashlib.sha256(json.dumps(wish).encode()).hexdigest()[:16]


def rollout_driven(annotations: Mapping[str, str]) -> bool:
    """Whether the pod's current wish is exactly what a controller rollout wrote.

    Not when someone edited the wish since (`kubectl annotate`): its hash then differs
    from the one the rollout recorded with its patch.
    """
    mark = annotations.get(ROLLOUT_DESIRED_KEY)
    return bool(mark) and mark == desired_hash(annotations)


@dataclass(frozen=True)
class SwitchPolicy:
    old_default: str = "Keep"
    drain_seconds: float = 0.0


def parse_switch_policy(annotations: Mapping[str, str]) -> SwitchPolicy:
    """Read the switch policy; a malformed value falls back to the safe choice, Keep."""
    raw = annotations.get(SWITCH_POLICY_KEY)
    if not raw:
        return SwitchPolicy()
    try:
        obj = json.loads(raw)
        old = obj.get("oldDefault", "Keep")
        drain = float(obj.get("drainSeconds", 0))
    except (ValueError, AttributeError, TypeError):
        return SwitchPolicy()
    if old not in ("Keep", "Remove") or drain < 0:
        return SwitchPolicy()
    return SwitchPolicy(old, drain)


def format_switch_policy(policy: SwitchPolicy) -> str:
    return json.dumps(
        {"oldDefault": policy.old_default, "drainSeconds": policy.drain_seconds},
        sort_keys=True,
        separators=(",", ":"),
    )


@dataclass
class AttachmentStatus:
    network: str
    interface: str
    state: str
    message: str = ""
    ips: list[str] = field(default_factory=list)
    default: bool = False
    since: str = ""


@dataclass
class PodNetStatus:
    observed: str
    phase: str
    attachments: list[AttachmentStatus] = field(default_factory=list)
    default_network: str = ""
    default_interface: str = ""
    switched_at: str = ""
    message: str = ""
    updated_at: str = ""
    # Addresses of removed old defaults that Kubernetes still reports as the pod's IPs: they
    # answer through the default interface and stay reserved until the pod is deleted.
    retained: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def parse_status(annotations: Mapping[str, str]) -> PodNetStatus | None:
    raw = annotations.get(STATUS_KEY)
    if not raw:
        return None
    try:
        obj: dict[str, Any] = json.loads(raw)
        atts = [AttachmentStatus(**a) for a in obj.pop("attachments", [])]
        known = set(PodNetStatus.__dataclass_fields__) - {"attachments"}
        return PodNetStatus(attachments=atts, **{k: v for k, v in obj.items() if k in known})
    except (ValueError, TypeError):
        return None


def is_settled(annotations: Mapping[str, str]) -> tuple[bool, bool]:
    """(settled, failed): the agent has acted on the current wish and finished, well or not."""
    wish = tuple(
        annotations.get(k, "") for k in (NETWORKS_KEY, DEFAULT_NETWORK_KEY, SWITCH_POLICY_KEY)
    )
    return _settled(annotations.get(STATUS_KEY), wish)


@functools.lru_cache(maxsize=8192)
def _settled(raw: str | None, wish: tuple[str, ...]) -> tuple[bool, bool]:
    # Remembered by value: a rollout asks this of every pod on every pod event, and
    # the answer is a pure function of these strings (an immutable pair).
    annotations = dict(
        zip((NETWORKS_KEY, DEFAULT_NETWORK_KEY, SWITCH_POLICY_KEY), wish, strict=True)
    )
    if raw is not None:
        annotations[STATUS_KEY] = raw
    status = parse_status(annotations)
    if status is None or status.observed != desired_hash(annotations):
        return False, False
    if status.phase == CONVERGED:
        return True, False
    if status.phase == DEGRADED:
        return True, True
    return False, False
