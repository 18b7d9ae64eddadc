"""The network-status entry of one attachment, from its CNI result (pure)."""

from __future__ import annotations

from typing import Any

from netshift.annotations import NetworkStatusEntry
from netshift.cni.status import network_status_entry

RESULT: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "br0", "mac": "aa:aa:aa:aa:aa:aa"},
        {"name": "net1", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/x"},
    ],
    "ips": [
        {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
        {"address": "fd00::5/64", "interface": 1},
        {"address": "10.9.9.9/24", "interface": 0},
    ],
    "dns": {"nameservers": ["10.96.0.10"]},
}


def test_the_entry_has_the_interface_addresses_without_prefix_mac_and_dns() -> None:
    entry = network_status_entry("apps/blue", "net1", RESULT, default=False)
    assert entry.to_json() == {
        "name": "apps/blue",
        "interface": "net1",
        "ips": ["10.1.0.5", "fd00::5"],
        "mac": "02:00:00:00:00:01",
        "dns": {"nameservers": ["10.96.0.10"]},
    }


def test_the_default_network_is_marked_default() -> None:
    entry = network_status_entry("netshift-cluster", "eth0", {}, default=True)
    assert entry.default and entry.to_json()["default"] is True


def test_no_result_gives_a_bare_entry_without_dns() -> None:
    entry = network_status_entry("apps/blue", "net1", None, default=False)
    assert entry.to_json() == {"name": "apps/blue", "interface": "net1"}


def test_what_the_result_leaves_out_is_kept_from_the_prior_entry_of_the_same_network() -> None:
    prior = NetworkStatusEntry(
        name="apps/blue",
        interface="net1",
        ips=["10.1.0.7"],
        mac="02:00:00:00:00:07",
        dns={"search": ["svc"]},
        extra={"device-info": {"type": "pci"}},
    )
    entry = network_status_entry("apps/blue", "net1", {}, default=False, prior=prior)
    assert entry.ips == ["10.1.0.7"] and entry.mac == "02:00:00:00:00:07"
    assert entry.dns == {"search": ["svc"]}
    assert entry.extra == {"device-info": {"type": "pci"}}


def test_the_result_wins_over_the_prior_entry() -> None:
    prior = NetworkStatusEntry(name="apps/blue", interface="net1", ips=["10.1.0.7"], mac="x")
    entry = network_status_entry("apps/blue", "net1", RESULT, default=False, prior=prior)
    assert entry.ips == ["10.1.0.5", "fd00::5"] and entry.mac == "02:00:00:00:00:01"


def test_a_prior_entry_of_another_network_lends_nothing() -> None:
    prior = NetworkStatusEntry(
        name="apps/red", interface="net1", ips=["10.2.0.7"], dns={"x": 1}, extra={"k": "v"}
    )
    entry = network_status_entry("apps/blue", "net1", {}, default=False, prior=prior)
    assert entry.to_json() == {"name": "apps/blue", "interface": "net1"}
