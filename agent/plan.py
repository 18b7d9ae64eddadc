"""Decide what to do for one pod: desired networks vs what is attached (pure, no I/O).

The reconciler feeds in the pod's wish (its annotations, parsed) and what is
there (the agent's attachment records, plus entries of `network-status` that
others — Multus, the node simulator — attached at sandbox creation) and gets a
plan: what to detach, what to attach, whether to move the default network.
Detaches come first so that a swap behind one interface name works.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netshift.annotations import Attachment, NetworkRef, NetworkSelection, desired_attachments
from netshift.keys import (
    ATTACHED,
    ATTACHING,
    DEFAULT,
    DETACHING,
    FAILED,
    INCOMING_DEFAULT,
    PREVIOUS_DEFAULT,
    SECONDARY,
)


def network_id(ref: NetworkRef) -> str:
    """How a network is named in network-status: "ns/name", or the bare cluster network name."""
    return f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name


def parse_network_id(text: str) -> NetworkRef:
    if "/" in text:
        ns, name = text.split("/", 1)
        return NetworkRef(ns, name)
    return NetworkRef("", text)


def selection_key(selection: Mapping[str, Any] | NetworkSelection) -> str:
    """What makes two requests for one interface the same attachment (the name aside)."""
    data = selection.to_json() if isinstance(selection, NetworkSelection) else dict(selection)
    data.pop("interface", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Current:
    """One attachment that exists (or failed, or was cut short) on the pod."""

    ref: NetworkRef
    interface: str
    state: str
    role: str = SECONDARY
    auto_named: bool = False
    # "" when unknown (attached by someone else): then only the network is compared.
    key: str = ""
    retry_at: float = 0.0
    drain_until: float | None = None  # previous default to remove at this time


@dataclass
class Plan:
    detach: list[Current] = field(default_factory=list)
    attach: list[Attachment] = field(default_factory=list)
    waiting: list[Current] = field(default_factory=list)  # failed, backing off
    # Default network move: the network, and the interface it gets (existing or new).
    switch_to: NetworkRef | None = None
    switch_interface: str | None = None
    switch_reuses: bool = False  # the target is a previous default still attached
    drained: list[Current] = field(default_factory=list)  # previous defaults to remove now
    retry_in: float | None = None

    def retry(self, seconds: float) -> None:
        self.retry_in = seconds if self.retry_in is None else min(self.retry_in, seconds)


def plan_pod(
    selections: Sequence[NetworkSelection],
    pod_namespace: str,
    current: Sequence[Current],
    desired_default: NetworkRef | None,
    now: float,
) -> Plan:
    """Plan one pod. `desired_default` None means: leave the default network as it is."""
    plan = Plan()
    secondaries = [c for c in current if c.role == SECONDARY]
    others = [c for c in current if c.role != SECONDARY]
    reserved = {"eth0", "lo"} | {c.interface for c in others}
    wanted = desired_attachments(
        selections,
        pod_namespace,
        [(c.ref, c.interface, c.auto_named) for c in secondaries],
        reserved=reserved,
    )
    by_interface = {c.interface: c for c in secondaries}
    for want in wanted:
        have = by_interface.pop(want.interface, None)
        if have is None:
            plan.attach.append(want)
            continue
        same = have.ref == want.ref and (not have.key or have.key == selection_key(want.selection))
        if not same or have.state in (ATTACHING, DETACHING):
            # Another network (or other ips/mac) behind the same name: detach first, then attach.
            plan.detach.append(have)
            plan.attach.append(want)
        elif have.state == FAILED:
            if now >= have.retry_at:
                plan.attach.append(want)
            else:
                plan.waiting.append(have)
                plan.retry(have.retry_at - now)
    plan.detach.extend(by_interface.values())  # attached but no longer wanted

    _plan_default(plan, current, desired_default, wanted, reserved, now)
    return plan


def _plan_default(
    plan: Plan,
    current: Sequence[Current],
    desired: NetworkRef | None,
    wanted: Sequence[Attachment],
    reserved: set[str],
    now: float,
) -> None:
    default = next((c for c in current if c.role == DEFAULT), None)
    previous = [c for c in current if c.role == PREVIOUS_DEFAULT]
    incoming = [c for c in current if c.role == INCOMING_DEFAULT]
    if desired is not None and (default is None or default.ref != desired):
        plan.switch_to = desired
        # An interface of the target network that is already up is reused: after a
        # crash mid-switch, or when switching back to a kept previous default.
        back = next(
            (c for c in incoming + previous if c.ref == desired and c.state == ATTACHED), None
        )
        if back is not None:
            plan.switch_interface, plan.switch_reuses = back.interface, True
        else:
            taken = reserved | {w.interface for w in wanted} | {c.interface for c in current}
            n = 1
            while f"net{n}" in taken:
                n += 1
            plan.switch_interface = f"net{n}"
    for c in incoming:
        if c.interface != plan.switch_interface:
            plan.detach.append(c)  # left over from a switch that is no longer wanted
    for c in previous:
        if plan.switch_reuses and c.interface == plan.switch_interface:
            continue
        if c.drain_until is not None:
            if now >= c.drain_until:
                plan.drained.append(c)
            else:
                plan.retry(c.drain_until - now)
