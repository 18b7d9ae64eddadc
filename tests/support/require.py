"""Prerequisites: a missing one skips the test on a developer machine and fails it in CI.

CI (CI=true) must run every test, so there a missing prerequisite is an error in the
set-up; on a developer machine the test is skipped, saying what it needs. Every test
that needs something of the machine asks through `require()`, never `pytest.skip`.
"""

from __future__ import annotations

import os
import shutil
from typing import Literal, NoReturn, overload

import pytest

from localcluster import binaries

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CNI_DIR = "/usr/lib/cni"


# `require(False, why)` never returns, and the type checker knows it.
@overload
def require(condition: Literal[False], why: str) -> NoReturn: ...
@overload
def require(condition: bool, why: str) -> None: ...
def require(condition: bool, why: str) -> None:
    """Skip on a developer machine, fail in CI: every test must run there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}", pytrace=False)
    pytest.skip(why)


def node_prerequisites() -> None:
    """Root (network namespaces), iproute2 and the CNI plugins: what a node test needs."""
    require(os.geteuid() == 0, "needs root (network namespaces)")
    require(os.path.isfile(os.path.join(CNI_DIR, "bridge")), "needs containernetworking-plugins")
    require(shutil.which("ip") is not None, "needs iproute2")


def plane_prerequisites() -> None:
    """The pinned etcd and Kubernetes binaries of the control plane."""
    try:
        for name in binaries.NAMES:
            binaries.find(name)
    except binaries.MissingBinary as err:
        require(False, str(err))


# A node-tier test that needs root, iproute2 and the CNI plugins: it uses the fixture
# `node_host` of tests/node/conftest.py, which requires them (and a test outside that
# tier that uses it is refused at collection).
needs_node_host = pytest.mark.usefixtures("node_host")
