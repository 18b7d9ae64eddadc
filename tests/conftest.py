"""Shared fixtures: one real local control plane per test run, a fresh namespace per test.

The plane is real (etcd + kube-apiserver + controller-manager + scheduler built
from the pinned versions) plus the node simulator, the sanctioned stand-in for
kubelet + container runtime. In CI (CI=true) a missing prerequisite fails the
run; on a developer machine it skips the tests that need it, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import pytest
from agentutil import AgentProcess, Networks, networks_for_test, running_agent

from localcluster import binaries
from localcluster.cluster import LocalCluster
from netshift.kube import ApiError, Kube, has_default_service_account, wait_for

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The test cluster's pod network, apart from a developer's own `netshift up` (10.244.0.0/24)
# and from another test session running at the same time.
TEST_POD_SUBNET = f"10.245.{os.getpid() % 250}.0/24"
TEST_BRIDGE = f"nst{os.getpid() % 100000}"


def require(condition: bool, why: str) -> None:
    """Skip on a developer machine, fail in CI: every test must run there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}", pytrace=False)
    pytest.skip(why)


def node_prerequisites() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces)")
    require(os.path.isfile("/usr/lib/cni/bridge"), "needs containernetworking-plugins")
    require(shutil.which("ip") is not None, "needs iproute2")


def plane_prerequisites() -> None:
    """The pinned etcd and Kubernetes binaries of the control plane."""
    try:
        for name in binaries.NAMES:
            binaries.find(name)
    except binaries.MissingBinary as err:
        require(False, str(err))


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    node_prerequisites()
    plane_prerequisites()
    state = Path(tempfile.mkdtemp(prefix="netshift-test-"))
    c = LocalCluster(state, pod_subnet=TEST_POD_SUBNET, bridge=TEST_BRIDGE)
    try:
        c.up(services=["nodesim"], say=lambda _line: None)
        yield c
        crashed = c.crashed()
        assert not crashed, f"processes of the test cluster crashed: {crashed}"
    finally:
        c.down(say=lambda _line: None)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> Kube:
    return cluster.kube()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.create(
        "/api/v1/namespaces",
        {"metadata": {"name": name, "labels": {"netshift.io/test": "true"}}},
    )

    wait_for(
        lambda: has_default_service_account(kube, name),
        30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    with contextlib.suppress(ApiError):
        kube.delete(f"/api/v1/namespaces/{name}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test that uses the cluster (directly or through `kube`, `namespace`, ...)
    without the `cluster` marker, so that `-m "not cluster"` never starts a control plane.

    The real-node tests run last, together: the session's real node (and the machine's
    one-real-node lock) is taken only for the end of the run, not next to the other tiers;
    and of those, the ones that take the node down and up again (`restarts_node`) last.
    """
    items.sort(
        key=lambda item: (
            "real_cluster" in getattr(item, "fixturenames", ()),
            item.get_closest_marker("restarts_node") is not None,
        )
    )
    unmarked = [
        item.nodeid
        for item in items
        if {"cluster", "real_cluster"} & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("cluster") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the cluster fixture but are not marked "
            "@pytest.mark.cluster:\n  " + "\n  ".join(unmarked)
        )


# The real-node cluster (kubelet + containerd + Multus, netshift as pods): its fixtures.
from realnodeutil import (  # noqa: E402
    diagnostics,
    real_cluster,  # noqa: F401
    real_kube,  # noqa: F401
    real_namespace,  # noqa: F401
    real_node,  # noqa: F401
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """A failed real-node test carries the cluster's pods, events and netshift's logs."""
    outcome = yield
    report = outcome.get_result()
    # funcargs holds every fixture of the test's closure that was set up so far.
    cluster = getattr(item, "funcargs", {}).get("real_cluster")
    if report.failed and isinstance(cluster, LocalCluster):
        report.sections.append(("real-node diagnostics", diagnostics(cluster)))


# -- the node agent as a process, for the agent's cluster tests ----------------------------


@pytest.fixture(scope="module")
def agent(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """One `netshift agent` per test module (a module may bring its own, e.g. with more plugins)."""
    with running_agent(cluster, tmp_path_factory.mktemp("agent")) as proc:
        yield proc


@pytest.fixture
def nets(
    request: pytest.FixtureRequest,
    kube: Kube,
    namespace: str,
    agent: AgentProcess,
    tmp_path: Path,
) -> Iterator[Networks]:
    """The test's NADs, each on its own bridge, subnet and IPAM dataDir; removed afterwards."""
    with networks_for_test(request, kube, namespace, agent, tmp_path) as networks:
        yield networks
