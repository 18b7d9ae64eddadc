"""The real-node tier (markers `cluster` and `realnode`): the plane plus kubelet + containerd
+ Multus, netshift running as pods.

One per test session (only one real node can run on a machine: the kubelet owns the
kubepods cgroups), with a pod subnet and bridge of its own, apart from a developer's
`netshift up` (10.244.0.0/24) and from the node-simulator session's. Its tests run last
(tests/conftest.py). A missing prerequisite skips on a developer machine and fails in CI.
`real_cluster` is an IPv4 cluster; `dual_cluster` a dual-stack one, which replaces it for
the dual-stack tests, run after every other real-node test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from localcluster import realnode
from localcluster.cluster import LocalCluster
from localcluster.state import DUAL, IPV4
from netshift.kube import ApiError, Kube, has_default_service_account, wait_for
from support.realnode import diagnostics, webhook_serving
from support.require import node_prerequisites, plane_prerequisites, require

# Apart from every other range the tests and bench/ use (10.244-10.253).
REAL_POD_SUBNET = f"10.242.{os.getpid() % 250}.0/24"
REAL_BRIDGE = f"nsr{os.getpid() % 100000}"
REAL_POD_SUBNET6 = f"fd6e:7368:242:{os.getpid() % 250}::/64"  # a dual-stack session's


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.cluster)
    item.add_marker(pytest.mark.realnode)


class _MachineLock:
    """This session's turn on the machine's one real node (localcluster's lock), from before
    the first real-node test to the end of the real node."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.held = False
        self.error: TimeoutError | None = None  # waited too long: the fixture says so

    def take(self) -> None:
        if self.held or self.error is not None:
            return
        try:
            self._stack.enter_context(realnode.machine_lock())
        except TimeoutError as err:
            self.error = err
        else:
            self.held = True

    def release(self) -> None:
        self._stack.close()
        self.held = False


_LOCK = _MachineLock()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Wait for the machine's real node before the test that brings it up starts its clock:
    another session's turn on it is no part of this test's time limit."""
    if {"real_cluster", "dual_cluster"} & set(getattr(item, "fixturenames", ())):
        _LOCK.take()
    return (yield)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish() -> None:
    """After an interrupted run too: the session's fixtures are down by now."""
    _LOCK.release()


class _Clusters:
    """The session's real-node cluster: one at a time (one kubelet per machine), of one IP
    family. A test of the other family takes the running one down and brings its own up;
    tests/conftest.py runs the dual-stack tests last, so that happens once a run."""

    def __init__(self) -> None:
        self.family: str | None = None
        self.cluster: LocalCluster | None = None

    def get(self, family: str) -> LocalCluster:
        if self.cluster is not None and self.family == family:
            return self.cluster
        self.stop()
        node_prerequisites()
        plane_prerequisites()
        missing = realnode.missing_prerequisites()
        require(not missing, "real node: " + "; ".join(missing))
        _LOCK.take()  # taken already, before this test's clock started (above)
        if _LOCK.error is not None:
            raise _LOCK.error
        others = realnode.kubelet_pids()
        require(not others, f"another kubelet runs here (pid {others[:1]}): one real node")
        state = Path(tempfile.mkdtemp(prefix="netshift-real-"))
        c = LocalCluster(
            state,
            pod_subnet=REAL_POD_SUBNET,
            pod_subnet6=REAL_POD_SUBNET6 if family == DUAL else None,
            bridge=REAL_BRIDGE,
            node="real",
            ip_family=family,
        )
        self.family, self.cluster = family, c
        c.up(say=lambda _line: None)
        return c

    def stop(self) -> None:
        c, self.cluster, self.family = self.cluster, None, None
        if c is None:
            return
        try:
            crashed = c.crashed()
            assert not crashed, f"processes of the real-node test cluster crashed: {crashed}"
        finally:
            c.down(say=lambda _line: None)
            shutil.rmtree(c.state_dir, ignore_errors=True)


_CLUSTERS = _Clusters()


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[LocalCluster]:
    """The session's IPv4 real-node cluster."""
    try:
        yield _CLUSTERS.get(IPV4)
        if _CLUSTERS.family == IPV4:
            _CLUSTERS.stop()
    finally:
        with contextlib.suppress(Exception):
            if _CLUSTERS.family == IPV4:
                _CLUSTERS.stop()  # after a failed start or check: down, whatever happened
        _LOCK.release()


@pytest.fixture(scope="session")
def dual_cluster() -> Iterator[LocalCluster]:
    """The session's dual-stack real-node cluster (`netshift up --ip-family dual`): IPv4 and
    IPv6 pod subnets, Services of both families. It replaces the IPv4 one (see _Clusters)."""
    try:
        yield _CLUSTERS.get(DUAL)
        if _CLUSTERS.family == DUAL:
            _CLUSTERS.stop()
    finally:
        with contextlib.suppress(Exception):
            if _CLUSTERS.family == DUAL:
                _CLUSTERS.stop()
        _LOCK.release()


@pytest.fixture(scope="session")
def real_node(real_cluster: LocalCluster) -> realnode.RealNode:
    return real_cluster.single_node(realnode.RealNode)


@pytest.fixture(scope="session")
def real_kube(real_cluster: LocalCluster) -> Kube:
    return real_cluster.kube()


@pytest.fixture
def real_namespace(real_cluster: LocalCluster, real_kube: Kube) -> Iterator[str]:
    webhook_serving(real_cluster, real_kube)
    name = f"r-{uuid.uuid4().hex[:10]}"
    real_kube.create(
        "/api/v1/namespaces", {"metadata": {"name": name, "labels": {"netshift.io/test": "true"}}}
    )
    wait_for(
        lambda: has_default_service_account(real_kube, name), 30, what=f"ServiceAccount in {name}"
    )
    yield name
    with contextlib.suppress(ApiError):
        real_kube.delete(f"/api/v1/namespaces/{name}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, object]:
    """A failed real-node test carries the cluster's pods, events and netshift's logs."""
    report = yield
    # funcargs holds every fixture of the test's closure that was set up so far.
    funcargs = getattr(item, "funcargs", {})
    cluster = funcargs.get("real_cluster") or funcargs.get("dual_cluster")
    if report.failed and isinstance(cluster, LocalCluster):
        report.sections.append(("real-node diagnostics", diagnostics(cluster)))
    return report
