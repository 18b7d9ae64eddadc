"""Observe one pod: its annotations, the agent's records of it, the links in its netns.

Reads only. What to do about what it sees (adopt, release, re-plug) is the
planner's decision; the `Observation` carries what the executor needs besides.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent import netlink
from agent.netns import Sandbox, same_namespace
from agent.plan import Current, EarlierSwitch, Seen, parse_network_id, selection_key
from netshift import annotations as ann
from netshift import keys
from netshift.attachments import AttachmentRecord, PodMeta
from netshift.cni.results import result_ips
from netshift.pod import Pod
from netshift.podip import main_plugin
from netshift.records import RecordStore

log = logging.getLogger("netshift.agent")


@dataclass(frozen=True)
class Observation:
    pod: Pod
    netns: str
    sandbox_id: str  # CNI_CONTAINERID of what the agent attaches (the runtime's sandbox id)
    records: tuple[AttachmentRecord, ...]
    links: Mapping[str, netlink.IfaceState]
    default_routes: tuple[netlink.Route, ...]
    network_status: tuple[ann.NetworkStatusEntry, ...]
    pod_meta: PodMeta | None
    switches: tuple[netlink.SwitchRecord, ...]
    netns_aliases: frozenset[str] = frozenset()  # recorded paths of this same namespace
    node_reaches: frozenset[str] | None = None  # see Seen.node_reaches
    node_soliciting: frozenset[str] = frozenset()  # see Seen.node_soliciting

    def seen(self) -> Seen:
        """The planner's view of it."""
        return Seen(
            current=[as_current(r) for r in self.records],
            network_status=self.network_status,
            links=frozenset(self.links),
            switches=[earlier_switch(sw) for sw in self.switches],
            sandbox=self.sandbox_id,
            netns=self.netns,
            netns_aliases=self.netns_aliases,
            addresses={
                name: [a.split("/")[0] for a in state.addresses]
                for name, state in self.links.items()
            },
            sandbox_since=(
                self.pod_meta.sandbox_since
                if self.pod_meta is not None and self.pod_meta.container_id == self.sandbox_id
                else None
            ),
            pod_ips=frozenset(self.pod.pod_ips),
            node_reaches=self.node_reaches,
            node_soliciting=self.node_soliciting,
        )


def observe(
    pod: Pod, sandbox: Sandbox, store: RecordStore, host_netns: str = netlink.HOST_NETNS
) -> Observation:
    netns = sandbox.netns
    records = tuple(store.list_pod(pod.uid))
    links = {i.name: i for i in netlink.list_interfaces(netns)}
    entries = tuple(network_status(pod))
    held = {r.interface for r in records}
    # Default routes matter only for interfaces someone else attached (their gateways).
    unheld = any(e.interface and e.interface not in held for e in entries)
    meta = store.get_pod_meta(pod.uid)
    reaches, soliciting = _node_paths(records, host_netns)
    aliases = frozenset(
        r.netns for r in records if r.netns and r.netns != netns and same_namespace(r.netns, netns)
    )
    return Observation(
        pod=pod,
        netns=netns,
        sandbox_id=sandbox.id,
        records=records,
        links=links,
        default_routes=tuple(netlink.default_routes(netns)) if unheld else (),
        network_status=entries,
        pod_meta=meta,
        switches=tuple(netlink.SwitchRecord.from_json(raw) for raw in meta.switches)
        if meta
        else (),
        netns_aliases=aliases,
        node_reaches=reaches,
        node_soliciting=soliciting,
    )


def _node_paths(
    records: tuple[AttachmentRecord, ...], host_netns: str
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """When an old default may go: which of the default's addresses the node routes to, and
    which of those its link cannot solicit neighbours for yet (netlink.node_soliciting)."""
    if not any(r.role == keys.PREVIOUS_DEFAULT and r.drain_until is not None for r in records):
        return None, frozenset()
    default = next((r for r in records if r.role == keys.DEFAULT), None)
    if default is None:
        return None, frozenset()
    ips = result_ips(default.result or {}, default.interface)
    try:
        return (
            frozenset(netlink.node_reaches(host_netns, ips)),
            frozenset(netlink.node_soliciting(host_netns, ips)),
        )
    except OSError:
        return None, frozenset()


def network_status(pod: Pod) -> list[ann.NetworkStatusEntry]:
    raw = pod.annotations.get(keys.NETWORK_STATUS_KEY, "")
    try:
        return ann.parse_network_status(raw)
    except ann.AnnotationError as err:
        log.warning("pod %s: unreadable network-status, rebuilding it: %s", pod.key, err)
        return []


def as_current(r: AttachmentRecord) -> Current:
    return Current(
        ref=parse_network_id(r.network),
        interface=r.interface,
        state=r.state,
        role=r.role,
        auto_named=r.auto_named,
        key="" if r.adopted else selection_key(r.selection),
        attempts=r.attempts,
        retry_at=r.retry_at,
        message=r.message,
        drain_until=r.drain_until,
        sandbox=r.container_id,
        netns=r.netns,
        adopted=r.adopted,
        ips=tuple(ip.split("/")[0] for ip in result_ips(r.result or {}, r.interface)),
        plugin=main_plugin(r.conflist),
        carried_on=str(r.extra.get("carried_on", "")),
    )


def earlier_switch(sw: netlink.SwitchRecord) -> EarlierSwitch:
    gateways: dict[int, str] = {}
    for route in sw.routes:
        if route.dst in ("0.0.0.0/0", "::/0") and route.gateway:
            gateways.setdefault(route.family, route.gateway)
    return EarlierSwitch(sw.old_ifname, sw.table, tuple(gateways.values()))


def live_result(obs: Observation, ifname: str) -> dict[str, Any]:
    """A CNI-shaped result read off the link, for an attachment someone else made.

    The gateway of a default route out of the link is kept: switching the
    default back to this interface later needs it.
    """
    state = obs.links[ifname]
    gateways = {r.family: r.gateway for r in obs.default_routes if r.ifname == ifname and r.gateway}
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
