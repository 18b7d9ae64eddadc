"""`netshift demo` on the real node: real containers behind a Service, switched live.

The same code `make demo` runs (localcluster/realdemo.py), on the session's real-node
cluster: the webhook injects at creation, the profile's switch rolls out while pings
(routed, and from a container), TCP streams and Service requests run, and nothing is
lost, restarted or leaked.
"""

from __future__ import annotations

from localcluster import realdemo
from localcluster.cluster import LocalCluster


def test_the_demo_switches_real_pods_behind_a_service_without_loss(
    real_cluster: LocalCluster,
) -> None:
    lines: list[str] = []
    ok = realdemo.run(real_cluster, pods=3, keep=False, say=lines.append)
    out = "\n".join(lines)
    print(out)  # the demo's table, for `pytest -s`
    assert "default-network=netshift-demo/old-cni" in out, out
    assert "verdict: same pods, same containers, no restart" in out, out
    assert ", 0 failed; from container client-0" in out and out.rstrip().count(" 0 failed") >= 2, (
        out
    )
    assert "host-local holds 0 address(es)" in out, out
    assert ok, out
