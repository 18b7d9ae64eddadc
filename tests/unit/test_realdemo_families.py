"""The demo's networks, NADs and table in the cluster's IP families (pure, no cluster).

On an IPv4 cluster the demo is what it always was; on a dual-stack one every network has
an IPv6 range too and the table a row per pod and family, each with that family's
default route before and after and that address's counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localcluster import realdemo
from localcluster.demokit import bridge_nad
from localcluster.topology import V4, V6


def test_on_an_ipv4_cluster_the_demo_networks_have_ipv4_alone() -> None:
    topo = realdemo.topology([V4])
    assert [s.families for s in topo.bridges.values()] == [[V4], [V4]]
    assert topo.routed is not None and topo.routed.families == [V4]
    assert topo.strict == frozenset(topo.bridges)
    nad = bridge_nad("ns", "old-cni", "nsdemo-old", "10.251.1.0/24", Path("/ipam"))
    ipam = json.loads(nad["spec"]["config"])["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.251.1.0/24"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}]


def test_on_a_dual_stack_cluster_every_demo_network_has_both_families() -> None:
    topo = realdemo.topology([V4, V6])
    for subnet in [*topo.bridges.values(), topo.routed]:
        assert subnet is not None and subnet.families == [V4, V6]
    cidrs = [s.cidr(V6) for s in topo.bridges.values()]
    assert cidrs == ["fd6e:7368:251:1::/64", "fd6e:7368:251:2::/64"]
    nad = bridge_nad("ns", "new-cni", "nsdemo-new", ["10.251.2.0/24", cidrs[1]], Path("/ipam"))
    ipam = json.loads(nad["spec"]["config"])["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.251.2.0/24"}], [{"subnet": cidrs[1]}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]


def _view(container: str, routes: dict[int, str]) -> realdemo.PodView:
    return realdemo.PodView(
        name="web-1",
        uid="0123456789",
        ips=["10.251.1.5", "fd6e:7368:251:1::5"],
        restarts=0,
        container=container,
        default_routes=routes,
    )


def test_the_table_has_a_row_per_pod_and_family_and_any_loss_fails_the_verdict() -> None:
    before = _view(
        "c1",
        {V4: "default via 10.251.1.1 dev eth0", V6: "default via fd6e:7368:251:1::1 dev eth0"},
    )
    after = _view(
        "c1",
        {V4: "default via 10.251.2.1 dev net1", V6: "default via fd6e:7368:251:2::1 dev net1"},
    )
    uid, v4, v6 = before.uid, before.ips[0], before.ips[1]
    alive = {"alive": True}
    host_pings: dict[tuple[str, str], tuple[int, list[int]]] = {
        (uid, v4): (500, []),
        (uid, v6): (510, []),
    }
    seen: dict[str, Any] = {
        "host_pings": host_pings,
        "pod_pings": {(uid, v4): (480, []), (uid, v6): (490, [])},
        "streams": {(uid, v4): alive, (uid, v6): alive},
    }
    rows, ok = realdemo.rows_and_verdict({uid: before}, {uid: after}, seen)
    assert ok
    assert rows == [
        (
            "web-1",
            "01234567",
            "0->0",
            "same",
            "IPv4",
            "via 10.251.1.1 dev eth0 -> via 10.251.2.1 dev net1",
            "500/0",
            "480/0",
            "alive",
        ),
        (
            "",
            "",
            "",
            "",
            "IPv6",
            "via fd6e:7368:251:1::1 dev eth0 -> via fd6e:7368:251:2::1 dev net1",
            "510/0",
            "490/0",
            "alive",
        ),
    ]
    host_pings[(uid, v6)] = (510, [77])
    rows, ok = realdemo.rows_and_verdict({uid: before}, {uid: after}, seen)
    assert not ok and rows[1][6] == "510/1"
    still = _view("c1", {**after.default_routes, V6: before.default_routes[V6]})
    host_pings[(uid, v6)] = (510, [])
    assert not realdemo.rows_and_verdict({uid: before}, {uid: still}, seen)[1]
