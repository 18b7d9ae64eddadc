"""The node tier (marker `node`): root, real network namespaces and the real CNI plugins.

A test that needs them uses the fixture `node_host` (`@needs_node_host`, or through a
fixture of its own that asks for it); the tier's pure tests (config parsing, the CRI
client against a stand-in runtime) run anywhere.
"""

from __future__ import annotations

import pytest

from support.require import node_prerequisites


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.node)


@pytest.fixture
def node_host() -> None:
    """Root, iproute2 and the CNI plugins: skip on a developer machine, fail in CI."""
    node_prerequisites()
