"""Readers of CNI results (pure): addresses, gateways, MAC, MTU, routes, DNS of one interface."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

# --------------------------------------------------------------------------- results
#
# Results of 0.3.x, 0.4.0 and 1.x share one shape: interfaces[{name, mac,
# sandbox, mtu?}], ips[{address, gateway?, interface?}] (0.3.x/0.4.0 add a
# "version"), routes[{dst, gw?}], dns{}. The readers below tolerate missing
# or malformed parts and return what is usable.


def result_interfaces(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    interfaces = result.get("interfaces")
    if not isinstance(interfaces, list):
        return []
    return [i if isinstance(i, dict) else {} for i in interfaces]


def _sandbox_interface_index(result: Mapping[str, Any], ifname: str) -> int | None:
    interfaces = result_interfaces(result)
    for index, iface in enumerate(interfaces):
        if iface.get("name") == ifname and iface.get("sandbox"):
            return index
    # Some plugins leave "sandbox" out; a name match is the next best thing.
    for index, iface in enumerate(interfaces):
        if iface.get("name") == ifname:
            return index
    return None


def _ip_entries(result: Mapping[str, Any], ifname: str | None) -> list[dict[str, Any]]:
    ips = result.get("ips")
    if not isinstance(ips, list):
        return []
    wanted = None if ifname is None else _sandbox_interface_index(result, ifname)
    out: list[dict[str, Any]] = []
    for entry in ips:
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            continue
        index = entry.get("interface")
        # wanted is a valid index into interfaces (or None, matching nothing).
        if ifname is None or index is None or (wanted is not None and index == wanted):
            out.append(entry)
    return out


def result_ips(result: Mapping[str, Any], ifname: str | None = None) -> list[str]:
    """CIDRs of the ips on the sandbox interface ``ifname`` (ips without an index count too)."""
    return [str(e["address"]) for e in _ip_entries(result, ifname)]


def result_gateways(result: Mapping[str, Any], ifname: str | None = None) -> list[str]:
    return [
        str(e["gateway"]) for e in _ip_entries(result, ifname) if isinstance(e.get("gateway"), str)
    ]


def result_mac(result: Mapping[str, Any], ifname: str) -> str | None:
    index = _sandbox_interface_index(result, ifname)
    if index is None:
        return None
    mac = result_interfaces(result)[index].get("mac")
    return mac if isinstance(mac, str) and mac else None


def result_mtu(result: Mapping[str, Any], ifname: str) -> int | None:
    index = _sandbox_interface_index(result, ifname)
    if index is None:
        return None
    mtu = result_interfaces(result)[index].get("mtu")
    return mtu if isinstance(mtu, int) and mtu > 0 else None


def result_routes(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Routes as given ({"dst", "gw"?, and 1.1's optional extras}); entries without dst dropped."""
    routes = result.get("routes")
    if not isinstance(routes, list):
        return []
    return [dict(r) for r in routes if isinstance(r, dict) and isinstance(r.get("dst"), str)]


def result_dns(result: Mapping[str, Any]) -> dict[str, Any]:
    dns = result.get("dns")
    return dict(dns) if isinstance(dns, dict) else {}


def _is_default_dst(dst: str) -> int | None:
    """4 or 6 when `dst` is a default destination (0.0.0.0/0, ::/0), else None."""
    try:
        net = ipaddress.ip_network(dst, strict=False)
    except ValueError:
        return None
    return net.version if net.prefixlen == 0 else None


def result_default_routes(result: Mapping[str, Any], ifname: str) -> dict[int, str | None]:
    """The default route of each IP version (4, 6) that the result gives interface `ifname`.

    As the plugins install a result's routes (ipam.ConfigureIface): a route's own
    ``gw``, else the gateway of the interface's first address of that version that
    has one, else none (a device route: the value is None). The first default route
    of a version counts. Empty: the result gives no default route at all, which an
    address's gateway alone does not make (host-local names one for every range).
    """
    gateways: dict[int, str] = {}
    for entry in _ip_entries(result, ifname):
        gw = entry.get("gateway")
        if isinstance(gw, str) and gw:
            gateways.setdefault(6 if ":" in gw else 4, gw)
    routes: dict[int, str | None] = {}
    for route in result_routes(result):
        version = _is_default_dst(str(route["dst"]))
        if version is None or version in routes:
            continue
        gw = route.get("gw")
        routes[version] = gw if isinstance(gw, str) and gw else gateways.get(version)
    return routes
