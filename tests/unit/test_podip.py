"""Which new default networks can carry the pod IP Kubernetes reports after a Remove (pure)."""

from __future__ import annotations

import pytest

from netshift.podip import CARRIERS, REFUSED, carry_problem, main_plugin, reported_addresses


def test_the_main_plugin_is_the_first_of_a_list_or_a_single_confs_type() -> None:
    chain = {"plugins": [{"type": "ptp"}, {"type": "portmap"}, {"type": "bandwidth"}]}
    assert main_plugin(chain) == "ptp"
    assert main_plugin({"type": "macvlan", "master": "eth0"}) == "macvlan"
    assert main_plugin({}) == ""


@pytest.mark.parametrize("plugin", sorted(CARRIERS))
def test_bridge_ptp_and_flannel_carry_the_pod_ip(plugin: str) -> None:
    assert carry_problem(plugin, ["10.244.0.7"], ["10.250.0.3/24"]) == ""
    assert carry_problem(plugin, ["10.244.0.7", "fd00::7"], ["10.250.0.3", "fd01::3"]) == ""


@pytest.mark.parametrize("plugin", sorted(REFUSED))
def test_networks_the_node_does_not_route_or_that_filter_sources_are_refused(plugin: str) -> None:
    why = carry_problem(plugin, ["10.244.0.7"], ["10.250.0.3"])
    assert repr(plugin) in why and REFUSED[plugin] in why


def test_an_unknown_plugin_is_refused_and_the_carriers_are_named() -> None:
    why = carry_problem("kube-ovn", ["10.244.0.7"], ["10.250.0.3"])
    assert "does not know" in why and "bridge, flannel, ptp" in why


def test_each_reported_address_needs_a_new_address_of_its_family() -> None:
    why = carry_problem("bridge", ["10.244.0.7", "fd00::7"], ["10.250.0.3"])
    assert "no IPv6 address" in why and "fd00::7" in why
    assert "no IPv4 address" in carry_problem("ptp", ["10.244.0.7"], ["fd01::3"])


def test_only_the_addresses_kubernetes_reports_count() -> None:
    assert reported_addresses(["10.244.0.7/24", "fd00::7/64"], {"10.244.0.7"}) == ("10.244.0.7",)
    assert reported_addresses(["10.244.0.7/24"], set()) == ()
