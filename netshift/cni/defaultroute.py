"""Will a network give a pod a default route? Judged from its CNI config, before any ADD (pure).

A default network is one whose CNI result carries a default route (0.0.0.0/0 or
::/0): the agent installs exactly the routes a result gives and refuses a switch
to a network whose result has none (`netshift.cni.results.result_default_routes`).
`netshift plan` warns before that, from the config alone:

- ``bridge`` with ``isDefaultGateway: true`` puts a default route via its
  gateway into the result;
- the IPAM plugins that take their routes from the config (``host-local``,
  ``static``, ``whereabouts``) give a default route when ``ipam.routes`` has
  a 0.0.0.0/0 or ::/0 destination;
- the interface plugins that get their routes only from their IPAM (``bridge``,
  ``ptp``, ``macvlan``, ``ipvlan``, ``host-device``, ``vlan``, ``tap``,
  ``dummy``) and the chained plugins that leave routes alone (``tuning``,
  ``portmap``, ``bandwidth``, ``firewall``) add nothing else.

What the config cannot tell: the answer of an IPAM server (``dhcp``), what any
other plugin returns (Calico, Cilium, flannel, OVN-Kubernetes, ... and chained
plugins that move routes, like ``sbr``), a network defined per node whose conf
file is not readable from where the plan runs (and each node's file may say
otherwise), and whether the ADD succeeds at all. Those are UNKNOWN: the agent
decides at the switch, from the result.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from netshift.cni.config import ConfList

__all__ = ["NO", "UNKNOWN", "YES", "DefaultRoute", "judge_default_route"]

YES: Final = "yes"
NO: Final = "no"
UNKNOWN: Final = "unknown"

_CONFIG_ROUTED_IPAM = frozenset({"host-local", "static", "whereabouts"})
_IPAM_ROUTED_PLUGINS = frozenset(
    {"bridge", "ptp", "macvlan", "ipvlan", "host-device", "vlan", "tap", "dummy"}
)
_ROUTE_NEUTRAL_CHAINED = frozenset({"tuning", "portmap", "bandwidth", "firewall"})


@dataclass(frozen=True)
class DefaultRoute:
    verdict: str  # YES, NO or UNKNOWN
    why: str  # which field says so, or what cannot be known


def _is_default(dst: Any) -> bool:
    try:
        return isinstance(dst, str) and ipaddress.ip_network(dst, strict=False).prefixlen == 0
    except ValueError:
        return False


def _ipam_defaults(ipam: Mapping[str, Any]) -> list[str]:
    routes = ipam.get("routes")
    if not isinstance(routes, list):
        return []
    return [str(r["dst"]) for r in routes if isinstance(r, Mapping) and _is_default(r.get("dst"))]


def judge_default_route(conflist: ConfList) -> DefaultRoute:
    """Whether an ADD of `conflist` will give the pod a default route, and why."""
    gives: list[str] = []
    unknown: list[str] = []
    for index, plugin in enumerate(conflist.plugins):
        kind = str(plugin.get("type", ""))
        where = f"plugins[{index}] ({kind})"
        ipam = plugin.get("ipam")
        if isinstance(ipam, Mapping) and ipam:
            ipam_type = str(ipam.get("type", ""))
            if ipam_type in _CONFIG_ROUTED_IPAM:
                for dst in _ipam_defaults(ipam):
                    gives.append(f"{where}.ipam.routes has {dst}")
            else:
                unknown.append(f"{where}.ipam is {ipam_type!r}: its routes come from its answer")
        if kind == "bridge" and plugin.get("isDefaultGateway") is True:
            gives.append(f"{where}.isDefaultGateway is true")
        if kind not in _IPAM_ROUTED_PLUGINS and kind not in _ROUTE_NEUTRAL_CHAINED:
            unknown.append(f"{where}: what its result carries is up to the plugin")
    if gives:
        return DefaultRoute(YES, "; ".join(gives))
    if unknown:
        return DefaultRoute(UNKNOWN, "; ".join(unknown))
    return DefaultRoute(
        NO,
        "no plugin gives one: no bridge with isDefaultGateway, no 0.0.0.0/0 or ::/0 in ipam.routes",
    )
