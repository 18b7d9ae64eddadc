"""What the agent tells about a pod, built from what it saw and what it did (pure).

`network-status` and `netshift.io/status` are computed from the records after
the plan was carried out and from its outcomes; Events are one per outcome
that a human should hear about. A default switch that a controller rollout
drove (`podstatus.rollout_driven`) gets no Normal Event on the pod: the
controller tells of the rollout on its NetworkProfile, once per rollout, not
once per pod; failures are Warnings on the pod whoever asked. Writing them is
the reconciler's thin shell.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.outcomes import (
    NODE_CONF,
    Attached,
    Detached,
    Outcome,
    Problem,
    Refused,
    Retired,
    Switched,
)
from agent.plan import network_id
from netshift import annotations as ann
from netshift import keys, podstatus
from netshift.attachments import AttachmentRecord
from netshift.cni.results import result_ips
from netshift.cni.status import network_status_entry
from netshift.keys import (
    ATTACHED,
    ATTACHING,
    DEFAULT,
    DETACHING,
    INCOMING_DEFAULT,
    RETIRED_DEFAULT,
)


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: str = "Normal"


@dataclass(frozen=True)
class Report:
    changes: Mapping[str, str | None]  # annotations to patch; empty: nothing to write
    events: tuple[Event, ...]  # recorded after the patch, off its critical path
    problem: str  # the wish cannot be carried out: an InvalidNetworks Event after the patch
    changed: bool  # something was attached, detached or switched


def build_report(
    annotations: Mapping[str, str],
    network_status: Sequence[ann.NetworkStatusEntry],
    records: Sequence[AttachmentRecord],
    outcomes: Sequence[Outcome],
    forget: Collection[str],
    now: str,
) -> Report:
    problem = next((o.message for o in outcomes if isinstance(o, Problem)), "")
    switched_at = next((o.at for o in outcomes if isinstance(o, Switched)), "")
    gone = set(forget) | {
        o.record.interface for o in outcomes if isinstance(o, Detached) and not o.error
    }
    changes: dict[str, str | None] = {}
    status = ann.format_network_status(merge_network_status(network_status, records, gone))
    if status != annotations.get(keys.NETWORK_STATUS_KEY):
        changes[keys.NETWORK_STATUS_KEY] = status
    pns = pod_status(annotations, records, problem, switched_at)
    old = podstatus.parse_status(annotations)
    if old is None or _comparable(old) != _comparable(pns):
        changes[keys.STATUS_KEY] = replace(pns, updated_at=now).to_json()
    return Report(
        changes=changes,
        events=tuple(
            e for o in outcomes for e in events_of(o, podstatus.rollout_driven(annotations))
        ),
        problem=problem,
        changed=any(not isinstance(o, Problem) for o in outcomes),
    )


def events_of(o: Outcome, rollout: bool = False) -> list[Event]:
    """The Events an outcome is worth; `rollout`: the pod's wish is a rollout's."""
    if isinstance(o, Attached):
        return [_attach_event(o)] if o.error or o.action.role != INCOMING_DEFAULT else []
    if isinstance(o, Detached):
        rec = o.record
        if o.rolled_back:
            return []
        if o.error:
            retry = f"(attempt {o.attempt}, retry in {o.retry_in:.0f}s)"
            message = f"{rec.network}@{rec.interface}: {o.error} {retry}"
            return [Event("DetachFailed", message, "Warning")]
        if o.why == "recreated":
            message = f"{rec.network} from {rec.interface} of the replaced sandbox {rec.container_id[:13]}"
            return [Event("Detached", message)]
        return [Event("Detached", f"{rec.network} from {rec.interface}")]
    if isinstance(o, Switched):
        if rollout:
            return []  # the rollout's own Events, on its profile, tell of it
        message = f"default network is now {o.network} on {o.interface}"
        if o.old is not None:
            message += f" (was {o.old.network} on {o.old.interface}; {o.old_default})"
        return [Event("DefaultNetworkSwitched", message)]
    if isinstance(o, Retired | Refused):
        return _removal_events(o)
    return []


def _removal_events(o: Retired | Refused) -> list[Event]:
    if isinstance(o, Refused):
        message = (
            f"oldDefault Remove not done: {o.network} stays on {o.interface} (as with Keep), "
            f"because {o.why}"
        )
        return [Event("RemoveRefused", message, "Warning")]
    r = o.action
    addresses = ", ".join(r.addresses)
    if o.error:
        message = f"removing {r.current.interface}: {o.error}; tried again"
        return [Event("RemoveIncomplete", message, "Warning")]
    message = (
        f"{network_id(r.current.ref)} removed from {r.current.interface}; {addresses} (the pod "
        f"IP Kubernetes reports) answers through {r.onto} and stays reserved until the pod goes"
    )
    return [Event("OldDefaultRetired", message)]


def _attach_event(o: Attached) -> Event:
    want, a = o.action.want, o.action
    error = f"{o.error} (attempt {a.attempt}, retry in {a.retry_in:.0f}s)"
    if a.role == INCOMING_DEFAULT:
        message = (
            f"new default {network_id(want.ref)}@{want.interface}: {error}; the old default stays"
        )
        return Event("DefaultSwitchFailed", message, "Warning")
    if o.error:
        return Event("AttachFailed", f"{want.ref}@{want.interface}: {error}", "Warning")
    ips = ", ".join(result_ips(o.record.result or {}, want.interface)) or "no address"
    node_file = o.record.extra.get(NODE_CONF)
    source = f" from the node's conf file {node_file}" if node_file else ""
    return Event("Attached", f"{want.ref} as {want.interface} ({ips}){source}")


def failed(r: AttachmentRecord) -> bool:
    """An ADD that failed, or a DEL that failed (the attachment is still half there)."""
    return r.state == keys.FAILED or (r.state == DETACHING and bool(r.message))


def pod_status(
    annotations: Mapping[str, str],
    records: Sequence[AttachmentRecord],
    problem: str,
    switched_at: str,
) -> podstatus.PodNetStatus:
    old = podstatus.parse_status(annotations)
    retired = [r for r in records if r.role == RETIRED_DEFAULT]
    records = [r for r in records if r.role != RETIRED_DEFAULT]
    atts = [
        podstatus.AttachmentStatus(
            network=r.network,
            interface=r.interface,
            state=r.state if r.state != ATTACHING else keys.PENDING,
            message=r.message,
            ips=result_ips(r.result or {}, r.interface),
            default=r.role == DEFAULT,
            since=_rfc3339(r.updated_at),
        )
        for r in sorted(records, key=lambda r: r.interface)
    ]
    default = next((r for r in records if r.role == DEFAULT), None)
    phase, message = _phase(records, problem)
    return podstatus.PodNetStatus(
        observed=podstatus.desired_hash(annotations),
        phase=phase,
        attachments=atts,
        default_network=default.network if default else "",
        default_interface=default.interface if default else "",
        switched_at=switched_at
        or (str(default.extra.get("switched_at", "")) if default else "")
        or (old.switched_at if old else ""),
        message=message,
        retained=sorted(ip for r in retired for ip in result_ips(r.result or {}, r.interface)),
    )


def _phase(records: Sequence[AttachmentRecord], problem: str) -> tuple[str, str]:
    broken = [r for r in records if failed(r)]
    if problem:
        return keys.DEGRADED, problem
    if broken:
        return keys.DEGRADED, "; ".join(f"{r.network}@{r.interface}: {r.message}" for r in broken)
    if any(r.state in (ATTACHING, DETACHING) for r in records):
        return keys.PROGRESSING, ""
    return keys.CONVERGED, ""


def _rfc3339(epoch: float) -> str:
    """When a record last changed; "" for records written before times were kept."""
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def merge_network_status(
    existing: Sequence[ann.NetworkStatusEntry],
    records: Sequence[AttachmentRecord],
    gone: Collection[str] = (),
) -> list[ann.NetworkStatusEntry]:
    """Keep others' entries; the agent's records speak for the interfaces it holds.

    Entries of interfaces that are `gone` (detached) are dropped.
    """
    held = {r.interface: r for r in records}
    out: list[ann.NetworkStatusEntry] = []
    for entry in existing:
        rec = held.get(entry.interface or "")
        if rec is None and (entry.interface or "") not in gone:
            out.append(entry)
    for rec in sorted(records, key=lambda r: (r.role != DEFAULT, r.interface)):
        if rec.state != ATTACHED or rec.role == RETIRED_DEFAULT:
            continue
        prior = next((e for e in existing if e.interface == rec.interface), None)
        out.append(
            network_status_entry(rec.network, rec.interface, rec.result, rec.role == DEFAULT, prior)
        )
    return out


def _comparable(s: podstatus.PodNetStatus) -> str:
    return replace(s, updated_at="").to_json()
