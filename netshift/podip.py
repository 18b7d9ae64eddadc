"""The reported pod IP after `oldDefault: Remove`: which new networks can carry it (pure).

Kubernetes learns a pod's IP only when its sandbox is created, so after a switch
`status.podIPs` still names the old default's addresses, and the kubelet's probes,
EndpointSlices (kube-proxy) and NetworkPolicies keep using them until the pod is
deleted. A Remove therefore *retires* the old default instead of releasing it: its
interface goes, but each reported address is carried by the new default network
(the address as a /32 or /128 on the new default interface, and a route on the node
for it via the pod's new address), and the old network's CNI DEL, which returns the
address to its IPAM pool, waits until the pod is gone.

That needs a new network whose host side is the node itself, routing by
destination without checking which source addresses it assigned:

- `bridge` (and `flannel`, which delegates to it): the node reaches the pod through
  the bridge; the route names the pod's new address as the gateway.
- `ptp`: the node reaches the pod through its host-side veth.

It cannot work where the node does not route the pod's traffic, or where the network
drops sources it did not assign; such a Remove is refused (the old default is kept,
a Warning says why, and `netshift plan` exits non-zero before the profile is applied).
Plugins that are neither listed as carriers nor as refused are refused too: nobody
checked that they route an extra address.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

# The first plugin of a list makes the interface; the others (portmap, tuning, bandwidth,
# firewall, ...) chain on it and do not change how the node reaches the pod.
CARRIERS: Mapping[str, str] = {
    "bridge": "the node routes the address to the pod through the bridge",
    "ptp": "the node routes the address to the pod through its host-side veth",
    "flannel": "flannel delegates to bridge: the node routes it through the bridge",
}

REFUSED: Mapping[str, str] = {
    "macvlan": "the node cannot reach a macvlan pod through the parent link",
    "ipvlan": "the node cannot reach an ipvlan pod through the parent link",
    "host-device": "the interface is a host device moved into the pod; the node has no side",
    "sriov": "an SR-IOV VF has no side on the node to route the address through",
    "vlan": "the pod's VLAN link bypasses the node's routing",
    "calico": "Calico drops traffic from addresses its IPAM did not assign (anti-spoofing)",
    "cilium-cni": "Cilium drops traffic from addresses it did not assign (source checks)",
    "ovn-k8s-cni-overlay": "OVN port security drops addresses the port was not given",
    "antrea": "Antrea's spoof guard drops addresses the port was not given",
}


def main_plugin(conflist: Mapping[str, Any]) -> str:
    """The type of the plugin that makes the interface: the first of a list, or a single conf's."""
    plugins = conflist.get("plugins")
    if isinstance(plugins, list) and plugins and isinstance(plugins[0], Mapping):
        return str(plugins[0].get("type", ""))
    return str(conflist.get("type", ""))


def nad_main_plugin(nad: Mapping[str, Any]) -> str:
    """The main plugin type of a NetworkAttachmentDefinition object ("" when unreadable)."""
    try:
        config = json.loads((nad.get("spec") or {}).get("config") or "{}")
    except (ValueError, TypeError):
        return ""
    return main_plugin(config) if isinstance(config, Mapping) else ""


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def carry_problem(plugin: str, reported: Collection[str], new_ips: Sequence[str]) -> str:
    """Why the new default network (its main plugin, its addresses in the pod) cannot carry the
    reported addresses; "" when it can.

    Each reported address needs an address of its family on the new network: the node's
    route for it goes via the pod's new address.
    """
    if plugin not in CARRIERS:
        why = REFUSED.get(plugin, f"netshift does not know how {plugin or 'it'!r} routes")
        return (
            f"its network's plugin {plugin or '(none)'!r} cannot carry the pod IP Kubernetes "
            f"reports: {why} (carriers: {', '.join(sorted(CARRIERS))})"
        )
    families = {_family(ip.split("/")[0]) for ip in new_ips}
    missing = sorted(ip for ip in reported if _family(ip) not in families)
    if missing:
        return (
            f"the new default network has no IPv{_family(missing[0])} address to route "
            f"{', '.join(missing)} through"
        )
    return ""


def reported_addresses(old_ips: Sequence[str], pod_ips: Collection[str]) -> tuple[str, ...]:
    """The old default's addresses (no prefix) that Kubernetes reports as the pod's IPs."""
    return tuple(ip for ip in (a.split("/")[0] for a in old_ips) if ip in pod_ips)
