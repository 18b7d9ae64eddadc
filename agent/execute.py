"""Carry out a pod's plan with CNI and netlink, keeping the records crash-safe; return outcomes.

Crash-safety of the records: a record is written (Attaching) before ADD, DEL
always runs with the config the ADD used, a record is deleted only once its DEL
succeeded, and a failed DEL keeps it (Detaching, retried) unless the planner
marked the DEL best effort. Decisions are the planner's: this module does what
the plan (`plan_pod`, or `plan_release` for a pod that is gone) says and
reports how it went.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agent import netlink
from agent.metrics import (
    REASON_CNI,
    REASON_NETNS,
    REASON_NO_DEFAULT_ROUTE,
    REASON_OTHER,
    REASON_TIMEOUT,
    REASON_VERIFY,
    AgentMetrics,
)
from agent.netns import Sandbox, same_namespace
from agent.networks import NetworkConfigs, PodError
from agent.observe import Observation, as_current, live_result
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
from agent.plan import (
    Adopt,
    Attach,
    Carry,
    Detach,
    Plan,
    Refuse,
    Retire,
    Switch,
    backoff,
    network_id,
    not_a_default_network,
    parse_network_id,
    plan_release,
    same_sandbox,
    switch_routes,
)
from netshift import annotations as ann
from netshift.attachments import AttachmentRecord, PodMeta
from netshift.cni.config import CniError, CniTimeoutError, RuntimeConf
from netshift.cni.executor import CniExecutor
from netshift.cni.nad import attachment_runtime, recorded_invocation
from netshift.cni.results import result_ips
from netshift.keys import (
    ATTACHED,
    ATTACHING,
    DEFAULT,
    DETACHING,
    FAILED,
    INCOMING_DEFAULT,
    PREVIOUS_DEFAULT,
    RETIRED_DEFAULT,
    SECONDARY,
)
from netshift.kube import now_rfc3339
from netshift.records import RecordStore

log = logging.getLogger("netshift.agent")
_FAMILY: dict[int, int] = {4: socket.AF_INET, 6: socket.AF_INET6}  # IP version -> family


class ResultRefused(Exception):
    """The ADD worked, but its result cannot serve (a new default without a default route)."""


@dataclass(frozen=True)
class Done:
    outcomes: tuple[Outcome, ...]
    records: tuple[AttachmentRecord, ...]  # the pod's records afterwards


# -- the executor ----------------------------------------------------------------------------


class Executor:
    def __init__(
        self,
        store: RecordStore,
        cni: CniExecutor,
        configs: NetworkConfigs,
        sandbox_of: Callable[[str], Sandbox | None],
        metrics: AgentMetrics | None = None,
        host_netns: str = netlink.HOST_NETNS,
    ) -> None:
        self.store = store
        self.cni = cni
        self.configs = configs
        self._sandbox_of = sandbox_of  # pod UID -> its sandbox now (None when unknown)
        self.metrics = metrics or AgentMetrics()
        self.host_netns = host_netns  # where the pods' networks have their host side

    def run(self, obs: Observation, plan: Plan) -> Done:
        pod = obs.pod
        # What a replaced sandbox held goes first: the new sandbox's interfaces take the names.
        released = self._detach_all(obs, plan.release)
        stuck = {o.record.interface for o in released if o.error}
        self._track_sandbox(obs, plan)
        for adopt in plan.adopt:
            if adopt.interface not in stuck:
                self.adopt(obs, adopt)
        detached = self._detach_all(obs, plan.detach)
        stuck |= {o.record.interface for o in detached if o.error}
        outcomes: list[Outcome] = [*released, *detached]
        for a in plan.attach:
            if a.want.interface in stuck:
                # Its old attachment is still there (its DEL failed): an ADD would replace the
                # record that is the only way to release it. The retry comes back here.
                continue
            outcomes.append(self.attach(obs, a))
        if plan.problem:
            outcomes.append(Problem(plan.problem))
        elif plan.switch is not None:
            outcomes += self.switch_default(obs, plan.switch)
        if not any(isinstance(o, Problem) for o in outcomes):
            outcomes += self._old_defaults(obs, plan)
        return Done(tuple(outcomes), tuple(self.store.list_pod(pod.uid)))

    def _old_defaults(self, obs: Observation, plan: Plan) -> list[Outcome]:
        """Drain, retire or keep old defaults; keep retired addresses carried."""
        # Carried addresses move off an interface before it goes (drain below) ...
        for c in plan.carry:
            self.carry(obs, c)
        moving = [c for c in plan.carry if c.moving]
        outcomes: list[Outcome] = [*self._detach_all(obs, plan.drain, moving)]
        outcomes += [self.retire(obs, r) for r in plan.retire]
        outcomes += [self.refuse(obs, r) for r in plan.refuse]
        for c in moving:  # (already done if their old carrier was drained)
            self._settle_routes(obs, c)
        return outcomes

    def _track_sandbox(self, obs: Observation, plan: Plan) -> None:
        """The pod's meta follows its current sandbox; records made before name it too."""
        pod = obs.pod
        meta = obs.pod_meta or PodMeta(pod.uid, pod.namespace, pod.name)
        if plan.recreated:
            meta = replace(meta, switches=[])  # their source routes went with the old netns
        if (meta.netns, meta.container_id) != (obs.netns, obs.sandbox_id) or obs.pod_meta is None:
            since = meta.sandbox_since if meta.container_id == obs.sandbox_id else time.time()
            meta = replace(meta, netns=obs.netns, container_id=obs.sandbox_id, sandbox_since=since)
        if meta != obs.pod_meta:
            self.store.put_pod_meta(meta)
        for interface in plan.rebind:
            rec = self.store.get(pod.uid, interface)
            if rec is not None:
                self.store.put(replace(rec, container_id=obs.sandbox_id))

    def _detach_all(
        self, obs: Observation, detaches: list[Detach], moving: Sequence[Carry] = ()
    ) -> list[Detached]:
        done: list[Detached] = []
        for d in detaches:
            rec = self.store.get(obs.pod.uid, d.current.interface)
            if rec is None:
                continue
            if d.why == "vanished":
                log.warning(
                    "pod %s: %s vanished from the pod; re-plugging", obs.pod.key, rec.interface
                )
            if d.why == "recreated":
                log.info(
                    "pod %s: sandbox replaced (%s -> %s): releasing %s of the old one",
                    obs.pod.key,
                    rec.container_id,
                    obs.sandbox_id,
                    rec.interface,
                )
            if d.why == "drained":
                self._remove_source_routes(obs, rec)
                # ... and the node's routes to them leave it before its link goes.
                for c in moving:
                    self._settle_routes(obs, c)
            done.append(replace(self.detach(rec, d), why=d.why))
        return done

    # -- attach ------------------------------------------------------------------------------

    def adopt(self, obs: Observation, a: Adopt) -> AttachmentRecord:
        conflist = self.configs.conflist_or_none(parse_network_id(a.network))
        pod = obs.pod
        return self.store.put(
            AttachmentRecord(
                pod_uid=pod.uid,
                pod_namespace=pod.namespace,
                pod_name=pod.name,
                network=a.network,
                interface=a.interface,
                state=ATTACHED,
                conflist=conflist.to_dict() if conflist else {},
                result=live_result(obs, a.interface),
                container_id=obs.sandbox_id,
                netns=obs.netns,
                role=DEFAULT if a.default else SECONDARY,
                adopted=True,
                auto_named=a.auto_named,
                is_default=a.default,
            )
        )

    def attach(self, obs: Observation, a: Attach) -> Attached:
        pod, want = obs.pod, a.want
        rec = AttachmentRecord(
            pod_uid=pod.uid,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            network=network_id(want.ref),
            interface=want.interface,
            state=ATTACHING,
            container_id=obs.sandbox_id,
            netns=obs.netns,
            selection=want.selection.to_json(),
            auto_named=want.auto_named,
            attempts=a.attempt,
            role=a.role,
        )
        if a.role == INCOMING_DEFAULT:
            # Attached without the route guard, runtime capabilities aside: it is meant to carry
            # the default; until the switch, the old default keeps the main table's route.
            # A result without a default route is no default network: released at once.
            rec, error, reason = self._plug(
                obs,
                rec,
                None,
                a.retry_in,
                lambda: netlink.remove_default_routes_via(obs.netns, want.interface),
                accept=lambda result: (
                    ""
                    if switch_routes(result, want.interface)
                    else not_a_default_network(network_id(want.ref), want.interface, result)
                ),
            )
        else:
            rec, error, reason = self._plug(
                obs, rec, want.selection, a.retry_in, lambda: _fix_routes(obs.netns, want)
            )
            if error:
                log.warning(
                    "pod %s: attach %s@%s failed: %s", pod.key, want.ref, want.interface, error
                )
        return Attached(a, rec, error, reason)

    def _plug(
        self,
        obs: Observation,
        rec: AttachmentRecord,
        sel: ann.NetworkSelection | None,
        retry_in: float,
        fix_routes: Callable[[], object],
        accept: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> tuple[AttachmentRecord, str, str]:
        """ADD, check the result (`accept`: why it is refused, "" if not), fix routes, verify;
        on failure roll back and record it.

        Returns (record, error, failure reason); error and reason are "" when attached.
        """
        started = time.monotonic()
        try:
            found = self.configs.resolve(parse_network_id(rec.network))
            conflist = found.conflist
            # Written before ADD: a crash from here on leaves a record to clean up, never a leak.
            # It keeps the exact config, so the DEL is right even after a node file changed.
            extra = {**rec.extra, NODE_CONF: found.node_file} if found.node_file else rec.extra
            rec = self.store.put(replace(rec, conflist=conflist.to_dict(), extra=extra))
            rt = _runtime(obs, rec.interface, sel)
            result = self.cni.add(conflist, rt)
            # Recorded with the Attached state below, in one write: a crash before it leaves
            # the Attaching record, DELed with its config as after a crash during the ADD.
            rec = replace(rec, result=result)
            refused = accept(result) if accept is not None else ""
            if refused:
                # DEL with the ADD's own config: nothing the refused ADD reserved stays.
                self.cni.delete(conflist, rt, result)
                raise ResultRefused(refused)
            fix_routes()
            try:
                netlink.verify_interface(
                    rec.netns, rec.interface, result_ips(result, rec.interface)
                )
            except netlink.VerifyError:
                self.cni.delete(conflist, rt, result)
                raise
        except (CniError, netlink.VerifyError, PodError, ResultRefused, OSError) as err:
            failed = self.store.put(
                replace(
                    rec,
                    state=FAILED,
                    result=None,
                    message=str(err),
                    retry_at=time.time() + retry_in,
                )
            )
            reason = failure_reason(err)
            self.metrics.observe("attach", time.monotonic() - started, ok=False)
            self.metrics.failed("attach", reason)
            return failed, str(err), reason
        self.metrics.observe("attach", time.monotonic() - started, ok=True)
        return self.store.put(replace(rec, state=ATTACHED, message="", retry_at=0.0)), "", ""

    # -- detach ------------------------------------------------------------------------------

    def detach(self, rec: AttachmentRecord, d: Detach) -> Detached:
        """DEL with the exact config the ADD used; the record goes only once DEL succeeded
        (or at once, for a best-effort DEL)."""
        attempt, retry_in = d.attempt, d.retry_in
        if d.best_effort:
            with contextlib.suppress(CniError, PodError):
                self._delete(rec)
            self.store.delete(rec.pod_uid, rec.interface)
            return Detached(rec, attempt, retry_in, rolled_back=True)
        rec = self.store.put(replace(rec, state=DETACHING, attempts=attempt))
        started = time.monotonic()
        try:
            self._delete(rec)
        except (CniError, PodError) as err:
            self.metrics.observe("detach", time.monotonic() - started, ok=False)
            self.metrics.failed("detach", failure_reason(err))
            rec = self.store.put(
                replace(rec, message=f"detach failed: {err}", retry_at=time.time() + retry_in)
            )
            return Detached(rec, attempt, retry_in, error=str(err))
        self.metrics.observe("detach", time.monotonic() - started, ok=True)
        self.store.delete(rec.pod_uid, rec.interface)
        return Detached(rec, attempt, retry_in)

    def _delete(self, rec: AttachmentRecord) -> None:
        if rec.role == RETIRED_DEFAULT:
            # The node's routes to its addresses go before the addresses do (DEL releases them):
            # never a route to an address that the pool may give to another pod.
            netlink.remove_host_routes(self.host_netns, _carried_routes(rec))
        # In the pod's sandbox now if the attachment was made there, else in its own (old)
        # sandbox's netns if that is still there: never in a new sandbox that reuses its name.
        now = self._sandbox_of(rec.pod_uid)
        netns = rec.netns
        if now is not None:
            paths = {now.netns, rec.netns} if same_namespace(rec.netns, now.netns) else {now.netns}
            if same_sandbox(rec.container_id, rec.netns, now.id, paths):
                netns = now.netns
        netns = netns if netns and os.path.exists(netns) else ""
        invocation = recorded_invocation(rec, netns)
        if invocation is not None:
            conflist, rt = invocation
        elif rec.adopted:
            # Adopted without a known config (its NAD was gone): the current one is the best left.
            conflist = self.configs.conflist(parse_network_id(rec.network))
            rt = attachment_runtime(
                namespace=rec.pod_namespace,
                name=rec.pod_name,
                uid=rec.pod_uid,
                netns=netns,
                ifname=rec.interface,
                container_id=rec.container_id,
            )
        else:
            return  # its config could not be read, so its ADD never ran: nothing to undo
        self.cni.delete(conflist, rt, rec.result)
        if rt.netns:
            # Some plugins leave the link behind on DEL; an interface the pod no longer wants must go.
            # The namespace may vanish meanwhile (pod teardown): then its links are gone with it.
            with contextlib.suppress(netlink.NetnsNotFound):
                netlink.delete_link(rt.netns, rec.interface)

    def release(self, uid: str, detaches: Sequence[Detach]) -> list[AttachmentRecord]:
        """Carry out `plan_release` for a pod that is gone or finished, so IPAM is released.

        A record goes once its DEL succeeded (a best-effort one whatever happened); then the
        pod's directory, once empty. Returns the records left.
        """
        released = 0
        for d in detaches:
            rec = self.store.get(uid, d.current.interface)
            if rec is None:
                continue
            try:
                self._delete(rec)
            except (CniError, PodError) as err:
                log.warning("pod %s: DEL %s failed at clean-up: %s", uid, rec.interface, err)
                if not d.best_effort:
                    continue
            self.store.delete(uid, rec.interface)
            released += 1
        self.store.delete_pod(uid)
        if detaches:
            log.info("pod %s gone: released %d of %d attachment(s)", uid, released, len(detaches))
        return self.store.list_pod(uid)

    def cleanup(self, uid: str) -> bool:
        """Release everything held for `uid` as the planner says; True when nothing is left.

        The plan and its execution in one call, for callers that decide nothing else
        (a node being taken down, tests).
        """
        held = [as_current(r) for r in self.store.list_pod(uid)]
        return not self.release(uid, plan_release(held))

    # -- retiring a removed default (netshift.podip) ---------------------------------------------

    def retire(self, obs: Observation, r: Retire) -> Retired:
        """Carry the old default's reported addresses onto the default interface, then delete
        the old interface; its record stays (the deferred DEL) until the pod is gone.

        The record says it is retired before anything changes, so a crash at any step leaves
        a retirement that the next reconcile finishes (every step is idempotent), never a
        vanished interface to re-plug or an address released while it is reported.
        """
        rec = self.store.get(obs.pod.uid, r.current.interface)
        if rec is None:
            return Retired(r, None, error="its record vanished")
        rec = self.store.put(replace(rec, role=RETIRED_DEFAULT, is_default=False, drain_until=None))
        try:
            # The node reaches the addresses both ways while the pod's replies move over ...
            rec = self._carry(obs, rec, r.onto, r.addresses, bridge=True)
            # ... to the default route (their source rules go; the addresses stay: they are
            # on the default interface too), then only through the new network.
            self._remove_source_routes(obs, rec)
            rec = self._carry(obs, rec, r.onto, r.addresses)
            netlink.delete_link(obs.netns, rec.interface)
        except (OSError, LookupError) as err:
            log.warning("pod %s: retiring %s failed: %s", obs.pod.key, rec.interface, err)
            attempts = rec.attempts + 1
            rec = self.store.put(
                replace(rec, attempts=attempts, retry_at=time.time() + backoff(attempts))
            )
            return Retired(r, rec, error=str(err))
        log.info(
            "pod %s: %s (%s) removed; %s answer through %s and stay reserved until the pod goes",
            obs.pod.key,
            rec.interface,
            rec.network,
            ", ".join(r.addresses),
            r.onto,
        )
        return Retired(r, rec)

    def carry(self, obs: Observation, c: Carry) -> None:
        rec = self.store.get(obs.pod.uid, c.current.interface)
        if rec is None:
            return
        try:
            self._carry(obs, rec, c.onto, c.addresses, bridge=c.moving)
        except (OSError, LookupError) as err:
            log.warning(
                "pod %s: keeping %s answering on %s failed: %s",
                obs.pod.key,
                ", ".join(c.addresses),
                c.onto,
                err,
            )

    def _carry(
        self,
        obs: Observation,
        rec: AttachmentRecord,
        onto: str,
        addresses: tuple[str, ...],
        *,
        bridge: bool = False,
    ) -> AttachmentRecord:
        """The addresses on interface `onto` in the pod, and the node's routes to them via the
        pod's address there. The routes are recorded before they are made (crash-safe)."""
        target = self.store.get(obs.pod.uid, onto)
        if target is None or target.state != ATTACHED:
            raise LookupError(f"{onto} is not attached: nothing to carry the addresses")
        netlink.carry_addresses(obs.netns, onto, addresses)
        routes = netlink.host_routes_via(
            self.host_netns, addresses, result_ips(target.result or {}, onto)
        )
        before = _carried_routes(rec)
        if routes != before or rec.extra.get("carried_on") != onto:
            # Both the old and the new routes are named until the old ones are gone.
            both = [r.to_json() for r in [*before, *(r for r in routes if r not in before)]]
            rec = self.store.put(
                replace(rec, extra={**rec.extra, "carried_on": onto, "host_routes": both})
            )
        if bridge:
            # The old path stays (recorded) until the pod's replies have moved: _settle_routes.
            netlink.bridge_host_routes(self.host_netns, routes, before)
            return rec
        netlink.install_host_routes(self.host_netns, routes)
        stale = [r for r in before if r not in routes]
        if stale:
            netlink.remove_host_routes(self.host_netns, stale)
        if _carried_routes(rec) != routes:
            rec = self.store.put(
                replace(rec, extra={**rec.extra, "host_routes": [r.to_json() for r in routes]})
            )
        return rec

    def _settle_routes(self, obs: Observation, c: Carry) -> None:
        """The pod's replies from the carried addresses leave by `c.onto` now: the node's
        routes go only that way, and the old path (kept while they moved) goes."""
        rec = self.store.get(obs.pod.uid, c.current.interface)
        if rec is not None:
            with contextlib.suppress(OSError, LookupError):
                self._carry(obs, rec, c.onto, c.addresses)

    def refuse(self, obs: Observation, r: Refuse) -> Refused:
        """The Remove cannot be made safe: the old default is kept (as with Keep), once."""
        rec = self.store.get(obs.pod.uid, r.current.interface)
        if rec is not None:
            rec = self.store.put(replace(rec, drain_until=None))
        return Refused(r.current.interface, network_id(r.current.ref), r.why)

    # -- the default network -------------------------------------------------------------------

    def switch_default(self, obs: Observation, sw: Switch) -> list[Outcome]:
        """Make-before-break: attach the new default, move the routes, then retire the old one."""
        started = time.monotonic()
        outcomes = self._switch_default(obs, sw)
        ok = any(isinstance(o, Switched) for o in outcomes)
        self.metrics.observe("switch", time.monotonic() - started, ok=ok)
        if not ok:
            failed = next((o for o in outcomes if isinstance(o, Attached) and o.error), None)
            self.metrics.failed("switch", failed.reason if failed else REASON_OTHER)
        return outcomes

    def _switch_default(self, obs: Observation, sw: Switch) -> list[Outcome]:
        uid = obs.pod.uid
        outcomes: list[Outcome] = []
        old = self.store.get(uid, sw.old.interface) if sw.old is not None else None
        kept: tuple[tuple[netlink.SourceRule, ...], tuple[netlink.Route, ...]] = ((), ())
        if old is not None:
            # Before the ADD: the plugin's own default route wins the moment it is added, so
            # the old addresses must already be pinned to the old interface by then.
            kept = netlink.keep_source_routes(
                obs.netns, old.interface, self._old_addresses(obs, old), sw.table
            )
        if sw.attach is None:
            new = self.store.get(uid, sw.interface)
            assert new is not None
        else:
            attached = self.attach(obs, sw.attach)
            outcomes.append(attached)
            new = attached.record
            if new.state != ATTACHED:
                if old is not None and not self._table_recorded(uid, sw.table):
                    # No switch to protect: the old default keeps the main table's routes.
                    netlink.remove_source_routes(
                        obs.netns,
                        netlink.SwitchRecord(sw.table, old.interface, "", *kept, ()),
                        leaving=False,
                    )
                return outcomes
        routes = switch_routes(new.result or {}, new.interface, sw.fallback_gateways)
        if not routes:
            # A reused interface that never carried a default route here: nothing to move to.
            outcomes.append(
                Problem(not_a_default_network(new.network, new.interface, new.result or {}))
            )
            return outcomes
        gateways = {_FAMILY[version]: gw for version, gw in routes.items()}
        if old is not None:
            self._move_default_route(obs, sw, new, old, gateways)
        else:
            for family, gw in gateways.items():
                netlink.set_default_route_via(obs.netns, new.interface, gw, family=family)
        at = now_rfc3339()
        # Kept with the record, not only in the pod's status: a status computed from a
        # watch cache that lags behind our own last patch must not lose it.
        self.store.put(
            replace(
                new,
                role=DEFAULT,
                is_default=True,
                drain_until=None,
                extra={**new.extra, "switched_at": at},
            )
        )
        outcomes.append(
            Switched(network_id(sw.target), new.interface, old, sw.policy.old_default, at)
        )
        return outcomes

    def _move_default_route(
        self,
        obs: Observation,
        sw: Switch,
        new: AttachmentRecord,
        old: AttachmentRecord,
        gateways: Mapping[int, str | None],
    ) -> None:
        uid = obs.pod.uid
        meta = self.store.get_pod_meta(uid) or PodMeta(uid)
        earlier = [netlink.SwitchRecord.from_json(raw) for raw in meta.switches]
        switch = netlink.switch_default_route(
            obs.netns,
            new.interface,
            gateways,
            old.interface,
            self._old_addresses(obs, old),
            sw.table,
        )
        # Source routing kept for the new default while it was an old one is obsolete now.
        for e in earlier:
            if e.old_ifname == new.interface:
                netlink.remove_source_routes(obs.netns, e, leaving=False)
        kept = [e.to_json() for e in earlier if e.old_ifname not in (old.interface, new.interface)]
        self.store.put_pod_meta(replace(meta, switches=[*kept, switch.to_json()]))
        self.store.put(
            replace(old, role=PREVIOUS_DEFAULT, is_default=False, drain_until=sw.drain_until)
        )

    def _table_recorded(self, uid: str, table: int) -> bool:
        """A switch that happened holds `table` (its source routing must stay)."""
        meta = self.store.get_pod_meta(uid)
        return meta is not None and any(
            netlink.SwitchRecord.from_json(raw).table == table for raw in meta.switches
        )

    def _old_addresses(self, obs: Observation, old: AttachmentRecord) -> list[str]:
        """The old default's addresses, and the retired ones it carries: replies from all of
        them keep leaving through it while the node routes them to it."""
        carried = [
            ip
            for r in self.store.list_pod(obs.pod.uid)
            if r.role == RETIRED_DEFAULT and r.extra.get("carried_on") == old.interface
            for ip in result_ips(r.result or {}, r.interface)
        ]
        return [*_old_addresses(obs, old), *carried]

    def _remove_source_routes(self, obs: Observation, rec: AttachmentRecord) -> None:
        """An old default is removed: the source routing for its addresses goes first."""
        meta = self.store.get_pod_meta(rec.pod_uid)
        if meta is None:
            return
        keep = []
        for raw in meta.switches:
            sw = netlink.SwitchRecord.from_json(raw)
            if sw.old_ifname == rec.interface:
                retired = netlink.remove_source_routes(obs.netns, sw)
                if retired:
                    # Their sockets were destroyed: say so (a surprise here is a bug to see).
                    log.info(
                        "pod %s: %s leaves: %s retired with it (no default goes out of them)",
                        obs.pod.key,
                        rec.interface,
                        ", ".join(retired),
                    )
            else:
                keep.append(raw)
        self.store.put_pod_meta(replace(meta, switches=keep))


def _runtime(obs: Observation, ifname: str, sel: ann.NetworkSelection | None) -> RuntimeConf:
    pod = obs.pod
    return attachment_runtime(
        namespace=pod.namespace,
        name=pod.name,
        uid=pod.uid,
        netns=obs.netns,
        ifname=ifname,
        selection=sel,
        container_id=obs.sandbox_id,
    )


def _fix_routes(netns: str, want: ann.Attachment) -> None:
    """Multi-net spec: only the element with default-route may take the default route.

    Checked on the link, not on the result: a plugin can add a default route
    that its result does not list (bridge with isDefaultGateway).
    """
    if want.selection.default_route:
        for gw in want.selection.default_route:
            netlink.set_default_route_via(netns, want.interface, gw)
    else:
        netlink.remove_default_routes_via(netns, want.interface)


def _carried_routes(rec: AttachmentRecord) -> list[netlink.Route]:
    """The node's routes to a retired default's addresses, as its record names them."""
    raw = rec.extra.get("host_routes")
    return [netlink.Route.from_json(r) for r in raw] if isinstance(raw, list) else []


def _old_addresses(obs: Observation, old: AttachmentRecord) -> list[str]:
    """The old default's addresses: from its CNI result, else (adopted) off the live link."""
    live = obs.links.get(old.interface)
    return result_ips(old.result or {}, old.interface) or (live.addresses if live else [])


def failure_reason(err: BaseException) -> str:
    """The metrics' reason for a failed operation (a small fixed set)."""
    if isinstance(err, CniTimeoutError):
        return REASON_TIMEOUT
    if isinstance(err, CniError):
        return REASON_CNI
    if isinstance(err, netlink.VerifyError):
        return REASON_VERIFY
    if isinstance(err, PodError):
        return err.reason
    if isinstance(err, ResultRefused):
        return REASON_NO_DEFAULT_ROUTE
    if isinstance(err, netlink.NetnsNotFound):
        return REASON_NETNS
    return REASON_OTHER
