"""A default network's routes: what its CNI result gives (none invented), and what its config
predicts before any ADD (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.plan import not_a_default_network, switch_routes
from netshift.cni.config import load_conflist
from netshift.cni.defaultroute import NO, UNKNOWN, YES, judge_default_route
from netshift.cni.results import result_default_routes


def result(ips: list[dict[str, Any]], routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "veth0"}, {"name": "net2", "sandbox": "/var/run/netns/x"}],
        "ips": [{**ip, "interface": 1} for ip in ips],
    }
    if routes is not None:
        out["routes"] = routes
    return out


# What host-local gives a bridge without isGateway and without routes: a gateway, no route.
STORAGE = result([{"address": "10.252.0.5/24", "gateway": "10.252.0.1"}])


def test_a_gateway_without_a_default_route_is_no_default_route() -> None:
    assert result_default_routes(STORAGE, "net2") == {}
    assert switch_routes(STORAGE, "net2") == {}


def test_a_default_route_without_gw_goes_via_the_address_gateway_as_the_plugins_install_it() -> (
    None
):
    res = result([{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}], [{"dst": "0.0.0.0/0"}])
    assert result_default_routes(res, "net2") == {4: "10.1.0.1"}


def test_the_routes_own_gw_wins_and_the_first_default_of_a_version_counts() -> None:
    res = result(
        [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
        [{"dst": "10.9.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.1.0.254"}, {"dst": "0/0"}],
    )
    assert result_default_routes(res, "net2") == {4: "10.1.0.254"}


def test_each_version_has_its_own_default_and_a_route_without_any_gateway_is_a_device_route() -> (
    None
):
    res = result(
        [{"address": "fd00::5/64", "gateway": "fd00::1"}, {"address": "10.1.0.5/24"}],
        [{"dst": "::/0"}, {"dst": "0.0.0.0/0"}],
    )
    assert result_default_routes(res, "net2") == {6: "fd00::1", 4: None}


def test_a_reused_interface_without_routes_in_its_result_gets_the_default_it_had() -> None:
    live = result([{"address": "10.244.0.7/16"}])  # an adopted eth0: its live view
    assert switch_routes(live, "net2", ("10.244.0.1",)) == {4: "10.244.0.1"}
    assert switch_routes(live, "net2") == {}


def test_the_refusal_says_why_and_what_would_make_it_a_default_network() -> None:
    message = not_a_default_network("shop/storage", "net2", STORAGE)
    assert message.startswith(
        "shop/storage is not a default network: the CNI result for net2 has no default route "
        "(routes: none) (its gateway 10.252.0.1 alone is not a route), so net2 was released"
    )
    assert "isDefaultGateway" in message and "0.0.0.0/0" in message


def bridge(**fields: Any) -> dict[str, Any]:
    return {"type": "bridge", "bridge": "br0", **fields}


def host_local(**fields: Any) -> dict[str, Any]:
    return {"type": "host-local", "ranges": [[{"subnet": "10.252.0.0/24"}]], **fields}


def judge(*plugins: dict[str, Any]) -> tuple[str, str]:
    verdict = judge_default_route(
        load_conflist({"cniVersion": "1.0.0", "name": "n", "plugins": list(plugins)})
    )
    return verdict.verdict, verdict.why


@pytest.mark.parametrize(
    ("plugins", "verdict", "why"),
    [
        ([bridge(isDefaultGateway=True, ipam=host_local())], YES, "isDefaultGateway is true"),
        (
            [bridge(ipam=host_local(routes=[{"dst": "0.0.0.0/0"}]))],
            YES,
            "plugins[0] (bridge).ipam.routes has 0.0.0.0/0",
        ),
        ([{"type": "ptp", "ipam": host_local(routes=[{"dst": "::/0"}])}], YES, "has ::/0"),
        (
            [bridge(isGateway=False, ipam=host_local()), {"type": "portmap"}],
            NO,
            "no plugin gives one",
        ),
        ([bridge(isGateway=True, ipam=host_local(routes=[{"dst": "10.0.0.0/8"}]))], NO, ""),
        ([{"type": "macvlan", "ipam": {"type": "dhcp"}}], UNKNOWN, "'dhcp'"),
        ([{"type": "calico", "ipam": {"type": "calico-ipam"}}], UNKNOWN, "up to the plugin"),
        (
            [bridge(ipam=host_local()), {"type": "sbr"}],
            UNKNOWN,
            "plugins[1] (sbr): what its result carries is up to the plugin",
        ),
    ],
)
def test_the_config_predicts_the_default_route_or_says_it_cannot(
    plugins: list[dict[str, Any]], verdict: str, why: str
) -> None:
    got, text = judge(*plugins)
    assert got == verdict
    assert why in text
