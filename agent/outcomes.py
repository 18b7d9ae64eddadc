"""How the actions of a plan went: what the executor returns and the report is built from (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.plan import Attach, Retire
from netshift.attachments import AttachmentRecord

# A record's extra key: the node conf file its config came from (a NAD without spec.config).
NODE_CONF = "node_conf_file"


@dataclass(frozen=True)
class Attached:
    action: Attach
    record: AttachmentRecord
    error: str = ""  # why the ADD (or its verification) failed; "" when attached
    reason: str = ""  # the failure's reason for the metrics (agent.metrics REASON_*)


@dataclass(frozen=True)
class Detached:
    record: AttachmentRecord
    attempt: int
    retry_in: float
    error: str = ""  # why the DEL failed; "" when released
    rolled_back: bool = False  # a failed ADD cleared away: nothing to tell
    why: str = ""  # the planner's reason (unwanted, replaced, vanished, drained, recreated)


@dataclass(frozen=True)
class Switched:
    network: str
    interface: str
    old: AttachmentRecord | None
    old_default: str  # Keep | Remove
    at: str  # RFC 3339


@dataclass(frozen=True)
class Problem:
    """The wish cannot be carried out (bad annotation, a new default without a gateway)."""

    message: str


@dataclass(frozen=True)
class Retired:
    """An old default removed, its reported addresses carried by the default interface."""

    action: Retire
    record: AttachmentRecord | None  # None: its record was gone
    error: str = ""  # why a step failed ("" when done); the next reconcile finishes it


@dataclass(frozen=True)
class Refused:
    """A Remove that cannot be made safe: the old default stays."""

    interface: str
    network: str
    why: str


Outcome = Attached | Detached | Switched | Problem | Retired | Refused
