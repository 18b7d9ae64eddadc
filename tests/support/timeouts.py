"""Every test's time limit (pytest-timeout), so that a hung test fails in minutes instead of
holding CI to its 90-minute limit.

A test's limit is its tier's unless it carries a larger one by name:
`@pytest.mark.timeout(timeouts.X)` (the marker wins over the tier's). A limit counts the
test's set-up and tear-down too; the test that brings a session fixture up (the control
plane, the real node) and the last test of the run (which takes them down) get the
time that costs on top (tests/conftest.py adds it). Waiting for the machine's real-node
lock is not counted (tests/realnode/conftest.py takes it before the clock starts).

The figures: measured with `pytest --durations=0` on the 2-core machine while other
sessions loaded it; every limit is several times the slowest healthy time it covers,
because a limit must never fail a slow but healthy test (speed is bench/'s business).
"""

from __future__ import annotations

import pytest

# Seconds.
UNIT = 60
NODE = 120
CLUSTER = 300
REALNODE = 600

# What the first test that needs it also waits for: the session's cluster coming up.
SESSION_SETUP = {
    "cluster": 300,  # etcd, apiserver, controller-manager, scheduler, node simulator
    "real_cluster": 900,  # the plane, containerd, kubelet, Multus, netshift's pods, cold
}
# What the last test also waits for: every session cluster going down.
SESSION_TEARDOWN = 300


def tier_limit(item: pytest.Item) -> float:
    """The limit of the tier `item` is in (by its marker)."""
    for marker, limit in (("realnode", REALNODE), ("cluster", CLUSTER), ("node", NODE)):
        if item.get_closest_marker(marker) is not None:
            return limit
    return UNIT
