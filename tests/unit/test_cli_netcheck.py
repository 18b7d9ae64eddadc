"""`netshift plan` judges the networks a profile gives pods: per-node definitions and whether a
default network gives a default route (pure: cli.netcheck over a profile plan)."""

from __future__ import annotations

import json
from typing import Any

from cli.netcheck import (
    MISSING,
    PER_NODE,
    SPEC_CONFIG,
    NodeFile,
    UsedNetwork,
    check_networks,
    used_networks,
)
from controller.profileplan import plan_apply
from netshift.cni.defaultroute import NO, UNKNOWN, YES
from support.builders import profile_object
from support.controller import NOW, pods, snapshot


def bridge(name: str, *, default_route: bool, gateway: bool = False) -> str:
    ipam: dict[str, Any] = {"type": "host-local", "ranges": [[{"subnet": "10.252.0.0/24"}]]}
    if default_route:
        ipam["routes"] = [{"dst": "0.0.0.0/0"}]
    plugin = {"type": "bridge", "bridge": "br-x", "isGateway": gateway, "ipam": ipam}
    return json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]})


def used(default: str, networks: list[dict[str, Any]] | None = None) -> list[UsedNetwork]:
    obj = profile_object("blue", labels={"team": "a"}, default=default, networks=networks)
    return used_networks(plan_apply(obj, snapshot([], pods(2)), NOW))


def test_the_networks_used_are_listed_by_role_and_namespace() -> None:
    got = used("fast", [{"name": "side"}, {"name": "shared", "namespace": "infra"}])
    assert got == [
        UsedNetwork("infra/shared", False, ("ns1", "ns2")),
        UsedNetwork("ns1/fast", True, ("ns1",)),
        UsedNetwork("ns1/side", False, ("ns1",)),
        UsedNetwork("ns2/fast", True, ("ns2",)),
        UsedNetwork("ns2/side", False, ("ns2",)),
    ]


def test_a_default_network_without_a_default_route_is_a_problem() -> None:
    (check,) = check_networks(
        [UsedNetwork("ns1/storage", True, ("ns1",))],
        {"ns1/storage": bridge("storage", default_route=False)},
        {},
    )
    assert (check.defined_by, check.route) == (SPEC_CONFIG, NO)
    assert check.problems == (
        "ns1/storage is not a default network (its spec.config gives no default route: no "
        "plugin gives one: no bridge with isDefaultGateway, no 0.0.0.0/0 or ::/0 in "
        "ipam.routes); the agent would refuse the switch and keep the old default",
    )


def test_the_same_network_as_a_secondary_one_is_fine() -> None:
    (check,) = check_networks(
        [UsedNetwork("ns1/storage", False, ("ns1",))],
        {"ns1/storage": bridge("storage", default_route=False)},
        {},
    )
    assert check.route == "" and check.problems == ()


def test_a_default_route_in_the_config_is_no_problem() -> None:
    (check,) = check_networks(
        [UsedNetwork("ns1/fast", True, ("ns1",))],
        {"ns1/fast": bridge("fast", default_route=True)},
        {},
    )
    assert check.route == YES and check.problems == ()


def test_a_per_node_network_is_judged_by_each_readable_nodes_file() -> None:
    files = {
        "nodenet": [
            NodeFile("n1", "/d/30-nodenet.conflist", bridge("nodenet", default_route=True)),
            NodeFile("n2", "/d/30-nodenet.conflist", bridge("nodenet", default_route=False)),
        ]
    }
    (check,) = check_networks(
        [UsedNetwork("ns1/nodenet", True, ("ns1",))], {"ns1/nodenet": ""}, files
    )
    assert check.defined_by == PER_NODE and check.route == NO
    assert check.why.startswith("node n2: no plugin gives one")
    assert check.problems == (
        "ns1/nodenet is not a default network (node n2's /d/30-nodenet.conflist gives no "
        "default route: no plugin gives one: no bridge with isDefaultGateway, no 0.0.0.0/0 or "
        "::/0 in ipam.routes); the agent would refuse the switch and keep the old default",
    )


def test_a_node_without_the_file_is_a_problem_even_for_a_secondary_network() -> None:
    missing = "no conf file 'nodenet' on node n1 (/d): ..."
    (check,) = check_networks(
        [UsedNetwork("ns1/nodenet", False, ("ns1",))],
        {"ns1/nodenet": ""},
        {"nodenet": [NodeFile("n1", error=missing)]},
    )
    assert check.problems == (f"ns1/nodenet: {missing}",)


def test_a_per_node_default_network_with_no_readable_node_is_unknown_not_a_problem() -> None:
    (check,) = check_networks([UsedNetwork("ns1/nodenet", True, ("ns1",))], {"ns1/nodenet": ""}, {})
    assert check.route == UNKNOWN and check.problems == ()
    assert "no node's conf dir is readable from here" in check.why


def test_a_missing_nad_is_left_to_the_missing_nads_list() -> None:
    (check,) = check_networks([UsedNetwork("ns1/gone", True, ("ns1",))], {}, {})
    assert check.defined_by == MISSING and check.problems == ()
