"""The cluster tier (marker `cluster`): one real local control plane per test run, a fresh
namespace per test.

The plane is real (etcd + kube-apiserver + controller-manager + scheduler built from
the pinned versions) plus the node simulator, the stand-in for kubelet + container
runtime + Multus. A missing prerequisite skips on a developer machine and fails in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.cluster import LocalCluster
from netshift.kube import ApiError, Kube, has_default_service_account, wait_for
from support.agent import AgentProcess, Networks, networks_for_test, running_agent
from support.require import node_prerequisites, plane_prerequisites

# The test cluster's pod network, apart from a developer's own `netshift up` (10.244.0.0/24)
# and from another test session running at the same time.
TEST_POD_SUBNET = f"10.245.{os.getpid() % 250}.0/24"
TEST_BRIDGE = f"nst{os.getpid() % 100000}"


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.cluster)


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
