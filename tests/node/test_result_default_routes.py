"""What the real plugins put in their results, read as a default network's routes.

The agent installs exactly the default routes a result gives
(`netshift.cni.results.result_default_routes`) and refuses a new default whose
result gives none; this checks that reading against the Debian plugins' real
results, and the config verdict `netshift plan` gives for the same configs.
Addresses in 10.99.0.0/16, ipMasq off.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netshift.cni.config import RuntimeConf, load_conflist
from netshift.cni.defaultroute import NO, YES, judge_default_route
from netshift.cni.executor import CniExecutor
from netshift.cni.results import result_default_routes, result_gateways
from support.builders import unique
from support.netns import host_link_cleanup, host_local_allocations, netns, netns_path
from support.require import CNI_DIR, needs_node_host


def _ipam(data_dir: Path, routes: list[dict[str, str]] | None = None) -> dict[str, Any]:
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": f"10.99.{secrets.randbelow(200) + 20}.0/24"}]],
        "dataDir": str(data_dir),
    }
    if routes is not None:
        ipam["routes"] = routes
    return ipam


Plugin = Callable[[Path, str], dict[str, Any]]
CASES: dict[str, tuple[Plugin, str, bool]] = {
    # The issue's `storage`: a bridge that is no gateway, no routes in its IPAM.
    "storage": (
        lambda d, br: {"type": "bridge", "bridge": br, "isGateway": False, "ipam": _ipam(d)},
        NO,
        False,
    ),
    "bridge-default-gw": (
        lambda d, br: {
            "type": "bridge",
            "bridge": br,
            "isGateway": True,
            "isDefaultGateway": True,
            "ipMasq": False,
            "ipam": _ipam(d),
        },
        YES,
        True,
    ),
    "ptp-ipam-route": (
        lambda d, br: {"type": "ptp", "ipMasq": False, "ipam": _ipam(d, [{"dst": "0.0.0.0/0"}])},
        YES,
        True,
    ),
}


@needs_node_host
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_results_default_route_is_what_the_plugin_gives_and_the_config_predicted_it(
    case: str, tmp_path: Path
) -> None:
    make, verdict, has_default = CASES[case]
    bridge = unique("nsrr")
    config = {"cniVersion": "1.0.0", "name": case, "plugins": [make(tmp_path, bridge)]}
    conflist = load_conflist(config)
    assert judge_default_route(conflist).verdict == verdict
    cni = CniExecutor([CNI_DIR])
    with netns("nsrr") as ns, host_link_cleanup(bridge):
        rt = RuntimeConf("c-" + secrets.token_hex(4), netns_path(ns), "net1")
        result = cni.add(conflist, rt)
        try:
            routes = result_default_routes(result, "net1")
            (gateway,) = result_gateways(result, "net1")  # host-local names one in every case
            assert routes == ({4: gateway} if has_default else {}), result
        finally:
            cni.delete(conflist, rt, result)
    assert host_local_allocations(str(tmp_path)) == []
