"""The node agent's reconciler: for each pod on this node, make its interfaces match its annotations.

Level-triggered: every run reads the pod (from the watch cache), the agent's
records and the live netns, plans with `agent.plan`, executes with the CNI
executor and netlink, then reports through an annotation patch. One pod is
never handled by two workers at once (the work queue is keyed by pod UID).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent import netlink
from agent.netns import NetnsError, NetnsResolver
from agent.plan import Current, Plan, network_id, parse_network_id, plan_pod, selection_key
from netshift import annotations as ann
from netshift import keys, podstatus
from netshift.cni.config import (
    CniError,
    ConfList,
    RuntimeConf,
    capability_args,
    k8s_cni_args,
    load_conflist,
)
from netshift.cni.executor import CniExecutor
from netshift.cni.results import result_dns, result_gateways, result_ips, result_mac
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
from netshift.kube import (
    ApiError,
    Informer,
    Kube,
    nad_path,
    now_rfc3339,
    patch_annotations,
    pod_path,
    record_event,
)
from netshift.records import AttachmentRecord, PodMeta, RecordStore
from netshift.workqueue import WorkQueue

log = logging.getLogger("netshift.agent")
COMPONENT = "netshift-agent"
SOURCE_TABLE_BASE = 1000  # policy-routing tables for old defaults: 1000, 1001, ...
MAX_BACKOFF = 300.0
CLEANUP_RETRY = 10.0
_AUTO_NAME = re.compile(r"net[0-9]+")


@dataclass
class AgentSettings:
    node: str
    plugin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    records_dir: str = "/var/lib/netshift/records"
    # The cluster's own network (Multus's clusterNetwork): what a pod without a
    # default-network annotation has as eth0. Needed to switch back to it or to
    # remove it after a switch.
    cluster_network_conf: str | None = None
    workers: int = 4
    resync_seconds: float = 60.0
    cni_timeout: float = 30.0


class PodError(Exception):
    """A problem with one pod's wish that no retry can fix (bad annotation, missing NAD)."""


def backoff(attempts: int) -> float:
    return float(min(2 ** max(attempts - 1, 0), MAX_BACKOFF))


class Agent:
    def __init__(
        self,
        kube: Kube,
        settings: AgentSettings,
        resolver: NetnsResolver,
        on_timing: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.kube = kube
        self.s = settings
        self.resolver = resolver
        self.store = RecordStore(settings.records_dir)
        self.cni = CniExecutor(list(settings.plugin_dirs), timeout=settings.cni_timeout)
        self.cluster_net: ConfList | None = None
        if settings.cluster_network_conf:
            with open(settings.cluster_network_conf) as f:
                self.cluster_net = load_conflist(f.read())
        self._pods_by_uid: dict[str, dict[str, Any]] = {}
        self._seen_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self.queue = WorkQueue(self.reconcile, workers=settings.workers, name="agent")
        self.pods = Informer(
            kube,
            "/api/v1/pods",
            params={"fieldSelector": f"spec.nodeName={settings.node}"},
            on_event=self._on_pod,
            name="agent pods",
        )
        self.nads = Informer(kube, nad_path(), name="agent nads")
        self.on_timing = on_timing
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.nads.start()
        self.pods.start()
        for informer in (self.nads, self.pods):
            if not informer.wait_synced(60):
                raise RuntimeError(f"informer {informer.name} did not sync in 60s")
        self.queue.start()
        self.resync()  # full reconcile at start-up: records against live pods
        threading.Thread(target=self._resync_loop, name="resync", daemon=True).start()
        log.info("agent ready on node %s", self.s.node)

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()
        self.pods.stop()
        self.nads.stop()

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.s.resync_seconds):
            self.resync()

    def resync(self) -> None:
        with self._lock:
            uids = set(self._pods_by_uid)
        for uid in uids | set(self.store.pods()):
            self.queue.add(uid)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if kind == "DELETED":
                self._pods_by_uid.pop(uid, None)
            else:
                self._pods_by_uid[uid] = pod
            self._seen_at.setdefault(uid, time.time())
        self.queue.add(uid)

    def pod(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._pods_by_uid.get(uid)

    # -- reconcile -------------------------------------------------------------

    def _netns_gone(self, pod: Mapping[str, Any]) -> bool:
        try:
            return self.resolver.resolve(pod) is None
        except NetnsError:
            return False

    def reconcile(self, uid: str) -> float | None:
        with self._lock:
            seen = self._seen_at.pop(uid, time.time())
        pod = self.pod(uid)
        if pod is None or _finished(pod) or (_terminating(pod) and self._netns_gone(pod)):
            # What could not be released yet is tried again (and at every resync).
            return None if self.cleanup(uid, pod) else CLEANUP_RETRY
        if _terminating(pod):
            # Graceful shutdown: the pod keeps every network until its sandbox is gone;
            # the runtime's teardown (or the pod's final deletion) brings it back here.
            return CLEANUP_RETRY
        if (pod.get("spec") or {}).get("hostNetwork"):
            return None  # no network namespace of its own: nothing to plug into
        if (pod.get("status") or {}).get("phase") != "Running":
            # The runtime (and Multus) may still be setting the sandbox up. The pod's
            # update to Running queues it again, so an earlier edit is not lost.
            return None
        try:
            netns = self.resolver.resolve(pod)
        except NetnsError as err:
            log.warning("pod %s: cannot find its netns: %s", _name(pod), err)
            return 5.0
        if netns is None:
            # Not started yet (or already torn down): the wish waits on the pod, not lost.
            return 1.0
        started = time.monotonic()
        report = Report()
        try:
            retry = self._converge(pod, netns, report)
        except PodError as err:
            report.problem = str(err)
            report.records = self.store.list_pod(uid)  # what was done before the error
            retry = None
        cni_seconds = time.monotonic() - started
        t_status = time.monotonic()
        self.write_status(pod, report)
        if self.on_timing is not None and (report.changed or report.problem):
            self.on_timing(
                {
                    "pod": _name(pod),
                    "uid": uid,
                    "seen_at": seen,
                    "cni_seconds": round(cni_seconds, 4),
                    "status_seconds": round(time.monotonic() - t_status, 4),
                    "done_at": time.time(),
                }
            )
        return retry

    def _current(
        self, pod: Mapping[str, Any], netns: str, report: Report
    ) -> list[AttachmentRecord]:
        """Records of this pod, with what others attached at creation adopted into them."""
        meta = pod["metadata"]
        uid = meta["uid"]
        records = {r.interface: r for r in self.store.list_pod(uid)}
        live = {i.name: i for i in netlink.list_interfaces(netns)}
        routes: list[netlink.Route] | None = None

        def defaults() -> list[netlink.Route]:
            nonlocal routes
            if routes is None:
                routes = netlink.default_routes(netns)
            return routes

        for entry in _network_status(pod):
            if not entry.interface or entry.interface in records:
                continue
            if entry.interface not in live:
                # Detached (maybe by an agent that crashed before it reported): a stale entry.
                report.gone.add(entry.interface)
                continue
            ref = parse_network_id(entry.name)
            conflist = self._conflist_or_none(ref)
            rec = AttachmentRecord(
                pod_uid=uid,
                pod_namespace=meta["namespace"],
                pod_name=meta["name"],
                network=entry.name,
                interface=entry.interface,
                state=ATTACHED,
                conflist=conflist.to_dict() if conflist else {},
                result=_live_result(entry.interface, live[entry.interface], defaults()),
                container_id=uid,
                netns=netns,
                role=DEFAULT if entry.default else SECONDARY,
                adopted=True,
                # Multus names unnamed networks net1, net2, ...: those names stay automatic,
                # so the selection that asked for one keeps it (and is not re-plugged).
                auto_named=not entry.default and _AUTO_NAME.fullmatch(entry.interface) is not None,
                is_default=entry.default,
            )
            records[entry.interface] = self.store.put(rec)
        for interface, rec in list(records.items()):
            if rec.state == ATTACHED and interface not in live:
                # Gone from the pod behind the agent's back (e.g. `ip link del`): release its
                # address and forget it, so that the plan attaches it again if still wanted.
                # A DEL that fails keeps the record (Detaching, retried): never a leaked address.
                log.warning("pod %s: %s vanished from the pod; re-plugging", _name(pod), interface)
                if self.detach(pod, rec, report):
                    report.gone.add(interface)
                    del records[interface]
                else:
                    records[interface] = self.store.get(uid, interface) or rec
        return list(records.values())

    def _converge(self, pod: dict[str, Any], netns: str, report: Report) -> float | None:
        meta = pod["metadata"]
        uid, namespace = meta["uid"], meta["namespace"]
        annotations: Mapping[str, str] = meta.get("annotations") or {}
        self.store.put_pod_meta(
            self.store.get_pod_meta(uid)
            or PodMeta(uid, namespace, meta["name"], netns=netns, container_id=uid)
        )
        records = self._current(pod, netns, report)
        report.records = records
        try:
            selections = ann.parse_networks(annotations.get(keys.NETWORKS_KEY, ""))
            desired_default = self._desired_default(annotations, namespace)
        except ann.AnnotationError as err:
            raise PodError(str(err)) from err
        policy = podstatus.parse_switch_policy(annotations)
        now = time.time()
        current = [_as_current(r) for r in records]
        try:
            plan = plan_pod(selections, namespace, current, desired_default, now)
        except ann.AnnotationError as err:
            raise PodError(str(err)) from err
        by_if = {r.interface: r for r in records}
        stuck = set()
        for c in plan.detach:
            if not self.detach(pod, by_if[c.interface], report):
                stuck.add(c.interface)
        for want in plan.attach:
            if want.interface in stuck:
                # Its old attachment is still there (its DEL failed): an ADD would replace the
                # record that is the only way to release it. The retry comes back here.
                continue
            self.attach(pod, netns, want, by_if.get(want.interface), report)
        if plan.switch_to is not None:
            self.switch_default(pod, netns, plan, policy, report)
        for c in plan.drained:
            self.remove_previous_default(pod, netns, self.store.get(uid, c.interface), report)
        report.records = self.store.list_pod(uid)
        failed = [r for r in report.records if _failed(r)]
        retry = plan.retry_in
        for r in failed:
            delay = max(r.retry_at - time.time(), 0.5)
            retry = delay if retry is None else min(retry, delay)
        for r in report.records:
            if r.role == PREVIOUS_DEFAULT and r.drain_until is not None:
                delay = max(r.drain_until - time.time(), 0.1)
                retry = delay if retry is None else min(retry, delay)
        return retry

    def _desired_default(
        self, annotations: Mapping[str, str], namespace: str
    ) -> ann.NetworkRef | None:
        value = annotations.get(keys.DEFAULT_NETWORK_KEY)
        if value:
            return ann.parse_default_network(value, namespace)
        if self.cluster_net is not None:
            return ann.NetworkRef("", self.cluster_net.name)
        return None  # unknown cluster network: leave the default alone

    # -- NAD configs -----------------------------------------------------------

    def _conflist_or_none(self, ref: ann.NetworkRef) -> ConfList | None:
        try:
            return self.conflist(ref)
        except PodError:
            return None

    def conflist(self, ref: ann.NetworkRef) -> ConfList:
        if not ref.namespace:
            if self.cluster_net is not None and ref.name == self.cluster_net.name:
                return self.cluster_net
            raise PodError(f"cluster network {ref.name!r} is not known to this agent")
        nad = self.nads.get(f"{ref.namespace}/{ref.name}")
        if nad is None:
            raise PodError(
                f"NetworkAttachmentDefinition {ref} does not exist; create it or fix the annotation"
            )
        config = (nad.get("spec") or {}).get("config") or ""
        try:
            return load_conflist(config, fallback_name=ref.name)
        except CniError as err:
            raise PodError(f"NetworkAttachmentDefinition {ref} has a broken config: {err}") from err

    # -- actions ---------------------------------------------------------------

    def _runtime(
        self, pod: Mapping[str, Any], netns: str, ifname: str, sel: ann.NetworkSelection | None
    ) -> RuntimeConf:
        meta = pod["metadata"]
        return RuntimeConf(
            container_id=meta["uid"],
            netns=netns,
            ifname=ifname,
            args=k8s_cni_args(meta["namespace"], meta["name"], meta["uid"], meta["uid"]),
            capability_args=capability_args(sel) if sel else {},
            cni_args=(sel.cni_args_dict() or None) if sel else None,
        )

    def _new_record(
        self,
        pod: Mapping[str, Any],
        netns: str,
        want: ann.Attachment,
        previous: AttachmentRecord | None,
        **fields: Any,
    ) -> AttachmentRecord:
        meta = pod["metadata"]
        attempts = (previous.attempts if previous and previous.state == FAILED else 0) + 1
        return AttachmentRecord(
            pod_uid=meta["uid"],
            pod_namespace=meta["namespace"],
            pod_name=meta["name"],
            network=network_id(want.ref),
            interface=want.interface,
            state=ATTACHING,
            container_id=meta["uid"],
            netns=netns,
            selection=want.selection.to_json(),
            auto_named=want.auto_named,
            attempts=attempts,
            **fields,
        )

    def _plug(
        self,
        pod: Mapping[str, Any],
        rec: AttachmentRecord,
        sel: ann.NetworkSelection | None,
        fix_routes: Callable[[], object],
    ) -> tuple[AttachmentRecord, str]:
        """ADD, fix routes, verify; on failure roll back and record it. Returns (record, error)."""
        try:
            conflist = self.conflist(parse_network_id(rec.network))
            # Written before ADD: a crash from here on leaves a record to clean up, never a leak.
            rec = self.store.put(replace(rec, conflist=conflist.to_dict()))
            rt = self._runtime(pod, rec.netns, rec.interface, sel)
            result = self.cni.add(conflist, rt)
            rec = self.store.put(replace(rec, result=result))
            fix_routes()
            try:
                netlink.verify_interface(
                    rec.netns, rec.interface, result_ips(result, rec.interface)
                )
            except netlink.VerifyError:
                self.cni.delete(conflist, rt, result)
                raise
        except (CniError, netlink.VerifyError, PodError, OSError) as err:
            delay = backoff(rec.attempts)
            failed = self.store.put(
                replace(
                    rec, state=FAILED, result=None, message=str(err), retry_at=time.time() + delay
                )
            )
            return failed, f"{err} (attempt {rec.attempts}, retry in {delay:.0f}s)"
        return self.store.put(replace(rec, state=ATTACHED, message="", retry_at=0.0)), ""

    def attach(
        self,
        pod: Mapping[str, Any],
        netns: str,
        want: ann.Attachment,
        previous: AttachmentRecord | None,
        report: Report,
    ) -> AttachmentRecord:
        report.changed = True
        rec = self._new_record(pod, netns, want, previous)
        rec, error = self._plug(pod, rec, want.selection, lambda: self._fix_routes(netns, want))
        where = f"{want.ref}@{want.interface}"
        if error:
            record_event(self.kube, pod, "AttachFailed", f"{where}: {error}", "Warning", COMPONENT)
            log.warning("pod %s: attach %s failed: %s", _name(pod), where, error)
            return rec
        ips = ", ".join(result_ips(rec.result or {}, want.interface)) or "no address"
        record_event(
            self.kube,
            pod,
            "Attached",
            f"{want.ref} as {want.interface} ({ips})",
            "Normal",
            COMPONENT,
        )
        return rec

    def _fix_routes(self, netns: str, want: ann.Attachment) -> None:
        """Multi-net spec: only the element with default-route may take the default route.

        Checked on the link, not on the result: a plugin can add a default route
        that its result does not list (bridge with isDefaultGateway).
        """
        if want.selection.default_route:
            for gw in want.selection.default_route:
                netlink.set_default_route_via(netns, want.interface, gw)
        else:
            netlink.remove_default_routes_via(netns, want.interface)

    def detach(self, pod: Mapping[str, Any], rec: AttachmentRecord, report: Report) -> bool:
        """DEL with the exact config the ADD used; the record goes only once DEL succeeded."""
        report.changed = True
        if rec.state == FAILED:
            # A failed ADD was rolled back already; a DEL again is cheap and releases any leftovers.
            with contextlib.suppress(CniError, PodError):
                self._delete(rec)
            self.store.delete(rec.pod_uid, rec.interface)
            report.gone.add(rec.interface)
            return True
        attempts = rec.attempts + 1 if rec.state == DETACHING else 1
        rec = self.store.put(replace(rec, state=DETACHING, attempts=attempts))
        try:
            self._delete(rec)
        except (CniError, PodError) as err:
            delay = backoff(attempts)
            self.store.put(
                replace(rec, message=f"detach failed: {err}", retry_at=time.time() + delay)
            )
            record_event(
                self.kube,
                pod,
                "DetachFailed",
                f"{rec.network}@{rec.interface}: {err} (attempt {attempts}, retry in {delay:.0f}s)",
                "Warning",
                COMPONENT,
            )
            return False
        self.store.delete(rec.pod_uid, rec.interface)
        report.gone.add(rec.interface)
        record_event(
            self.kube, pod, "Detached", f"{rec.network} from {rec.interface}", "Normal", COMPONENT
        )
        return True

    def _delete(self, rec: AttachmentRecord) -> None:
        if rec.conflist:
            conflist = load_conflist(rec.conflist)
        elif rec.adopted:
            # Adopted without a known config (its NAD was gone): the current one is the best left.
            conflist = self.conflist(parse_network_id(rec.network))
        else:
            return  # its config could not be read, so its ADD never ran: nothing to undo
        pod = self.pod(rec.pod_uid)
        netns = rec.netns
        if pod is not None:
            with contextlib.suppress(NetnsError):
                netns = self.resolver.resolve(pod) or ""
        rt = RuntimeConf(
            container_id=rec.container_id or rec.pod_uid,
            netns=netns if netns and os.path.exists(netns) else "",
            ifname=rec.interface,
            args=k8s_cni_args(rec.pod_namespace, rec.pod_name, rec.pod_uid, rec.pod_uid),
        )
        self.cni.delete(conflist, rt, rec.result)
        if rt.netns:
            # Some plugins leave the link behind on DEL; an interface the pod no longer wants must go.
            # The namespace may vanish meanwhile (pod teardown): then its links are gone with it.
            with contextlib.suppress(netlink.NetnsNotFound):
                netlink.delete_link(rt.netns, rec.interface)

    def switch_default(
        self,
        pod: Mapping[str, Any],
        netns: str,
        plan: Plan,
        policy: podstatus.SwitchPolicy,
        report: Report,
    ) -> None:
        """Make-before-break: attach the new default, move the routes, then retire the old one."""
        assert plan.switch_to is not None and plan.switch_interface is not None
        meta = pod["metadata"]
        uid = meta["uid"]
        report.changed = True
        old = next((r for r in self.store.list_pod(uid) if r.role == DEFAULT), None)
        target = plan.switch_to
        meta_rec = self.store.get_pod_meta(uid) or PodMeta(uid)
        earlier = [netlink.SwitchRecord.from_json(raw) for raw in meta_rec.switches]
        if old is not None:
            # The same old interface keeps its table, so a switch redone after a crash is a no-op.
            used = {sw.table for sw in earlier}
            known = next((sw.table for sw in earlier if sw.old_ifname == old.interface), None)
            free = set(range(SOURCE_TABLE_BASE, SOURCE_TABLE_BASE + len(used) + 1)) - used
            table = known if known is not None else min(free)
            old_addrs = result_ips(old.result or {}, old.interface) or _iface_addrs(
                netns, old.interface
            )
            # Before the ADD: its plugin's default route wins the moment it is added.
            netlink.keep_source_routes(netns, old.interface, old_addrs, table)
        if plan.switch_reuses:
            new = self.store.get(uid, plan.switch_interface)
            assert new is not None
        else:
            sel = ann.NetworkSelection(
                name=target.name,
                namespace=target.namespace or None,
                interface=plan.switch_interface,
            )
            want = ann.Attachment(target, plan.switch_interface, sel, auto_named=True)
            # Attach without the route guard: this network is meant to carry the default.
            new = self._attach_default(pod, netns, want, report)
            if new.state != ATTACHED:
                return
        # An interface adopted from the runtime, or a kept old default, may have no gateway
        # in its result: then the default route it had before is the one to restore.
        gateways = result_gateways(new.result or {}, new.interface) or _old_gateways(
            earlier, new.interface
        )
        if not gateways:
            raise PodError(
                f"cannot make {new.interface} ({new.network}) the default network: its CNI "
                "result has no gateway and it never carried the default route here"
            )
        if old is not None:
            switch = netlink.switch_default_route(
                netns, new.interface, gateways, old.interface, old_addrs, table
            )
            # Source routing kept for the new default while it was an old one is obsolete now.
            for sw in earlier:
                if sw.old_ifname == new.interface:
                    netlink.remove_source_routes(netns, sw)
            kept = [
                sw.to_json()
                for sw in earlier
                if sw.old_ifname not in (old.interface, new.interface)
            ]
            self.store.put_pod_meta(replace(meta_rec, switches=[*kept, switch.to_json()]))
            drain = time.time() + policy.drain_seconds if policy.old_default == "Remove" else None
            self.store.put(replace(old, role=PREVIOUS_DEFAULT, is_default=False, drain_until=drain))
        else:
            for gw in gateways or [None]:  # type: ignore[list-item]
                netlink.set_default_route_via(netns, new.interface, gw)
        report.switched_at = now_rfc3339()
        # Kept with the record, not only in the pod's status: a status computed from a
        # watch cache that lags behind our own last patch must not lose it.
        self.store.put(
            replace(
                new,
                role=DEFAULT,
                is_default=True,
                drain_until=None,
                extra={**new.extra, "switched_at": report.switched_at},
            )
        )
        record_event(
            self.kube,
            pod,
            "DefaultNetworkSwitched",
            f"default network is now {network_id(target)} on {new.interface}"
            + (f" (was {old.network} on {old.interface}; {policy.old_default})" if old else ""),
            "Normal",
            COMPONENT,
        )

    def _attach_default(
        self, pod: Mapping[str, Any], netns: str, want: ann.Attachment, report: Report
    ) -> AttachmentRecord:
        previous = self.store.get(pod["metadata"]["uid"], want.interface)
        if previous is not None and previous.state == FAILED and time.time() < previous.retry_at:
            return previous
        rec = self._new_record(pod, netns, want, previous, role=INCOMING_DEFAULT)
        # Until the switch, the old default keeps the main table's default route.
        rec, error = self._plug(
            pod, rec, None, lambda: netlink.remove_default_routes_via(netns, want.interface)
        )
        if error:
            record_event(
                self.kube,
                pod,
                "DefaultSwitchFailed",
                f"new default {network_id(want.ref)}@{want.interface}: {error}; the old default stays",
                "Warning",
                COMPONENT,
            )
        return rec

    def remove_previous_default(
        self, pod: Mapping[str, Any], netns: str, rec: AttachmentRecord | None, report: Report
    ) -> None:
        if rec is None:
            return
        uid = rec.pod_uid
        meta_rec = self.store.get_pod_meta(uid)
        if meta_rec is not None:
            keep = []
            for raw in meta_rec.switches:
                sw = netlink.SwitchRecord.from_json(raw)
                if sw.old_ifname == rec.interface:
                    netlink.remove_source_routes(netns, sw)
                else:
                    keep.append(raw)
            self.store.put_pod_meta(replace(meta_rec, switches=keep))
        self.detach(pod, rec, report)

    def cleanup(self, uid: str, pod: Mapping[str, Any] | None) -> bool:
        """The pod is gone or finished: DEL every attachment the agent holds, so IPAM is released.

        True when nothing is left.
        """
        records = self.store.list_pod(uid)
        released = 0
        for rec in records:
            try:
                self._delete(rec)
            except (CniError, PodError) as err:
                log.warning("pod %s: DEL %s failed at clean-up: %s", uid, rec.interface, err)
                continue
            self.store.delete(uid, rec.interface)
            released += 1
        self.store.delete_pod(uid)
        if records:
            log.info("pod %s gone: released %d of %d attachment(s)", uid, released, len(records))
        return released == len(records)

    def release_all(self) -> int:
        """DEL every attachment in the records, for a node being taken down. Returns what is left."""
        left = 0
        for uid in self.store.pods():
            if not self.cleanup(uid, None):
                left += len(self.store.list_pod(uid))
        return left

    # -- reporting -------------------------------------------------------------

    def write_status(self, pod: Mapping[str, Any], report: Report) -> None:
        meta = pod["metadata"]
        annotations: Mapping[str, str] = meta.get("annotations") or {}
        records = report.records if report.records is not None else self.store.list_pod(meta["uid"])
        changes: dict[str, str | None] = {}
        entries = _merge_network_status(_network_status(pod), records, report.gone)
        new_status = ann.format_network_status(entries)
        if new_status != annotations.get(keys.NETWORK_STATUS_KEY):
            changes[keys.NETWORK_STATUS_KEY] = new_status
        pns = self._pod_status(annotations, records, report)
        old = podstatus.parse_status(annotations)
        if old is None or _comparable(old) != _comparable(pns):
            pns.updated_at = now_rfc3339()
            changes[keys.STATUS_KEY] = pns.to_json()
        if not changes:
            return
        try:
            patch_annotations(self.kube, pod_path(meta["namespace"], meta["name"]), changes)
        except ApiError as err:
            if err.status != 404:
                raise
        if report.problem:
            record_event(self.kube, pod, "InvalidNetworks", report.problem, "Warning", COMPONENT)

    def _pod_status(
        self, annotations: Mapping[str, str], records: list[AttachmentRecord], report: Report
    ) -> podstatus.PodNetStatus:
        old = podstatus.parse_status(annotations)
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
        failed = [r for r in records if _failed(r)]
        if report.problem:
            phase, message = keys.DEGRADED, report.problem
        elif failed:
            phase = keys.DEGRADED
            message = "; ".join(f"{r.network}@{r.interface}: {r.message}" for r in failed)
        elif any(r.state in (ATTACHING, DETACHING) for r in records):
            phase, message = keys.PROGRESSING, ""
        else:
            phase, message = keys.CONVERGED, ""
        return podstatus.PodNetStatus(
            observed=podstatus.desired_hash(annotations),
            phase=phase,
            attachments=atts,
            default_network=default.network if default else "",
            default_interface=default.interface if default else "",
            switched_at=report.switched_at
            or (str(default.extra.get("switched_at", "")) if default else "")
            or (old.switched_at if old else ""),
            message=message,
        )


@dataclass
class Report:
    changed: bool = False
    problem: str = ""
    switched_at: str = ""
    records: list[AttachmentRecord] | None = None
    # Interfaces no longer in the pod: their network-status entries go.
    gone: set[str] = field(default_factory=set)


def _as_current(r: AttachmentRecord) -> Current:
    return Current(
        ref=parse_network_id(r.network),
        interface=r.interface,
        state=r.state,
        role=r.role,
        auto_named=r.auto_named,
        key="" if r.adopted else selection_key(r.selection),
        retry_at=r.retry_at,
        drain_until=r.drain_until,
    )


def _failed(r: AttachmentRecord) -> bool:
    """An ADD that failed, or a DEL that failed (the attachment is still half there)."""
    return r.state == FAILED or (r.state == DETACHING and bool(r.message))


def _rfc3339(epoch: float) -> str:
    """When a record last changed; "" for records written before times were kept."""
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _name(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _network_status(pod: Mapping[str, Any]) -> list[ann.NetworkStatusEntry]:
    raw = (pod["metadata"].get("annotations") or {}).get(keys.NETWORK_STATUS_KEY, "")
    try:
        return ann.parse_network_status(raw)
    except ann.AnnotationError as err:
        log.warning("pod %s: unreadable network-status, rebuilding it: %s", _name(pod), err)
        return []


def _live_result(
    ifname: str, state: netlink.IfaceState, default_routes: list[netlink.Route]
) -> dict[str, Any]:
    """A CNI-shaped result read off the link, for an attachment someone else made.

    The gateway of a default route out of the link is kept: switching the
    default back to this interface later needs it.
    """
    gateways = {r.family: r.gateway for r in default_routes if r.ifname == ifname and r.gateway}
    ips: list[dict[str, Any]] = []
    for addr in state.addresses:
        entry: dict[str, Any] = {"address": addr, "interface": 0}
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if family in gateways:
            entry["gateway"] = gateways[family]
        ips.append(entry)
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": ifname, "mac": state.mac or "", "sandbox": "adopted"}],
        "ips": ips,
    }


def _old_gateways(switches: list[netlink.SwitchRecord], ifname: str) -> list[str]:
    """Gateways of the default routes `ifname` had when a switch made it an old default."""
    found: dict[int, str] = {}
    for sw in switches:
        if sw.old_ifname != ifname:
            continue
        for route in sw.routes:
            if route.dst in ("0.0.0.0/0", "::/0") and route.gateway:
                found.setdefault(route.family, route.gateway)
    return list(found.values())


def _iface_addrs(netns: str, ifname: str) -> list[str]:
    state = netlink.interface_state(netns, ifname)
    return state.addresses if state else []


def _merge_network_status(
    existing: list[ann.NetworkStatusEntry],
    records: list[AttachmentRecord],
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
        if rec.state != ATTACHED:
            continue
        prior = next((e for e in existing if e.interface == rec.interface), None)
        res = rec.result or {}
        entry = ann.NetworkStatusEntry(
            name=rec.network,
            interface=rec.interface,
            ips=[ip.split("/")[0] for ip in result_ips(res, rec.interface)]
            or (prior.ips if prior else []),
            mac=result_mac(res, rec.interface) or (prior.mac if prior else None),
            default=rec.role == DEFAULT,
            dns=(result_dns(res) or None) if not rec.adopted else (prior.dns if prior else None),
            extra=dict(prior.extra) if prior else {},
        )
        out.append(entry)
    return out


def _comparable(s: podstatus.PodNetStatus) -> str:
    return replace(s, updated_at="").to_json()
