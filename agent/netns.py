"""Find the network namespace of a pod.

Resolvers map a Pod object (as a dict) to the path of its network namespace,
or ``None`` when the pod has none (yet, or anymore). Several strategies exist
because nodes differ: a path template for runtimes that name their namespace
files predictably, the pod's cgroup (works with any runtime, needs the host's
/proc and cgroup tree), the CRI runtime through ``crictl``. ``ChainResolver``
tries several in order.

A resolver raises :class:`NetnsError` when it cannot answer (misconfigured,
runtime unreachable) as opposed to "no namespace", which is ``None``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CgroupResolver",
    "ChainResolver",
    "CriResolver",
    "NetnsError",
    "NetnsResolver",
    "PathTemplateResolver",
    "parse_crictl_inspectp",
    "parse_crictl_pods",
    "pod_identity",
]

log = logging.getLogger("netshift.agent.netns")

# Pod UIDs are UUIDs; anything else is refused before it reaches a path or a command line.
_UID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z\-]*$")
_DNS_RE = re.compile(r"^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$")


class NetnsError(Exception):
    """A resolver could not tell where a pod's namespace is."""


@runtime_checkable
class NetnsResolver(Protocol):
    def resolve(self, pod: Mapping[str, Any]) -> str | None:
        """The path of the pod's network namespace, or None if it has none."""
        ...


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

    def resolve(self, pod: Mapping[str, Any]) -> str | None:
        uid, namespace, name = pod_identity(pod)
        path = self.template.format(uid=uid, namespace=namespace, name=name)
        return path if os.path.exists(path) else None

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
    namespace is the pod's. Host-network pods therefore resolve to None.
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

    def resolve(self, pod: Mapping[str, Any]) -> str | None:
        uid, _, _ = pod_identity(pod)
        pod_dirs = self._pod_dirs(uid)
        if not pod_dirs:
            return None
        host = self._host_netns_id()
        for pod_dir in pod_dirs:
            # The sandbox (pause) process starts first and holds the pod's
            # namespace; a container that made a namespace of its own started later.
            candidates: list[tuple[int, int]] = []
            for pid in _cgroup_pids(pod_dir):
                try:
                    st = os.stat(os.path.join(self.proc_root, str(pid), "ns", "net"))
                    started = _start_time(self.proc_root, pid)
                except (OSError, ValueError):  # exited, or a zombie
                    continue
                if (st.st_dev, st.st_ino) != host:
                    candidates.append((started, pid))
            if candidates:
                _, pid = min(candidates)
                return os.path.join(self.proc_root, str(pid), "ns", "net")
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


def _cgroup_pids(directory: str) -> list[int]:
    """Pids in ``directory``'s cgroup.procs and in every cgroup below it."""
    pids: list[int] = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        if "cgroup.procs" not in filenames:
            continue
        try:
            with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as fh:
                pids.extend(int(line) for line in fh if line.strip().isdigit())
        except OSError:  # the cgroup went away while we walked
            continue
    return pids


class CriResolver:
    """Ask the container runtime, through ``crictl``, for the pod sandbox's namespace.

    The sandbox is found by the label ``io.kubernetes.pod.uid``; the path is
    ``info.runtimeSpec.linux.namespaces[type=network].path`` of its verbose
    status (what ``crictl inspectp`` prints).
    """

    def __init__(self, socket_path: str, crictl: str = "crictl", timeout: float = 10.0) -> None:
        found = shutil.which(crictl)
        if found is None:
            raise NetnsError(
                f"CriResolver needs crictl, which is not on PATH ({crictl!r}); install "
                "cri-tools or choose another netns resolver"
            )
        self.crictl = found
        self.endpoint = socket_path if "://" in socket_path else f"unix://{socket_path}"
        self.timeout = timeout

    def resolve(self, pod: Mapping[str, Any]) -> str | None:
        uid, _, _ = pod_identity(pod)
        listing = self._crictl("pods", "--label", f"io.kubernetes.pod.uid={uid}", "-o", "json")
        for sandbox_id in parse_crictl_pods(listing, uid):
            path = parse_crictl_inspectp(self._crictl("inspectp", "-o", "json", sandbox_id))
            if path is None:
                continue
            if not os.path.exists(path):
                raise NetnsError(
                    f"the runtime reports netns {path} for pod {uid}, but it is not visible "
                    "here; mount the host's /var/run/netns (or /run/netns) into the agent"
                )
            return path
        return None

    def _crictl(self, *args: str) -> str:
        argv = [self.crictl, "--runtime-endpoint", self.endpoint, *args]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise NetnsError(f"crictl {args[0]} timed out after {self.timeout:g}s") from None
        if done.returncode != 0:
            raise NetnsError(f"crictl {args[0]} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def __repr__(self) -> str:
        return f"CriResolver({self.endpoint!r})"


def parse_crictl_pods(text: str, uid: str) -> list[str]:
    """Sandbox ids of the pod in ``crictl pods -o json`` output, ready ones first, newest first."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise NetnsError(f"crictl pods printed invalid JSON: {err}") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    picked: list[tuple[bool, int, str]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        meta = item.get("metadata")
        labels = item.get("labels")
        item_uid = meta.get("uid") if isinstance(meta, dict) else None
        if item_uid is None and isinstance(labels, dict):
            item_uid = labels.get("io.kubernetes.pod.uid")
        if item_uid != uid:
            continue
        ready = item.get("state") == "SANDBOX_READY"
        try:
            created = int(item.get("createdAt", 0))
        except (TypeError, ValueError):
            created = 0
        picked.append((ready, created, item["id"]))
    picked.sort(reverse=True)
    return [sandbox_id for _, _, sandbox_id in picked]


def parse_crictl_inspectp(text: str) -> str | None:
    """The network namespace path in ``crictl inspectp -o json`` output (None when host network)."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise NetnsError(f"crictl inspectp printed invalid JSON: {err}") from None
    try:
        namespaces = data["info"]["runtimeSpec"]["linux"]["namespaces"]
    except (KeyError, TypeError):
        return None
    if not isinstance(namespaces, list):
        return None
    for ns in namespaces:
        if isinstance(ns, dict) and ns.get("type") == "network":
            path = ns.get("path")
            return path if isinstance(path, str) and path else None
    return None


class ChainResolver:
    """Ask resolvers in order; the first path wins.

    A resolver that raises does not stop the chain; its error is raised only
    when no other resolver found a namespace.
    """

    def __init__(self, resolvers: Sequence[NetnsResolver]) -> None:
        self.resolvers = tuple(resolvers)

    def resolve(self, pod: Mapping[str, Any]) -> str | None:
        first_error: NetnsError | None = None
        for resolver in self.resolvers:
            try:
                path = resolver.resolve(pod)
            except NetnsError as err:
                log.warning(
                    "netns resolver failed", extra={"resolver": repr(resolver), "error": str(err)}
                )
                if first_error is None:
                    first_error = err
                continue
            if path is not None:
                return path
        if first_error is not None:
            raise first_error
        return None

    def __repr__(self) -> str:
        return f"ChainResolver({list(self.resolvers)!r})"
