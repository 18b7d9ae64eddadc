"""Run CNI plugin binaries the way libcni does.

A :class:`~netshift.cni.config.ConfList` is checked against the node (plugin
types found in the configured plugin dirs, the requested capabilities
declared) and then executed plugin by plugin: ADD in order with
``prevResult`` chained, CHECK in order against the ADD result, DEL in reverse
order, best effort, so that IPAM is always released.

Everything here is synchronous (plain subprocesses); an asyncio caller runs it
in a worker thread. One executor may be shared by several threads.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netshift.cni.config import (
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    STDERR_TAIL,
    SUPPORTED_VERSIONS,
    CniConfigError,
    CniError,
    CniTimeoutError,
    ConfList,
    RuntimeConf,
    check_plugin_name,
    check_runtime,
    cni_args_env,
    version_key,
)

log = logging.getLogger("netshift.cni")


def find_plugin(plugin_type: str, plugin_dirs: Sequence[str]) -> str:
    """The path of the executable ``plugin_type`` in the first dir that has it."""
    check_plugin_name(plugin_type, "CNI plugin")
    for directory in plugin_dirs:
        path = os.path.join(directory, plugin_type)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CniConfigError(
        f"CNI plugin {plugin_type!r} not found: no executable of that name in "
        + ", ".join(plugin_dirs or ["(no plugin directories configured)"])
    )


# --------------------------------------------------------------------------- executor


@dataclass(frozen=True)
class CallTiming:
    """One plugin invocation, for callers that report how long things took."""

    plugin: str
    command: str
    seconds: float
    ok: bool


class _Timings(threading.local):
    def __init__(self) -> None:
        self.calls: list[CallTiming] = []


class CniExecutor:
    """Runs conflists against the plugins found in ``plugin_dirs``.

    ``timeout`` bounds each plugin call. With ``cache_dir`` the executor keeps
    libcni's result cache: the ADD result (and the list it came from) per
    attachment, used as ``prevResult`` when DEL or CHECK get none.
    """

    def __init__(
        self, plugin_dirs: Sequence[str], timeout: float = 30.0, cache_dir: str | None = None
    ) -> None:
        if isinstance(plugin_dirs, str):
            raise TypeError("plugin_dirs must be a sequence of directories, not a string")
        self.plugin_dirs: tuple[str, ...] = tuple(plugin_dirs)
        self.timeout = timeout
        self.cache_dir = cache_dir
        self._timings = _Timings()
        self._versions: dict[tuple[str, int, int], tuple[str, ...]] = {}
        self._versions_lock = threading.Lock()

    # -- public operations

    @property
    def last_timings(self) -> list[CallTiming]:
        """The plugin calls of this thread's last add/check/delete/validate, in order."""
        return list(self._timings.calls)

    def validate(self, conflist: ConfList, rt: RuntimeConf | None = None) -> None:
        """Refuse, before anything runs, what ADD would fail on for reasons of configuration."""
        self._timings.calls = []
        self._validate(conflist, rt)

    def add(self, conflist: ConfList, rt: RuntimeConf, *, rollback: bool = True) -> dict[str, Any]:
        """ADD the attachment; return the final result.

        When a plugin fails and ``rollback`` is set, the whole list is DELeted
        (as the spec asks of runtimes) before the error is raised, so a failed
        ADD leaves neither interfaces nor IPAM allocations behind.
        """
        self._timings.calls = []
        check_runtime(rt, need_netns=True)
        self._validate(conflist, rt)
        paths = [find_plugin(t, self.plugin_dirs) for t in conflist.types]
        prev: dict[str, Any] | None = None
        try:
            for plugin, path in zip(conflist.plugins, paths, strict=True):
                stdin = _plugin_stdin(conflist, plugin, rt, prev)
                prev = self._run(path, plugin["type"], "ADD", rt, stdin, rt.netns)
            if prev is None:  # pragma: no cover - a list is never empty
                raise CniError(ERR_DECODE, "the list produced no result")
        except CniError as err:
            if rollback:
                try:
                    self._delete(conflist, rt, None, reset=False)
                except CniError as del_err:
                    err.rollback_error = del_err
                    log.warning(
                        "rollback after failed CNI ADD failed",
                        extra={"network": conflist.name, "error": str(del_err)},
                    )
            raise
        self._cache_store(conflist, rt, prev)
        return prev

    def check(
        self, conflist: ConfList, rt: RuntimeConf, prev_result: Mapping[str, Any] | None = None
    ) -> bool:
        """CHECK the attachment against its ADD result.

        Returns False without running anything when the list cannot be
        checked (cniVersion before 0.4.0, or ``disableCheck``); raises
        :class:`CniError` when a plugin reports a problem.
        """
        self._timings.calls = []
        check_runtime(rt, need_netns=True)
        if version_key(conflist.cni_version) < (0, 4, 0) or conflist.disable_check:
            return False
        self._validate(conflist, rt)
        result = dict(prev_result) if prev_result is not None else self.cached_result(conflist, rt)
        if result is None:
            raise CniError(
                None,
                f"cannot CHECK network {conflist.name} on {rt.ifname}: "
                "the result of its ADD is not known",
            )
        for plugin in conflist.plugins:
            path = find_plugin(plugin["type"], self.plugin_dirs)
            stdin = _plugin_stdin(conflist, plugin, rt, result)
            self._run(path, plugin["type"], "CHECK", rt, stdin, rt.netns)
        return True

    def delete(
        self, conflist: ConfList, rt: RuntimeConf, prev_result: Mapping[str, Any] | None = None
    ) -> None:
        """DEL the attachment, every plugin in reverse order, even when some fail.

        Pass the exact list used for ADD and its result. The first failure is
        raised once every plugin has had its turn (the rest are on
        ``other_errors``). A namespace that no longer exists is passed as an
        empty ``CNI_NETNS``, which plugins take as "release what you can".
        """
        self._delete(conflist, rt, prev_result, reset=True)

    def cached_result(self, conflist: ConfList, rt: RuntimeConf) -> dict[str, Any] | None:
        """The ADD result this executor cached for the attachment, if any."""
        path = self._cache_path(conflist, rt)
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise CniError(None, f"cannot read cached CNI result {path}: {err}") from None
        result = entry.get("result") if isinstance(entry, dict) else None
        return result if isinstance(result, dict) else None

    def plugin_versions(self, plugin_type: str) -> tuple[str, ...]:
        """The spec versions a plugin supports (its VERSION answer, cached per binary)."""
        path = find_plugin(plugin_type, self.plugin_dirs)
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        with self._versions_lock:
            known = self._versions.get(key)
        if known is not None:
            return known
        stdin = json.dumps({"cniVersion": SUPPORTED_VERSIONS[-1]}).encode()
        env = self._env("VERSION", None, "")
        try:
            answer = self._exec(path, plugin_type, "VERSION", env, stdin)
        except CniError as err:
            raise CniConfigError(
                f"CNI plugin {plugin_type} did not answer the VERSION command: {err}",
                code=ERR_INCOMPATIBLE_VERSION,
            ) from None
        versions = answer.get("supportedVersions") if answer is not None else None
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise CniConfigError(
                f"CNI plugin {plugin_type} gave no supportedVersions list to VERSION",
                code=ERR_INCOMPATIBLE_VERSION,
            )
        found = tuple(versions)
        with self._versions_lock:
            self._versions[key] = found
        return found

    # -- internals

    def _validate(self, conflist: ConfList, rt: RuntimeConf | None) -> None:
        for index, plugin in enumerate(conflist.plugins):
            find_plugin(plugin["type"], self.plugin_dirs)
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and ipam:
                try:
                    find_plugin(ipam["type"], self.plugin_dirs)
                except CniConfigError as err:
                    raise CniConfigError(
                        f"CNI network {conflist.name}: plugin {index} ({plugin['type']}) "
                        f"ipam: {err}"
                    ) from None
        for plugin_type in dict.fromkeys(conflist.types):
            versions = self.plugin_versions(plugin_type)
            if conflist.cni_version not in versions:
                raise CniConfigError(
                    f"CNI network {conflist.name} asks for cniVersion {conflist.cni_version} "
                    f"but plugin {plugin_type} supports only " + ", ".join(versions),
                    code=ERR_INCOMPATIBLE_VERSION,
                )
        if rt is not None:
            declared = {
                cap
                for plugin in conflist.plugins
                for cap, on in (plugin.get("capabilities") or {}).items()
                if on is True
            }
            missing = sorted(set(rt.capability_args) - declared)
            if missing:
                raise CniConfigError(
                    f"CNI network {conflist.name} cannot take "
                    + ", ".join(repr(m) for m in missing)
                    + ": no plugin in it declares "
                    + ("that capability" if len(missing) == 1 else "those capabilities")
                    + ' in its "capabilities"'
                    + (f" (declared: {', '.join(sorted(declared))})" if declared else "")
                )

    def _delete(
        self,
        conflist: ConfList,
        rt: RuntimeConf,
        prev_result: Mapping[str, Any] | None,
        *,
        reset: bool,
    ) -> None:
        if reset:
            self._timings.calls = []
        check_runtime(rt, need_netns=False)
        prev: dict[str, Any] | None = None
        if version_key(conflist.cni_version) >= (0, 4, 0):
            prev = dict(prev_result) if prev_result is not None else None
            if prev is None:
                try:
                    prev = self.cached_result(conflist, rt)
                except CniError as err:
                    log.warning("ignoring unreadable CNI cache", extra={"error": str(err)})
        # A namespace that is gone is reported as none at all: the spec's
        # signal to plugins to release what they can and succeed.
        netns = rt.netns if rt.netns and os.path.exists(rt.netns) else ""
        errors: list[CniError] = []
        for plugin in reversed(conflist.plugins):
            try:
                path = find_plugin(plugin["type"], self.plugin_dirs)
                stdin = _plugin_stdin(conflist, plugin, rt, prev)
                self._run(path, plugin["type"], "DEL", rt, stdin, netns)
            except CniError as err:
                errors.append(err)
        if errors:
            first = errors[0]
            first.other_errors = errors[1:]
            raise first
        self._cache_remove(conflist, rt)

    def _env(self, command: str, rt: RuntimeConf | None, netns: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = os.pathsep.join(self.plugin_dirs)
        if rt is not None:
            env["CNI_CONTAINERID"] = rt.container_id
            env["CNI_NETNS"] = netns
            env["CNI_IFNAME"] = rt.ifname
            env["CNI_ARGS"] = cni_args_env(rt.args)
        return env

    def _run(
        self,
        path: str,
        plugin_type: str,
        command: str,
        rt: RuntimeConf,
        stdin: bytes,
        netns: str,
    ) -> dict[str, Any] | None:
        return self._exec(path, plugin_type, command, self._env(command, rt, netns), stdin)

    def _exec(
        self, path: str, plugin_type: str, command: str, env: dict[str, str], stdin: bytes
    ) -> dict[str, Any] | None:
        start = time.monotonic()
        ok = False
        try:
            result = self._exec_once(path, plugin_type, command, env, stdin)
            ok = True
            return result
        finally:
            seconds = time.monotonic() - start
            self._timings.calls.append(CallTiming(plugin_type, command, seconds, ok))
            log.debug(
                "CNI plugin call",
                extra={"plugin": plugin_type, "command": command, "seconds": seconds, "ok": ok},
            )

    def _exec_once(
        self, path: str, plugin_type: str, command: str, env: dict[str, str], stdin: bytes
    ) -> dict[str, Any] | None:
        # A session of its own so that a timeout kills the IPAM child too
        # (it would otherwise keep our stdout pipe open).
        proc = subprocess.Popen(
            [path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = b"", b""
            raise CniTimeoutError(
                None,
                f"timed out after {self.timeout:g}s (killed)",
                plugin=plugin_type,
                command=command,
                stderr=_tail(err),
            ) from None
        finally:
            if proc.poll() is None:  # pragma: no cover - only on unexpected exceptions
                proc.kill()
                proc.wait()

        stderr = _tail(err)
        if stderr:
            log.debug("CNI plugin stderr", extra={"plugin": plugin_type, "stderr": stderr})
        if proc.returncode != 0:
            raise _failure(plugin_type, command, proc.returncode, out, stderr)
        if command in ("ADD", "VERSION"):
            try:
                parsed = json.loads(out)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise CniError(
                    None,
                    "succeeded but printed no JSON result object",
                    details=_tail(out),
                    plugin=plugin_type,
                    command=command,
                    stderr=stderr,
                )
            return parsed
        return None

    # -- result cache (libcni keeps one too; ours is per executor)

    def _cache_path(self, conflist: ConfList, rt: RuntimeConf) -> str | None:
        if self.cache_dir is None:
            return None
        # name, container id and ifname are validated: safe in a file name.
        return os.path.join(
            self.cache_dir, "results", f"{conflist.name}-{rt.container_id}-{rt.ifname}"
        )

    def _cache_store(self, conflist: ConfList, rt: RuntimeConf, result: dict[str, Any]) -> None:
        path = self._cache_path(conflist, rt)
        if path is None:
            return
        entry = {
            "kind": "netshift-cni-cache-v1",
            "containerId": rt.container_id,
            "ifName": rt.ifname,
            "networkName": conflist.name,
            "config": conflist.to_dict(),
            "result": result,
        }
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _cache_remove(self, conflist: ConfList, rt: RuntimeConf) -> None:
        path = self._cache_path(conflist, rt)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _plugin_stdin(
    conflist: ConfList,
    plugin: Mapping[str, Any],
    rt: RuntimeConf,
    prev_result: Mapping[str, Any] | None,
) -> bytes:
    conf = copy.deepcopy(dict(plugin))
    conf["name"] = conflist.name
    conf["cniVersion"] = conflist.cni_version
    # Each plugin sees only the capability args it declared.
    runtime_config = {
        cap: copy.deepcopy(rt.capability_args[cap])
        for cap, on in (plugin.get("capabilities") or {}).items()
        if on is True and cap in rt.capability_args
    }
    if runtime_config:
        conf["runtimeConfig"] = runtime_config
    if rt.cni_args:
        args = conf.setdefault("args", {})
        cni = args.get("cni")
        merged = dict(cni) if isinstance(cni, dict) else {}
        merged.update(copy.deepcopy(dict(rt.cni_args)))
        args["cni"] = merged
    conf.pop("prevResult", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    return json.dumps(conf).encode()


def _tail(data: bytes | None) -> str:
    if not data:
        return ""
    text = data.decode("utf-8", errors="replace").strip()
    return text[-STDERR_TAIL:]


def _failure(
    plugin_type: str, command: str, returncode: int, stdout: bytes, stderr: str
) -> CniError:
    try:
        obj = json.loads(stdout)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("code"), int) and "msg" in obj:
        details = obj.get("details")
        return CniError(
            obj["code"],
            str(obj["msg"]),
            str(details) if details else "",
            plugin=plugin_type,
            command=command,
            stderr=stderr,
        )
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    return CniError(
        None,
        f"{how} without a CNI error object",
        details=_tail(stdout),
        plugin=plugin_type,
        command=command,
        stderr=stderr,
    )
