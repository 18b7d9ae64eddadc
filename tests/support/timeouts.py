"""Every test's time limit (pytest-timeout), so that a hung test fails in minutes instead of
holding CI to its 90-minute limit.

A test's limit is its tier's unless it carries a larger one by name,
`pytestmark = pytest.mark.timeout(timeouts.SWITCH_LAB)` (a marker wins over the tier's).
A limit counts the test's set-up and tear-down too: a module fixture's start-up (a
private containerd) is inside the tier's limit; the test that brings a session cluster up
and the last test of the run (which takes them down) get that time on top
(tests/conftest.py adds it). Waiting for the machine's real-node lock, held by another
session, is not counted (tests/realnode/conftest.py takes it before the clock starts).

The slowest healthy times, measured with `pytest --durations=0` on the shared 2-core
machine under a load of 5 to 10: unit 14 s (a hypothesis fuzz test); node 75 s (the
switch lab; a private containerd's start, 72 s); cluster 36 s (the switch labs: 176 s;
the first test, control plane and a private containerd: 130 s); real node 31 s (its
start: 43 s; its stop: 8 s). Each limit is several times that, because a limit must
never fail a slow but healthy test: speed is bench/'s business, not a test's. Under a
load of 25 the unit fuzz test took 90 s, past a 60 s limit, and the timeout's signal,
landing inside the test client's portal, failed the next tests of the module with
"cannot wait on un-acquired lock": the unit limit is the others' now.
"""

from __future__ import annotations

import pytest

# Seconds, by tier.
UNIT = 300
NODE = 300
CLUSTER = 300
REALNODE = 300

# Named larger limits, for the tests that need them.
SWITCH_LAB = 900  # 4 pods switched 20 times under 10 ms pings and TCP streams, per family

# What the first test that uses it also waits for: a session cluster coming up.
SESSION_SETUP = {
    "cluster": 300,  # etcd, apiserver, controller-manager, scheduler, node simulator
    "real_cluster": 600,  # the plane, containerd, kubelet, Multus, netshift's pods, images
}
# What the last test of the run also waits for: every session cluster going down.
SESSION_TEARDOWN = 300


def tier_limit(item: pytest.Item) -> float:
    """The limit of the tier `item` is in (by its marker)."""
    for marker, limit in (("realnode", REALNODE), ("cluster", CLUSTER), ("node", NODE)):
        if item.get_closest_marker(marker) is not None:
            return limit
    return UNIT
