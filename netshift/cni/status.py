"""The network-status entry of one attachment, built from its CNI result (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netshift.annotations import NetworkStatusEntry
from netshift.cni.results import result_dns, result_ips, result_mac

__all__ = ["network_status_entry"]


def network_status_entry(
    network: str,
    interface: str,
    result: Mapping[str, Any] | None,
    default: bool,
    prior: NetworkStatusEntry | None = None,
) -> NetworkStatusEntry:
    """The `k8s.v1.cni.cncf.io/network-status` entry for `network` attached as `interface`.

    Addresses (without prefix length), MAC and DNS come from the CNI `result`.
    `prior` is the entry the interface had before: when it names the same
    network, what the result does not say (no address, no MAC, no DNS — e.g. a
    result read off a link someone else made) is kept from it, and so are the
    fields this model does not know (``extra``), so that rewriting the
    annotation never drops another writer's details.
    """
    res = result or {}
    same = prior if prior is not None and prior.name == network else None
    return NetworkStatusEntry(
        name=network,
        interface=interface,
        ips=[ip.split("/")[0] for ip in result_ips(res, interface)] or (same.ips if same else []),
        mac=result_mac(res, interface) or (same.mac if same else None),
        default=default,
        dns=result_dns(res) or (same.dns if same else None),
        extra=dict(same.extra) if same else {},
    )
