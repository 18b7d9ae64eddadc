"""Find the network namespace of a pod.

Resolvers map a Pod object (as a dict) to its current :class:`Sandbox`: the
sandbox's identity (the id the runtime and Multus give CNI as CNI_CONTAINERID)
and the path of its network namespace, or ``None`` when the pod has none (yet,
or anymore). Several strategies exist because nodes differ: a path template
for runtimes that name their namespace files predictably (the node simulator:
the sandbox id is the pod UID), the pod's cgroup (works with any runtime, needs
the host's /proc and cgroup tree; the id is the sandbox container's cgroup
name), the CRI runtime over its socket (gRPC, cached per sandbox).
``ChainResolver`` tries several in order.

A resolver raises :class:`NetnsError` when it cannot answer (misconfigured,
runtime unreachable) as opposed to "no namespace", which is ``None``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agent.cri import NAMESPACE_NODE, SANDBOX_READY, CriClient, CriError

__all__ = [
    "CgroupResolver",
    "ChainResolver",
    "CriResolver",
    "NetnsError",
    "NetnsResolver",
    "PathTemplateResolver",
    "Sandbox",
    "pod_identity",
    "same_namespace",
]

log = logging.getLogger("netshift.agent.netns")

# Pod UIDs are UUIDs; anything else is refused before it reaches a path or a command line.
_UID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z\-]*$")
_DNS_RE = re.compile(r"^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$")
# A container id as runtimes make them (containerd, CRI-O, Docker: 64 hex digits).
_CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")


class NetnsError(Exception):
    """A resolver could not tell where a pod's namespace is."""


@dataclass(frozen=True)
class Sandbox:
    """A pod's sandbox: its id (CNI_CONTAINERID, K8S_POD_INFRA_CONTAINER_ID) and netns path.

    A recreated sandbox has a new id and a new namespace; the path of one
    sandbox never changes.
    """

    id: str
    netns: str


@runtime_checkable
class NetnsResolver(Protocol):
    def resolve(self, pod: Mapping[str, Any]) -> Sandbox | None:
        """The pod's current sandbox, or None if it has no network namespace of its own."""
        ...


def same_namespace(a: str, b: str) -> bool:
    """Whether two paths name the same network namespace (both must exist)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def pod_identity(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    """(uid, namespace, name) of a pod object, checked to be safe in paths and arguments."""
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        raise NetnsError("pod object has no metadata")
    uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
    if not isinstance(uid, str) or not _UID_RE.match(uid):
        raise NetnsError(f"pod has no usable metadata.uid: {uid!r}")
    if not isinstance(namespace, str) or not _DNS_RE.match(namespace):
        raise NetnsError(f"pod has no usable metadata.namespace: {namespace!r}")
    if not isinstance(name, str) or not _DNS_RE.match(name):
        raise NetnsError(f"pod has no usable metadata.name: {name!r}")
    return uid, namespace, name


class PathTemplateResolver:
    """Namespaces kept at a predictable path, e.g. ``/var/run/netns/netshift-{uid}``.

    The template may use ``{uid}``, ``{namespace}`` and ``{name}``.
    """

    def __init__(self, template: str) -> None:
        try:
            template.format(uid="u", namespace="n", name="p")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"netns path template {template!r} is invalid ({err}); "
                "it may use only {uid}, {namespace} and {name}"
            ) from None
        self.template = template

    def resolve(self, pod: Mapping[str, Any]) -> Sandbox | None:
        uid, namespace, name = pod_identity(pod)
        path = self.template.format(uid=uid, namespace=namespace, name=name)
        # No runtime to name the sandbox: the pod UID is its id (as the node simulator uses).
        return Sandbox(uid, path) if os.path.exists(path) else None

    def __repr__(self) -> str:
        return f"PathTemplateResolver({self.template!r})"


class CgroupResolver:
    """From the pod's cgroup (as kubelet lays it out) to a process in the pod's namespace.

    Both cgroup drivers (cgroupfs: ``kubepods/[burstable|besteffort/]pod<uid>``;
    systemd: ``kubepods.slice/kubepods[-<qos>.slice/kubepods-<qos>]-pod<uid_>.slice``)
    and both cgroup versions (v2 unified at the root or at ``unified/``, v1
    under a controller such as ``pids/``) are searched. Of the processes in the
    pod's cgroup and its container cgroups, those in the host's namespace are
    ignored; the earliest started of the others is the sandbox, and its
    namespace is the pod's. Host-network pods therefore resolve to None. The
    sandbox's id is the name of its container cgroup (``<id>``,
    ``cri-containerd-<id>.scope``, ``crio-<id>.scope``), or the pod UID when the
    process sits in the pod's cgroup itself.
    """

    # kubepods sits right below a v2 root, one level deeper on v1 and hybrid
    # hosts (below a controller or unified/), more with a nested --cgroup-root.
    _SCAN_DEPTH = 4

    def __init__(
        self,
        cgroup_root: str = "/sys/fs/cgroup",
        proc_root: str = "/proc",
        host_netns: str | None = None,
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.host_netns = host_netns
        self._bases: list[str] | None = None

    def resolve(self, pod: Mapping[str, Any]) -> Sandbox | None:
        uid, _, _ = pod_identity(pod)
        pod_dirs = self._pod_dirs(uid)
        if not pod_dirs:
            return None
        host = self._host_netns_id()
        denied: list[str] = []
        for pod_dir in pod_dirs:
            # The sandbox (pause) process starts first and holds the pod's
            # namespace; a container that made a namespace of its own started later.
            candidates: list[tuple[int, int, str]] = []
            for pid, cgroup in _cgroup_pids(pod_dir):
                ns = os.path.join(self.proc_root, str(pid), "ns", "net")
                try:
                    st = os.stat(ns)
                    started = _start_time(self.proc_root, pid)
                except PermissionError:
                    denied.append(ns)
                    continue
                except (OSError, ValueError):  # exited, or a zombie
                    continue
                if (st.st_dev, st.st_ino) != host:
                    candidates.append((started, pid, cgroup))
            if candidates:
                _, pid, cgroup = min(candidates)
                path = os.path.join(self.proc_root, str(pid), "ns", "net")
                sandbox = _container_id(cgroup) if cgroup != pod_dir else None
                return Sandbox(sandbox or uid, path)
        if denied:
            # Not "no namespace": the pod's processes are there, their namespaces off limits.
            raise NetnsError(
                f"pod {uid}: reading {denied[0]} is not permitted; finding a pod's network "
                "namespace through its cgroup needs CAP_SYS_PTRACE (the pod's processes hold "
                "capabilities the agent lacks) and the host's PID namespace, or use --cri-socket"
            )
        return None

    def _host_netns_id(self) -> tuple[int, int]:
        # /proc/1 may be off limits (a restricted init, or no hostPID); a
        # host-network agent's own namespace is the host's then.
        candidates = (
            [self.host_netns]
            if self.host_netns
            else [
                os.path.join(self.proc_root, "1", "ns", "net"),
                os.path.join(self.proc_root, "self", "ns", "net"),
            ]
        )
        errors = []
        for path in candidates:
            try:
                st = os.stat(path)
            except OSError as err:
                errors.append(f"{path}: {err.strerror}")
                continue
            return (st.st_dev, st.st_ino)
        raise NetnsError("cannot identify the host network namespace: " + "; ".join(errors))

    def _pod_dirs(self, uid: str) -> list[str]:
        found = self._pod_dirs_in(self._kubepods_bases(refresh=False), uid)
        if not found:
            # kubelet may have (re)created its tree since the last scan.
            found = self._pod_dirs_in(self._kubepods_bases(refresh=True), uid)
        return found

    @staticmethod
    def _pod_dirs_in(bases: Sequence[str], uid: str) -> list[str]:
        under = uid.replace("-", "_")
        found = []
        for base in bases:
            leaf = os.path.basename(base)
            if leaf.endswith(".slice"):  # systemd driver
                stem = leaf[: -len(".slice")]
                candidates = [f"{stem}-pod{under}.slice"] + [
                    f"{stem}-{qos}.slice/{stem}-{qos}-pod{under}.slice"
                    for qos in ("burstable", "besteffort")
                ]
            else:  # cgroupfs driver
                candidates = [f"pod{uid}", f"burstable/pod{uid}", f"besteffort/pod{uid}"]
            for rel in candidates:
                path = os.path.join(base, rel)
                if os.path.isdir(path):
                    found.append(path)
        return found

    def _kubepods_bases(self, refresh: bool) -> list[str]:
        if self._bases is None or refresh:
            self._bases = list(_find_kubepods(self.cgroup_root, self._SCAN_DEPTH))
        return self._bases

    def __repr__(self) -> str:
        return f"CgroupResolver(cgroup_root={self.cgroup_root!r}, proc_root={self.proc_root!r})"


def _is_kubepods(name: str) -> bool:
    # kubepods, kubepods.slice, and nested roots such as kubelet-kubepods.slice.
    return name in ("kubepods", "kubepods.slice") or name.endswith("-kubepods.slice")


def _find_kubepods(top: str, depth: int) -> Iterator[str]:
    """kubepods roots at most ``depth`` levels below ``top`` (kubelet's --cgroup-root may nest them)."""
    if not os.path.isdir(top):
        return
    level = [top]
    for _ in range(depth + 1):
        nxt: list[str] = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if _is_kubepods(entry.name):
                    yield entry.path
                else:
                    nxt.append(entry.path)
        level = nxt


def _start_time(proc_root: str, pid: int) -> int:
    """Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    with open(os.path.join(proc_root, str(pid), "stat"), encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    # The command name may hold spaces and parentheses; the fields follow its last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[19])


def _container_id(cgroup: str) -> str | None:
    """The container id in a container cgroup's name (cgroupfs or systemd driver)."""
    leaf = os.path.basename(cgroup)
    if leaf.endswith(".scope"):
        leaf = leaf[: -len(".scope")]
    leaf = leaf.rsplit("-", 1)[-1]  # cri-containerd-<id>, crio-<id>, docker-<id>
    return leaf if _CONTAINER_ID_RE.match(leaf) else None


def _cgroup_pids(directory: str) -> list[tuple[int, str]]:
    """(pid, cgroup dir) of the pids in ``directory``'s cgroup.procs and every cgroup below it."""
    pids: list[tuple[int, str]] = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        if "cgroup.procs" not in filenames:
            continue
        try:
            with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as fh:
                pids.extend((int(line), dirpath) for line in fh if line.strip().isdigit())
        except OSError:  # the cgroup went away while we walked
            continue
    return pids


class CriResolver:
    """Ask the container runtime over its CRI socket (gRPC) for the pod's sandbox.

    ``ListPodSandbox`` by the label ``io.kubernetes.pod.uid`` (READY sandboxes,
    newest first), then ``PodSandboxStatus(verbose)`` for the path
    ``info.runtimeSpec.linux.namespaces[type=network].path``. The path of a
    sandbox never changes, so it is asked once per sandbox and cached: a
    reconcile costs one ListPodSandbox call on a kept channel, no process.
    """

    CACHE_LIMIT = 4096

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.client = CriClient(socket_path, timeout=timeout)
        self.endpoint = self.client.endpoint
        self._paths: dict[str, str | None] = {}  # sandbox id -> netns path (None: host network)
        self._by_uid: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def resolve(self, pod: Mapping[str, Any]) -> Sandbox | None:
        uid, _, _ = pod_identity(pod)
        try:
            items = self.client.list_pod_sandboxes({"io.kubernetes.pod.uid": uid})
        except CriError as err:
            raise NetnsError(f"cannot list the sandboxes of pod {uid}: {err}") from None
        items = [i for i in items if i.state == SANDBOX_READY and i.uid in (uid, "")]
        items.sort(key=lambda i: (i.created_at, i.attempt), reverse=True)
        self._forget_except(uid, {i.id for i in items})
        torn_down: list[str] = []
        for item in items:
            found, path = self._cached(item.id)
            if not found:
                try:
                    status = self.client.pod_sandbox_status(item.id)
                except CriError as err:
                    if err.code == "NOT_FOUND":  # removed since the listing
                        continue
                    raise NetnsError(f"cannot read sandbox {item.id} of pod {uid}: {err}") from None
                path = None if status.network_mode == NAMESPACE_NODE else status.netns_path()
                self._remember(uid, item.id, path)
            if path is None:
                return None  # host network: no namespace of its own
            if os.path.exists(path):
                return Sandbox(item.id, path)
            torn_down.append(path)
        if torn_down:
            directory = os.path.dirname(torn_down[0])
            if not _has_entries(directory):
                raise NetnsError(
                    f"the runtime reports netns {torn_down[0]} for pod {uid}, but {directory} "
                    "is empty or missing here; mount the host's /var/run/netns (or /run/netns) "
                    "into the agent"
                )
            # The sandbox is being stopped (its namespace already went) or replaced.
            log.debug("pod %s: sandbox netns %s is gone (sandbox torn down)", uid, torn_down)
        return None

    def _cached(self, sandbox_id: str) -> tuple[bool, str | None]:
        with self._lock:
            if sandbox_id in self._paths:
                return True, self._paths[sandbox_id]
        return False, None

    def _remember(self, uid: str, sandbox_id: str, path: str | None) -> None:
        with self._lock:
            if len(self._paths) >= self.CACHE_LIMIT:
                self._paths.clear()
                self._by_uid.clear()
            self._paths[sandbox_id] = path
            self._by_uid.setdefault(uid, set()).add(sandbox_id)

    def _forget_except(self, uid: str, live: set[str]) -> None:
        with self._lock:
            for sandbox_id in self._by_uid.get(uid, set()) - live:
                self._paths.pop(sandbox_id, None)
            if live:
                self._by_uid[uid] = self._by_uid.get(uid, set()) & live
            else:
                self._by_uid.pop(uid, None)

    def __repr__(self) -> str:
        return f"CriResolver({self.endpoint!r})"


def _has_entries(directory: str) -> bool:
    try:
        with os.scandir(directory) as it:
            return any(True for _ in it)
    except OSError:
        return False


class ChainResolver:
    """Ask resolvers in order; the first path wins.

    A resolver that raises does not stop the chain; its error is raised only
    when no other resolver found a namespace.
    """

    def __init__(self, resolvers: Sequence[NetnsResolver]) -> None:
        self.resolvers = tuple(resolvers)

    def resolve(self, pod: Mapping[str, Any]) -> Sandbox | None:
        first_error: NetnsError | None = None
        for resolver in self.resolvers:
            try:
                sandbox = resolver.resolve(pod)
            except NetnsError as err:
                log.warning(
                    "netns resolver %r failed: %s",
                    resolver,
                    err,
                    extra={"resolver": repr(resolver), "error": str(err)},
                )
                if first_error is None:
                    first_error = err
                continue
            if sandbox is not None:
                return sandbox
        if first_error is not None:
            raise first_error
        return None

    def __repr__(self) -> str:
        return f"ChainResolver({list(self.resolvers)!r})"
