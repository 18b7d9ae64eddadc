"""Decide what to do for one pod: desired networks vs what is there (pure, no I/O).

First the pod's lifecycle (`plan_lifecycle`): a pod that is gone or finished,
or terminating with its netns gone, is released (`plan_release`: DEL of
everything the agent holds for it, and when to try again what could not be
released, `after_release`); a pod that is terminating with its netns, not
running yet, or on the host network is left as it is; a running pod is
converged.

To converge, the reconciler observes the pod (its annotations), the agent's
attachment records, the pod's `network-status` and the links in its netns, and
gets a `Plan` of typed actions back (`plan_pod`): adopt what others attached at
creation, release what vanished, detach, attach, move the default network,
drain an old default. Every decision is made here, retries included: which
attempt an action is, how long to back off when it fails, what a failed DEL
leaves, and when to look at the pod again. Detaches come first so that a swap
behind one interface name works.

When a NAD is added, changed or deleted, `pods_naming` says which pods that
concerns (they are reconciled at once), and `plan_pod` tries a failed
attachment of a changed NAD again without waiting for its backoff.

A recreated sandbox (a new sandbox id and netns for the same pod, e.g. after the
runtime restarted it) is noticed on the records: what the agent held in the old
sandbox is released (DEL with its recorded config and container id, in its old
netns if that still exists), and the view is rebuilt from the new sandbox as at
creation: what the runtime (Multus) attached there and network-status names is
adopted, what only the agent had is plugged again.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from netshift import keys
from netshift.annotations import (
    AnnotationError,
    Attachment,
    NetworkRef,
    NetworkSelection,
    NetworkStatusEntry,
    desired_attachments,
    parse_default_network,
    parse_networks,
)
from netshift.cni.results import result_default_routes, result_gateways, result_routes
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
from netshift.pod import Pod
from netshift.podstatus import SwitchPolicy, parse_switch_policy

MAX_BACKOFF = 300.0
SOURCE_TABLE_BASE = 1000  # policy-routing tables for old defaults: 1000, 1001, ...
FAILED_RECHECK = 0.5  # a failed attachment whose retry is due is looked at this soon at least
DRAIN_RECHECK = 0.1
# A network-status entry whose addresses are not on its live interface is another sandbox's
# (netshift's own, or the runtime's not yet rewritten): its writer gets this long to rewrite
# it after a sandbox appeared; then the interface is adopted by its name alone.
SETTLE_SECONDS = 10.0
UNSETTLED_RECHECK = 1.0
FINISHED = ("Succeeded", "Failed")
# What a released pod still holds (its DEL failed) is tried again this often, and at every
# resync: its address is never forgotten.
RELEASE_RETRY = 10.0
TERMINATING_RECHECK = 10.0  # a terminating pod that still has its netns is looked at this often
NETNS_RETRY = 5.0  # the resolver could not say where the pod's netns is
SANDBOX_RECHECK = 1.0  # a running pod whose sandbox is not there (yet, or any more)
_AUTO_NAME = re.compile(r"net[0-9]+")


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
class Retry:
    """How long a failed attachment (ADD or DEL) waits before its next attempt: `base`
    seconds after the first, doubling after each one, at most `cap`. The agent's
    `--retry-base-seconds` and `--retry-max-seconds`."""

    base: float = 1.0
    cap: float = MAX_BACKOFF

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(
                f"retry base {self.base}s and maximum {self.cap}s: "
                "the base must be above 0 and at most the maximum"
            )

    def after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        n = max(attempt - 1, 0)
        # 2**n overflows a float long after the cap is reached.
        return self.cap if n >= 64 else float(min(self.base * 2**n, self.cap))


DEFAULT_RETRY = Retry()


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt`: 1, 2, 4, ... at most MAX_BACKOFF."""
    return DEFAULT_RETRY.after(attempt)


# -- what the planner is given -----------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """One attachment the agent holds on the pod (attached, failed, or cut short)."""

    ref: NetworkRef
    interface: str
    state: str
    role: str = SECONDARY
    auto_named: bool = False
    # "" when unknown (attached by someone else): then only the network is compared.
    key: str = ""
    attempts: int = 0
    retry_at: float = 0.0
    message: str = ""
    drain_until: float | None = None  # previous default to remove at this time
    sandbox: str = ""  # the sandbox id it was attached in ("" unknown)
    netns: str = ""  # the netns path it was attached in ("" unknown)
    adopted: bool = False  # attached by someone else and taken over

    @property
    def failed(self) -> bool:
        """An ADD that failed, or a DEL that failed (the attachment is still half there)."""
        return self.state == FAILED or (self.state == DETACHING and bool(self.message))


@dataclass(frozen=True)
class EarlierSwitch:
    """A default-route switch whose source routing is still in the pod."""

    old_ifname: str
    table: int
    gateways: tuple[str, ...] = ()  # of the default routes `old_ifname` had then


@dataclass(frozen=True)
class Wish:
    """What the pod asks for: its annotations, read in its namespace."""

    namespace: str
    annotations: Mapping[str, str]
    # The cluster's own network, the default when the pod names none; None: unknown here.
    cluster_network: str | None = None


@dataclass(frozen=True)
class Seen:
    """What is there: the agent's records, the pod's network-status, the links in its netns."""

    current: Sequence[Current]
    network_status: Sequence[NetworkStatusEntry] = ()
    links: Collection[str] = ()
    switches: Sequence[EarlierSwitch] = ()
    sandbox: str = ""  # the pod's sandbox now: its id ("" unknown) ...
    netns: str = ""  # ... and its netns path
    # Recorded netns paths that name the same namespace as `netns` (another resolver's path
    # for it, e.g. /proc/<pid>/ns/net for /var/run/netns/cni-...).
    netns_aliases: Collection[str] = ()
    # The live addresses (no prefix) of each interface; None: not known, entries are not checked.
    addresses: Mapping[str, Collection[str]] | None = None
    # When the agent first saw this sandbox; None: now (it is new); 0: long ago (unknown).
    sandbox_since: float | None = 0.0


def same_sandbox(sandbox: str, netns: str, now_sandbox: str, now_netns: Collection[str]) -> bool:
    """Whether an attachment made in (sandbox, netns) is in the sandbox now (its id, the paths
    of its namespace).

    Either the id or the namespace is enough: records written before sandbox ids
    were known name the pod UID with the same namespace. Unknown on either side: the same.
    """
    if not now_sandbox or not (sandbox or netns):
        return True
    return sandbox == now_sandbox or (bool(netns) and netns in now_netns)


# -- what the planner decides ------------------------------------------------------------


@dataclass(frozen=True)
class Adopt:
    """Record an interface that another writer (Multus, the runtime) attached at creation."""

    network: str
    interface: str
    default: bool
    auto_named: bool


@dataclass(frozen=True)
class Detach:
    """CNI DEL with the recorded config, for `why`: unwanted, replaced, vanished, drained,
    recreated (its sandbox was replaced) or released (the pod is gone)."""

    current: Current
    why: str
    attempt: int
    retry_in: float  # backoff if this DEL fails
    # A failed ADD, rolled back already: the DEL only sweeps leftovers, and the record goes
    # even if it fails (nothing is reserved; its plugin may not even exist, and the record
    # would hold the pod forever). Any other record stays until its DEL succeeds.
    best_effort: bool = False


@dataclass(frozen=True)
class Attach:
    """CNI ADD. An incoming default is attached without the route guard's default route."""

    want: Attachment
    role: str
    attempt: int
    retry_in: float  # backoff if this ADD fails


@dataclass(frozen=True)
class Switch:
    """Move the default route to `interface`, make-before-break."""

    target: NetworkRef
    interface: str
    attach: Attach | None  # None: the target is already attached (a kept old default)
    old: Current | None  # the default now, kept (Keep) or drained (Remove) afterwards
    table: int  # the source-routing table for the old default's addresses
    # A reused interface whose result has no default route (an adopted one: its live view
    # lists none) gets the default route it had before, of each family. Empty for a new ADD:
    # then the result alone says (switch_routes).
    fallback_gateways: tuple[str, ...]
    policy: SwitchPolicy
    drain_until: float | None  # when the old default is to be removed (Remove)


@dataclass
class Plan:
    problem: str = ""  # the wish cannot be read: nothing but bookkeeping is done
    # Held in a sandbox that was replaced: DEL'd first (before anything takes their names).
    release: list[Detach] = field(default_factory=list)
    recreated: bool = False  # the sandbox was replaced: the pod's switch records are void
    rebind: list[str] = field(default_factory=list)  # adopted records to take the sandbox's id
    # Live interfaces whose network-status entry names other addresses: the view waits for the
    # runtime's network-status (nothing is attached or switched meanwhile).
    unsettled: list[str] = field(default_factory=list)
    adopt: list[Adopt] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)  # stale network-status entries
    detach: list[Detach] = field(default_factory=list)
    attach: list[Attach] = field(default_factory=list)
    switch: Switch | None = None
    drain: list[Detach] = field(default_factory=list)  # previous defaults to remove now
    waiting: list[Current] = field(default_factory=list)  # failed, backing off
    retry_in: float | None = None

    def retry(self, seconds: float) -> None:
        self.retry_in = seconds if self.retry_in is None else min(self.retry_in, seconds)


# -- a pod's lifecycle: converge, keep, or release ---------------------------------------------


class Netns(Enum):
    """What the reconciler found of the pod's network namespace."""

    UNKNOWN = "not looked up"  # `needs_netns` said the decision does not depend on it
    FOUND = "found"
    ABSENT = "absent"  # no sandbox: not started yet, torn down, or being replaced
    UNREADABLE = "unreadable"  # the resolver failed (the reconciler logs why)


class Step(Enum):
    CONVERGE = "converge"  # make the pod's interfaces match its annotations (`plan_pod`)
    KEEP = "keep"  # leave everything as it is
    RELEASE = "release"  # DEL everything the agent holds for it (`plan_release`)


@dataclass(frozen=True)
class Lifecycle:
    step: Step
    why: str
    requeue_after: float | None = None  # KEEP: when to look again (None: at the next event)


def needs_netns(pod: Pod | None) -> bool:
    """Whether `plan_lifecycle` decides on the pod's netns; else it is not looked up."""
    if pod is None or pod.phase in FINISHED:
        return False
    return pod.terminating or (pod.phase == "Running" and not pod.host_network)


def plan_lifecycle(pod: Pod | None, netns: Netns) -> Lifecycle:
    """What to do with a pod of this node, from its object (None: gone) and its netns."""
    if pod is None:
        return Lifecycle(Step.RELEASE, "gone")
    if pod.phase in FINISHED:
        return Lifecycle(Step.RELEASE, f"phase {pod.phase}")
    if pod.terminating:
        if netns is Netns.ABSENT:
            return Lifecycle(Step.RELEASE, "terminating, its netns gone")
        # Graceful shutdown: the pod keeps every network until its sandbox is gone; the
        # runtime's teardown (or the pod's final deletion) brings it back here too.
        return Lifecycle(Step.KEEP, "terminating, its netns there or unknown", TERMINATING_RECHECK)
    if pod.host_network:
        return Lifecycle(Step.KEEP, "on the host network")  # no netns of its own
    if pod.phase != "Running":
        # The runtime (and Multus) may still be setting the sandbox up. The pod's update
        # to Running queues it again, so an earlier edit is not lost.
        return Lifecycle(Step.KEEP, f"phase {pod.phase or 'unknown'}")
    if netns is Netns.FOUND:
        return Lifecycle(Step.CONVERGE, "running")
    if netns is Netns.UNREADABLE:
        return Lifecycle(Step.KEEP, "its netns cannot be found", NETNS_RETRY)
    # Not started yet (or torn down, or being replaced): the wish waits on the pod.
    return Lifecycle(Step.KEEP, "running, no sandbox yet", SANDBOX_RECHECK)


def plan_release(held: Sequence[Current]) -> list[Detach]:
    """A released pod: DEL every attachment the agent holds, with its recorded config."""
    return [Detach(c, "released", 1, RELEASE_RETRY, best_effort=c.state == FAILED) for c in held]


def after_release(left: Sequence[Current]) -> float | None:
    """When to look at a released pod again: once nothing is left, never (its next event
    or a resync would find nothing to do); else when its DELs are tried again."""
    return RELEASE_RETRY if left else None


# -- a NetworkAttachmentDefinition added, changed or deleted -----------------------------------


def networks_named(wish: Wish | None, held: Collection[NetworkRef]) -> set[NetworkRef]:
    """The NADs a pod depends on: those its annotations ask for (secondary networks and
    its default) and those the agent holds attachments of (`held`: the networks of its
    records). `wish` None: the pod is gone, only its records count."""
    named = set(held)
    if wish is None:
        return named
    value = wish.annotations.get(keys.DEFAULT_NETWORK_KEY)
    if value:
        with contextlib.suppress(AnnotationError):  # unreadable: no NAD mends it (reported)
            named.add(parse_default_network(value, wish.namespace))
    with contextlib.suppress(AnnotationError):
        selections = parse_networks(wish.annotations.get(keys.NETWORKS_KEY, ""))
        named.update(s.ref(wish.namespace) for s in selections)
    return named


def pods_naming(
    ref: NetworkRef,
    wishes: Mapping[str, Wish],
    held: Mapping[str, Collection[NetworkRef]],
) -> list[str]:
    """The pods (UIDs) that a change of the NAD `ref` (added, edited, deleted) concerns, of
    the pods on this node (`wishes`) and those the agent holds records for (`held`, gone
    pods included).

    They are reconciled at once, with `ref` among the networks changed since they were last
    looked at (`plan_pod`): a pod that names a NAD before the NAD exists is attached when
    the NAD comes, not when its backoff is over.
    """
    uids = sorted(set(wishes) | set(held))
    return [uid for uid in uids if ref in networks_named(wishes.get(uid), held.get(uid, ()))]


# -- planning a running pod -------------------------------------------------------------------


def plan_pod(
    wish: Wish,
    seen: Seen,
    now: float,
    changed: Collection[NetworkRef] = (),
    retry: Retry = DEFAULT_RETRY,
) -> Plan:
    """Plan one pod: bookkeeping of what is there, then the diff against the wish.

    `changed`: the networks whose NAD was added, changed or deleted since the pod was last
    looked at. A failed attachment of one of them is tried again now, whatever its backoff
    says: the failure may have been the NAD's (missing, or a config since mended). Its
    attempts count on, so a NAD that is still wrong backs off further. `retry`: how long
    failed attempts wait.
    """
    plan = Plan()
    current = _bookkeeping(plan, seen, now, retry)
    if plan.unsettled:
        plan.retry(UNSETTLED_RECHECK)
        return plan
    switches = () if plan.recreated else seen.switches
    try:
        selections = parse_networks(wish.annotations.get(keys.NETWORKS_KEY, ""))
        desired_default = _desired_default(wish)
        _plan_secondaries(plan, selections, wish.namespace, current, now, changed, retry)
    except AnnotationError as err:
        plan.problem = str(err)
        del plan.detach[len(_vanished(plan)) :]
        plan.attach.clear()
        return plan
    _plan_default(
        plan,
        current,
        switches,
        desired_default,
        parse_switch_policy(wish.annotations),
        now,
        changed,
        retry,
    )
    return plan


def _vanished(plan: Plan) -> list[Detach]:
    return [d for d in plan.detach if d.why == "vanished"]


def _desired_default(wish: Wish) -> NetworkRef | None:
    """The default network wanted; None means: leave the default network as it is."""
    value = wish.annotations.get(keys.DEFAULT_NETWORK_KEY)
    if value:
        return parse_default_network(value, wish.namespace)
    if wish.cluster_network is not None:
        return NetworkRef("", wish.cluster_network)
    return None


def _bookkeeping(plan: Plan, seen: Seen, now: float, retry: Retry) -> list[Current]:
    """Release what a replaced sandbox held, adopt creation-time attachments, release
    vanished ones; what is there afterwards."""
    held: dict[str, Current] = {}
    for c in seen.current:
        if not same_sandbox(c.sandbox, c.netns, seen.sandbox, {seen.netns, *seen.netns_aliases}):
            plan.release.append(_detach(c, "recreated", retry))
            plan.recreated = True
            continue
        if c.adopted and c.sandbox != seen.sandbox and seen.sandbox:
            plan.rebind.append(c.interface)  # adopted under the pod UID by an older agent
        held[c.interface] = c
    for entry in seen.network_status:
        if not entry.interface or entry.interface in held:
            continue
        if entry.interface not in seen.links:
            # Detached (maybe by an agent that crashed before it reported): a stale entry.
            plan.forget.append(entry.interface)
            continue
        if not _matches_live(entry, seen) and not _settled(seen, now):
            plan.unsettled.append(entry.interface)
            continue
        # Multus names unnamed networks net1, net2, ...: those names stay automatic,
        # so the selection that asked for one keeps it (and is not re-plugged).
        auto = not entry.default and _AUTO_NAME.fullmatch(entry.interface) is not None
        plan.adopt.append(Adopt(entry.name, entry.interface, entry.default, auto))
        held[entry.interface] = Current(
            ref=parse_network_id(entry.name),
            interface=entry.interface,
            state=ATTACHED,
            role=DEFAULT if entry.default else SECONDARY,
            auto_named=auto,
        )
    for interface, c in list(held.items()):
        if c.state == ATTACHED and interface not in seen.links:
            # Gone behind the agent's back (e.g. `ip link del`): release its address and
            # forget it, so that it is attached again below if still wanted.
            plan.detach.append(_detach(c, "vanished", retry))
            del held[interface]
    return list(held.values())


def _matches_live(entry: NetworkStatusEntry, seen: Seen) -> bool:
    """The entry's addresses are on its interface (or one side does not say)."""
    if seen.addresses is None or not entry.ips:
        return True
    live = seen.addresses.get(entry.interface or "")
    return live is None or set(entry.ips) <= set(live)


def _settled(seen: Seen, now: float) -> bool:
    since = now if seen.sandbox_since is None else seen.sandbox_since
    return now - since >= SETTLE_SECONDS


def _detach(c: Current, why: str, retry: Retry) -> Detach:
    attempt = c.attempts + 1 if c.state == DETACHING else 1
    return Detach(c, why, attempt, retry.after(attempt), best_effort=c.state == FAILED)


def _attach(want: Attachment, role: str, before: Current | None, retry: Retry) -> Attach:
    """A failed attachment behind the same name counts on; anything else starts at 1."""
    attempt = before.attempts + 1 if before is not None and before.state == FAILED else 1
    return Attach(want, role, attempt, retry.after(attempt))


def _plan_secondaries(
    plan: Plan,
    selections: Sequence[NetworkSelection],
    namespace: str,
    current: Sequence[Current],
    now: float,
    changed: Collection[NetworkRef],
    retry: Retry,
) -> None:
    secondaries = [c for c in current if c.role == SECONDARY]
    reserved = {"eth0", "lo"} | {c.interface for c in current if c.role != SECONDARY}
    wanted = desired_attachments(
        selections,
        namespace,
        [(c.ref, c.interface, c.auto_named) for c in secondaries],
        reserved=reserved,
    )
    by_interface = {c.interface: c for c in secondaries}
    for want in wanted:
        have = by_interface.pop(want.interface, None)
        if have is None:
            plan.attach.append(_attach(want, SECONDARY, None, retry))
            continue
        same = have.ref == want.ref and (not have.key or have.key == selection_key(want.selection))
        if not same or have.state in (ATTACHING, DETACHING):
            # Another network (or other ips/mac) behind the same name: detach first, then attach.
            plan.detach.append(_detach(have, "replaced", retry))
            plan.attach.append(_attach(want, SECONDARY, have, retry))
        elif have.state == FAILED:
            if now >= have.retry_at or have.ref in changed:
                plan.attach.append(_attach(want, SECONDARY, have, retry))
            else:
                plan.waiting.append(have)
                plan.retry(have.retry_at - now)
    plan.detach.extend(_detach(c, "unwanted", retry) for c in by_interface.values())


def _plan_default(
    plan: Plan,
    current: Sequence[Current],
    switches: Sequence[EarlierSwitch],
    desired: NetworkRef | None,
    policy: SwitchPolicy,
    now: float,
    changed: Collection[NetworkRef],
    retry: Retry,
) -> None:
    default = next((c for c in current if c.role == DEFAULT), None)
    incoming = [c for c in current if c.role == INCOMING_DEFAULT]
    target: Current | None = None
    if desired is not None and (default is None or default.ref != desired):
        target = _switch_target(
            plan, current, desired, default, switches, policy, now, changed, retry
        )
    for c in incoming:
        if target is None or c.interface != target.interface:
            plan.detach.append(
                _detach(c, "unwanted", retry)
            )  # left over from a switch not wanted now
    for c in current:
        if c.role != PREVIOUS_DEFAULT or (target is not None and c.interface == target.interface):
            continue
        if c.drain_until is not None:
            if now >= c.drain_until:
                plan.drain.append(_detach(c, "drained", retry))
            else:
                plan.retry(c.drain_until - now)


def _switch_target(
    plan: Plan,
    current: Sequence[Current],
    desired: NetworkRef,
    default: Current | None,
    switches: Sequence[EarlierSwitch],
    policy: SwitchPolicy,
    now: float,
    changed: Collection[NetworkRef],
    retry: Retry,
) -> Current:
    """Plan the switch to `desired` (or its wait); returns the interface it uses."""
    candidates = [c for c in current if c.role in (INCOMING_DEFAULT, PREVIOUS_DEFAULT)]
    # An interface of the target network that is already up is reused: after a crash
    # mid-switch, or when switching back to a kept previous default.
    up = next((c for c in candidates if c.ref == desired and c.state == ATTACHED), None)
    # A failed incoming default keeps its name, so its attempts count on and it backs off.
    failed = next(
        (
            c
            for c in candidates
            if c.ref == desired and c.state == FAILED and c.role == INCOMING_DEFAULT
        ),
        None,
    )
    target = up or failed
    if failed is not None and up is None and now < failed.retry_at and desired not in changed:
        plan.waiting.append(failed)
        plan.retry(failed.retry_at - now)
        return failed
    if target is None:
        target = Current(desired, _free_name(plan, current), ATTACHING, INCOMING_DEFAULT)
    attach = None
    if up is None:
        sel = NetworkSelection(
            name=desired.name, namespace=desired.namespace or None, interface=target.interface
        )
        attach = _attach(
            Attachment(desired, target.interface, sel, True), INCOMING_DEFAULT, failed, retry
        )
    plan.switch = Switch(
        target=desired,
        interface=target.interface,
        attach=attach,
        old=default,
        table=_source_table(switches, default),
        fallback_gateways=_old_gateways(switches, target.interface) if up is not None else (),
        policy=policy,
        drain_until=now + policy.drain_seconds if policy.old_default == "Remove" else None,
    )
    return target


def _free_name(plan: Plan, current: Sequence[Current]) -> str:
    taken = (
        {"eth0", "lo"} | {a.want.interface for a in plan.attach} | {c.interface for c in current}
    )
    n = 1
    while f"net{n}" in taken:
        n += 1
    return f"net{n}"


def _source_table(switches: Sequence[EarlierSwitch], old: Current | None) -> int:
    """The same old interface keeps its table, so a switch redone after a crash is a no-op."""
    if old is not None:
        for sw in switches:
            if sw.old_ifname == old.interface:
                return sw.table
    used = {sw.table for sw in switches}
    table = SOURCE_TABLE_BASE
    while table in used:
        table += 1
    return table


def _old_gateways(switches: Sequence[EarlierSwitch], ifname: str) -> tuple[str, ...]:
    """An adopted interface or a kept old default may have no gateway in its CNI result:
    then the default route it had before (one per family) is the one to restore."""
    found: dict[bool, str] = {}
    for sw in switches:
        if sw.old_ifname == ifname:
            for gw in sw.gateways:
                found.setdefault(":" in gw, gw)
    return tuple(found.values())


def switch_routes(
    result: Mapping[str, Any], interface: str, fallback: Sequence[str] = ()
) -> dict[int, str | None]:
    """The default routes (IP version -> gateway, None: a device route) that make `interface`
    the pod's default: exactly those its CNI result gives, none invented — a gateway alone is
    not a default route (host-local names one for every range, whatever the network is).

    `fallback`: the default routes a reused interface had before (Switch.fallback_gateways).
    Empty: the network is not a default network, and the switch is refused
    (:func:`not_a_default_network`).
    """
    routes = result_default_routes(result, interface)
    if routes:
        return routes
    return {(6 if ":" in gw else 4): gw for gw in fallback}


def not_a_default_network(network: str, interface: str, result: Mapping[str, Any]) -> str:
    """Why a switch to a network whose result has no default route is refused."""
    gateways = ", ".join(result_gateways(result, interface))
    gw_text = f" (its gateway {gateways} alone is not a route)" if gateways else ""
    routes = ", ".join(str(r["dst"]) for r in result_routes(result)) or "none"
    return (
        f"{network} is not a default network: the CNI result for {interface} has no default "
        f"route (routes: {routes}){gw_text}, so {interface} was released; give the network a "
        "default route (bridge isDefaultGateway, or 0.0.0.0/0 or ::/0 in its IPAM routes)"
    )


def next_requeue(plan: Plan, after: Sequence[Current], now: float) -> float | None:
    """When to look at the pod again, from the plan and the attachments after carrying it out."""
    if plan.problem:
        return None
    retry = plan.retry_in
    for c in after:
        delay = None
        if c.failed:
            delay = max(c.retry_at - now, FAILED_RECHECK)
        elif c.role == PREVIOUS_DEFAULT and c.drain_until is not None:
            delay = max(c.drain_until - now, DRAIN_RECHECK)
        if delay is not None:
            retry = delay if retry is None else min(retry, delay)
    return retry
