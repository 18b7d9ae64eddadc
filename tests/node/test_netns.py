"""Finding a pod's network namespace: path templates, cgroups, CRI, chains.

The cgroup tests use the kernel for real wherever this machine allows it: a
real namespace, a real process inside it, real cgroup directories laid out the
way kubelet lays them out, on the cgroup v2 hierarchy and on a v1 controller
hierarchy when mounted. A layout the machine cannot mount (v1 controllers as
children of the root, next to a v2 root) is built as a plain directory tree
holding the real pid of a process in a real namespace.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.netns import (
    CgroupResolver,
    ChainResolver,
    NetnsError,
    NetnsResolver,
    PathTemplateResolver,
    Sandbox,
)
from support.netns import cgroup_mount, cgroup_tree, netns, netns_path, process_in_netns
from support.require import needs_node_host, require


def path_of(resolver: NetnsResolver, pod: dict[str, Any]) -> str | None:
    sandbox = resolver.resolve(pod)
    return sandbox.netns if sandbox else None


def make_pod(
    uid: str | None = None, namespace: str = "team-a", name: str = "web-0"
) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid or str(uuid.uuid4()), "namespace": namespace, "name": name},
        "spec": {},
    }


def same_ns(a: str, b: str) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@pytest.fixture
def pod_ns() -> Iterator[tuple[str, int]]:
    """A real namespace with a sleeping 'pause' process in it: (netns name, pid)."""
    with netns("nsr") as name, process_in_netns(name) as pid:
        yield name, pid


def systemd_pod_dir(uid: str, qos: str | None) -> str:
    under = uid.replace("-", "_")
    if qos is None:
        return f"kubepods.slice/kubepods-pod{under}.slice"
    return f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{under}.slice"


def cgroupfs_pod_dir(uid: str, qos: str | None) -> str:
    return f"kubepods/pod{uid}" if qos is None else f"kubepods/{qos}/pod{uid}"


# ----------------------------------------------------------------------------- path template


@needs_node_host
def test_path_template_finds_an_existing_namespace() -> None:
    with netns("nsp") as name:
        uid = name[3:]  # the template decides how a pod maps to a file name
        resolver = PathTemplateResolver("/var/run/netns/nsp{uid}")
        assert path_of(resolver, make_pod(uid)) == netns_path(name)
    assert path_of(resolver, make_pod(uid)) is None


def test_path_template_uses_namespace_and_name(tmp_path: Path) -> None:
    (tmp_path / "team-a_web-0").touch()
    resolver = PathTemplateResolver(str(tmp_path / "{namespace}_{name}"))
    assert path_of(resolver, make_pod()) == str(tmp_path / "team-a_web-0")
    assert path_of(resolver, make_pod(name="web-1")) is None


def test_path_template_with_unknown_fields_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\{uid\}, \{namespace\} and \{name\}"):
        PathTemplateResolver("/var/run/netns/{node}")


@pytest.mark.parametrize(
    "meta",
    [
        {"uid": "../../etc", "namespace": "a", "name": "b"},
        {"uid": "abc", "namespace": "A/B", "name": "b"},
        {"namespace": "a", "name": "b"},
    ],
)
def test_pods_with_unsafe_identity_are_refused(meta: dict[str, str], tmp_path: Path) -> None:
    resolver = PathTemplateResolver(str(tmp_path / "{namespace}-{uid}"))
    with pytest.raises(NetnsError, match="metadata"):
        path_of(resolver, {"metadata": meta})


# ----------------------------------------------------------------------------- cgroups, real


@needs_node_host
@pytest.mark.parametrize(
    ("layout", "qos"),
    [("systemd", "burstable"), ("systemd", None), ("cgroupfs", "besteffort"), ("cgroupfs", None)],
)
def test_cgroup_v2_finds_the_pause_process_namespace(
    pod_ns: tuple[str, int], layout: str, qos: str | None
) -> None:
    mount = cgroup_mount("cgroup2")
    if mount is None:
        require(False, "no cgroup2 hierarchy mounted")
    ns_name, pid = pod_ns
    uid = str(uuid.uuid4())
    top = f"netshift-test-{secrets.token_hex(4)}"
    pod_dir = systemd_pod_dir(uid, qos) if layout == "systemd" else cgroupfs_pod_dir(uid, qos)
    container = (
        f"cri-containerd-{secrets.token_hex(8)}.scope"
        if layout == "systemd"
        else secrets.token_hex(8)
    )
    with cgroup_tree(mount, f"{top}/{pod_dir}/{container}", pid):
        resolver = CgroupResolver(cgroup_root=os.path.join(mount, top))
        path = path_of(resolver, make_pod(uid))
        assert path == f"/proc/{pid}/ns/net"
        assert same_ns(path, netns_path(ns_name))
        assert path_of(resolver, make_pod()) is None  # another pod: no cgroup
    assert not os.path.exists(os.path.join(mount, top))


@needs_node_host
def test_cgroup_v1_controller_hierarchy_finds_the_namespace(pod_ns: tuple[str, int]) -> None:
    """Real v1: kubepods directly below the pids controller's root."""
    mount = cgroup_mount("cgroup", "pids")
    if mount is None:
        require(False, "no cgroup v1 pids hierarchy mounted")
    ns_name, pid = pod_ns
    uid = str(uuid.uuid4())
    top = f"netshift-test-{secrets.token_hex(4)}"
    with cgroup_tree(
        mount, f"{top}/{systemd_pod_dir(uid, 'besteffort')}/crio-{uid[:8]}.scope", pid
    ):
        path = path_of(CgroupResolver(cgroup_root=os.path.join(mount, top)), make_pod(uid))
        assert path is not None and same_ns(path, netns_path(ns_name))


@needs_node_host
@pytest.mark.parametrize("hierarchy", ["pids", "memory", "systemd", "unified"])
def test_cgroup_below_a_hierarchy_directory_is_found(
    pod_ns: tuple[str, int], tmp_path: Path, hierarchy: str
) -> None:
    """v1 and hybrid layouts (<root>/pids/kubepods/..., <root>/unified/...).

    Mounting v1 controllers beside this machine's hierarchies is not possible,
    so this tree is plain directories; the pid in it is a real process in a
    real namespace.
    """
    ns_name, pid = pod_ns
    uid = str(uuid.uuid4())
    leaf = tmp_path / hierarchy / cgroupfs_pod_dir(uid, "burstable") / secrets.token_hex(8)
    leaf.mkdir(parents=True)
    (leaf.parent / "cgroup.procs").write_text("")
    (leaf / "cgroup.procs").write_text(f"{pid}\n")
    path = path_of(CgroupResolver(cgroup_root=str(tmp_path)), make_pod(uid))
    assert path is not None and same_ns(path, netns_path(ns_name))


@needs_node_host
def test_nested_kubelet_cgroup_root_is_found(pod_ns: tuple[str, int], tmp_path: Path) -> None:
    """kind-style nesting: kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod<uid>.slice."""
    ns_name, pid = pod_ns
    uid = str(uuid.uuid4())
    pod = f"kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{uid.replace('-', '_')}.slice"
    leaf = tmp_path / pod / "cri-containerd-1.scope"
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text(f"{pid}\n")
    path = path_of(CgroupResolver(cgroup_root=str(tmp_path)), make_pod(uid))
    assert path is not None and same_ns(path, netns_path(ns_name))


@needs_node_host
def test_host_processes_and_dead_pids_are_skipped(pod_ns: tuple[str, int], tmp_path: Path) -> None:
    ns_name, pid = pod_ns
    uid = str(uuid.uuid4())
    pod = tmp_path / cgroupfs_pod_dir(uid, None)
    # a host-namespace process, a pid that no longer exists, then the pause process
    for name, content in (("aaa", f"{os.getpid()}\n"), ("bbb", "4194304\n"), ("ccc", f"{pid}\n")):
        (pod / name).mkdir(parents=True)
        (pod / name / "cgroup.procs").write_text(content)
    path = path_of(CgroupResolver(cgroup_root=str(tmp_path)), make_pod(uid))
    assert path is not None and same_ns(path, netns_path(ns_name))


@needs_node_host
def test_the_earliest_started_process_is_the_sandbox(
    pod_ns: tuple[str, int], tmp_path: Path
) -> None:
    """A container that made a namespace of its own does not hide the pod's."""
    ns_name, pause = pod_ns
    uid = str(uuid.uuid4())
    pod = tmp_path / systemd_pod_dir(uid, None)
    with netns("nsr") as other, process_in_netns(other) as late1, process_in_netns(other) as late2:
        for name, pids in (("app.scope", [late1, late2]), ("pause.scope", [pause])):
            (pod / name).mkdir(parents=True)
            (pod / name / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
        path = path_of(CgroupResolver(cgroup_root=str(tmp_path)), make_pod(uid))
        assert path == f"/proc/{pause}/ns/net"
        assert same_ns(path, netns_path(ns_name))


@needs_node_host
def test_a_namespace_off_limits_is_an_error_naming_the_capability(
    pod_ns: tuple[str, int], tmp_path: Path
) -> None:
    """Without CAP_SYS_PTRACE, /proc/<pid>/ns/net of a process holding more capabilities is
    EACCES: the resolver says what is missing instead of reporting "no namespace"."""
    _, pid = pod_ns
    uid = str(uuid.uuid4())
    leaf = tmp_path / cgroupfs_pod_dir(uid, None) / secrets.token_hex(8)
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text(f"{pid}\n")
    code = (
        "from agent.netns import CgroupResolver, NetnsError\n"
        "try:\n"
        f"    print(CgroupResolver(cgroup_root={str(tmp_path)!r}).resolve("
        f"{make_pod(uid)!r}))\n"
        "except NetnsError as err:\n"
        "    print('NetnsError:', err)\n"
    )
    # Root, as the agent runs, without CAP_SYS_PTRACE (dropped from the bounding set).
    done = subprocess.run(
        ["setpriv", "--bounding-set=-sys_ptrace", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("NetnsError:"), done.stdout
    assert f"/proc/{pid}/ns/net is not permitted" in done.stdout
    assert "needs CAP_SYS_PTRACE" in done.stdout
    # With it, the same resolver finds the namespace.
    assert path_of(CgroupResolver(cgroup_root=str(tmp_path)), make_pod(uid)) is not None


def test_host_network_pod_has_no_namespace_of_its_own(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    leaf = tmp_path / systemd_pod_dir(uid, None) / "cri-containerd-1.scope"
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text(f"{os.getpid()}\n")
    assert path_of(CgroupResolver(cgroup_root=str(tmp_path)), make_pod(uid)) is None


@needs_node_host
def test_cgroup_resolver_names_the_sandbox_by_its_container_cgroup(
    pod_ns: tuple[str, int], tmp_path: Path
) -> None:
    _, pid = pod_ns
    uid, sandbox_id = str(uuid.uuid4()), secrets.token_hex(32)
    leaf = tmp_path / systemd_pod_dir(uid, None) / f"cri-containerd-{sandbox_id}.scope"
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text(f"{pid}\n")
    found = CgroupResolver(cgroup_root=str(tmp_path)).resolve(make_pod(uid))
    assert found is not None and found.id == sandbox_id
    # A sandbox process in the pod's cgroup itself: no container id there, the pod UID is used.
    other = str(uuid.uuid4())
    pod_dir = tmp_path / cgroupfs_pod_dir(other, None)
    pod_dir.mkdir(parents=True)
    (pod_dir / "cgroup.procs").write_text(f"{pid}\n")
    found = CgroupResolver(cgroup_root=str(tmp_path)).resolve(make_pod(other))
    assert found is not None and found.id == other


def test_path_template_names_the_sandbox_by_the_pod_uid(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    (tmp_path / uid).touch()
    assert PathTemplateResolver(str(tmp_path / "{uid}")).resolve(make_pod(uid)) == Sandbox(
        uid, str(tmp_path / uid)
    )


def test_pod_without_cgroup_has_no_namespace(tmp_path: Path) -> None:
    (tmp_path / "kubepods.slice").mkdir()
    assert path_of(CgroupResolver(cgroup_root=str(tmp_path)), make_pod()) is None
    assert path_of(CgroupResolver(cgroup_root=str(tmp_path / "missing")), make_pod()) is None


def test_cgroup_created_after_the_first_scan_is_found(tmp_path: Path) -> None:
    resolver = CgroupResolver(cgroup_root=str(tmp_path))
    uid = str(uuid.uuid4())
    assert path_of(resolver, make_pod(uid)) is None
    leaf = tmp_path / "kubepods" / f"pod{uid}" / "c1"
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text(f"{os.getpid()}\n")
    # our own process is in the host namespace: found, but not a pod namespace
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(resolver, "_host_netns_id", lambda: (0, 0))
        assert path_of(resolver, make_pod(uid)) == f"/proc/{os.getpid()}/ns/net"


def test_unreadable_host_namespace_is_an_error(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    leaf = tmp_path / cgroupfs_pod_dir(uid, None)
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text("1\n")
    resolver = CgroupResolver(cgroup_root=str(tmp_path), host_netns=str(tmp_path / "nope"))
    with pytest.raises(NetnsError, match="host network namespace"):
        path_of(resolver, make_pod(uid))


# ----------------------------------------------------------------------------- CRI


# (the CRI resolver: tests/node/test_cri.py)


# ----------------------------------------------------------------------------- chain


class Fixed:
    def __init__(self, answer: str | Exception | None) -> None:
        self.answer = answer
        self.calls = 0

    def resolve(self, pod: Mapping[str, Any]) -> Sandbox | None:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return Sandbox("id" + self.answer, self.answer) if self.answer else None


def test_resolvers_satisfy_the_protocol() -> None:
    assert isinstance(PathTemplateResolver("/x/{uid}"), NetnsResolver)
    assert isinstance(CgroupResolver(), NetnsResolver)
    assert isinstance(ChainResolver([]), NetnsResolver)


def test_chain_returns_the_first_path() -> None:
    first, second, third = Fixed(None), Fixed("/a"), Fixed("/b")
    assert path_of(ChainResolver([first, second, third]), make_pod()) == "/a"
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


def test_chain_skips_a_failing_resolver_and_raises_only_if_nothing_found() -> None:
    failing = Fixed(NetnsError("runtime down"))
    assert path_of(ChainResolver([failing, Fixed("/b")]), make_pod()) == "/b"
    with pytest.raises(NetnsError, match="runtime down"):
        ChainResolver([failing, Fixed(None)]).resolve(make_pod())
    assert ChainResolver([Fixed(None), Fixed(None)]).resolve(make_pod()) is None
