"""The tiers of the suite, one folder each, and the rules that hold across them.

- tests/unit/: pure, no root, no cluster (no marker).
- tests/node/: root, real network namespaces, the real CNI plugins (marker `node`).
- tests/cluster/: the real local control plane plus the node simulator (marker `cluster`).
- tests/realnode/: the real node, kubelet + containerd + Multus (markers `cluster`, `realnode`).

Each folder's conftest.py marks its tests and holds its fixtures; what they share is in
tests/support/. Here: a test that uses a tier's fixtures without being in that tier is
refused at collection (so `pytest -m "not cluster"` never starts a control plane); the
real-node tests run last; and every test gets its time limit (support/timeouts.py).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from support import timeouts

# The session fixtures that bring a tier up, by the marker a test needs to use them
# (directly or through another fixture: the names are looked for in the closure).
TIER_FIXTURES = {
    "node": ("node_host",),
    "cluster": ("cluster", "kube", "namespace", "real_cluster"),
    "realnode": ("real_cluster", "real_kube", "real_namespace", "real_node", "dual_cluster"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test that uses a tier's fixtures without the tier's marker; give every test
    its time limit; run the real-node tests last.

    The real-node tests run last, together: the session's real node (and the machine's
    one-real-node lock) is taken only for the end of the run, not next to the other tiers;
    and of those, the ones that take the node down and up again (`restarts_node`) after
    the others, and the dual-stack ones (`dual_cluster`, which replaces the session's IPv4
    real node with a dual-stack one) at the very end.
    """
    misplaced = [
        f"{item.nodeid} (uses {', '.join(used)}: needs the `{marker}` marker of its tier)"
        for item in items
        for marker, names in TIER_FIXTURES.items()
        if (used := [n for n in names if n in getattr(item, "fixturenames", ())])
        and item.get_closest_marker(marker) is None
    ]
    if misplaced:
        raise pytest.UsageError(
            "these tests use the fixtures of a tier they are not in (put each in the tier's "
            "folder, tests/node, tests/cluster or tests/realnode):\n  " + "\n  ".join(misplaced)
        )
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(timeouts.tier_limit(item)))
    items.sort(
        key=lambda item: (
            item.get_closest_marker("realnode") is not None,
            "dual_cluster" in getattr(item, "fixturenames", ()),
            item.get_closest_marker("restarts_node") is not None,
        )
    )


_brought_up: set[str] = set()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """The test that brings a session fixture up (the control plane, the real node) waits for
    it within its own limit, and the last test of the run takes every cluster down within
    its own: their limits grow by that much (support/timeouts.py). This runs before
    pytest-timeout reads the limit (tryfirst: the outermost wrapper)."""
    extra = 0.0
    for fixture, seconds in timeouts.SESSION_SETUP.items():
        if fixture in getattr(item, "fixturenames", ()) and fixture not in _brought_up:
            _brought_up.add(fixture)
            extra += seconds
    if nextitem is None:
        extra += timeouts.SESSION_TEARDOWN
    marker = item.get_closest_marker("timeout")
    if extra and marker is not None:
        item.add_marker(pytest.mark.timeout(float(marker.args[0]) + extra), append=False)
    return (yield)
