"""CNI network configurations and invocation parameters, checked before anything runs (pure).

A NetworkAttachmentDefinition's ``spec.config`` (a single plugin conf or a
conflist) is normalized to a :class:`ConfList`: plugin types are plain file
names (never paths), every plugin speaks the list's cniVersion. What one
invocation gets (container id, netns, interface, CNI_ARGS, capability args)
is a :class:`RuntimeConf`; :func:`capability_args` builds the runtimeConfig
arguments a multi-net selection element asks for.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netshift.annotations import NetworkSelection

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# Well-known CNI error codes used for errors the executor raises itself.
ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7

# Network names and container ids end up in file names (host-local's store,
# the result cache), hence the same strict grammar libcni applies.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ARG_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")
STDERR_TAIL = 2000


class CniError(Exception):
    """A CNI operation failed.

    ``code`` is the CNI error code the plugin reported (``None`` when the
    plugin gave no error object: timeout, crash, garbage on stdout).
    """

    def __init__(
        self,
        code: int | None,
        msg: str,
        details: str = "",
        plugin: str | None = None,
        command: str | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin
        self.command = command
        self.stderr = stderr
        # Set on an ADD error when the rollback DEL failed too.
        self.rollback_error: CniError | None = None
        # Set on a DEL error: every failure after the first one.
        self.other_errors: list[CniError] = []

    def __str__(self) -> str:
        text = self.msg
        if self.details:
            text = f"{text}: {self.details}"
        if self.plugin is not None and self.command is not None:
            code = f" (code {self.code})" if self.code is not None else ""
            text = f"CNI plugin {self.plugin} {self.command} failed{code}: {text}"
        elif self.code is not None:
            text = f"CNI error (code {self.code}): {text}"
        if self.stderr and self.code is None:
            text = f"{text}; stderr: {self.stderr}"
        return text


class CniConfigError(CniError):
    """The configuration or the runtime parameters were refused before anything ran."""

    def __init__(self, msg: str, code: int = ERR_INVALID_CONFIG) -> None:
        super().__init__(code, msg)

    def __str__(self) -> str:
        return self.msg


class CniTimeoutError(CniError):
    """A plugin did not finish in time and was killed."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ConfList:
    """A network configuration list: what libcni runs, whatever form the NAD used."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(str(p["type"]) for p in self.plugins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "plugins": copy.deepcopy(list(self.plugins)),
        }

    def to_json(self) -> str:
        """Stable text of the list; :func:`load_conflist` reads it back unchanged."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def plugin_name_problem(value: Any) -> str | None:
    """What is wrong with a plugin "type" (None: a bare file name, as it must be)."""
    if not isinstance(value, str) or not value:
        return '"type" is missing or not a non-empty string; expected the name of a CNI plugin'
    if "/" in value or "\0" in value or value in (".", ".."):
        return (
            f'"type" {value!r} is not a plain plugin file name; '
            "expected the name of an executable in the CNI plugin directories (no path)"
        )
    return None


def check_plugin_name(value: Any, where: str) -> str:
    """A plugin type must be a bare file name: it is looked up in the plugin dirs, never a path."""
    problem = plugin_name_problem(value)
    if problem is not None:
        raise CniConfigError(f"{where}: {problem}")
    return str(value)


def _parse_disable_check(value: Any) -> bool:
    # The spec writes it as a string, most configs as a boolean; libcni takes both.
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CniConfigError(f'"disableCheck" must be true or false, got {value!r}')


def load_conflist(
    config: str | bytes | Mapping[str, Any], fallback_name: str | None = None
) -> ConfList:
    """Parse a CNI conf or conflist (text or decoded JSON) into a :class:`ConfList`.

    ``fallback_name`` (the NAD name) is used when the config has no ``name``.
    Only the syntax is checked here; :meth:`CniExecutor.validate` checks the
    plugins against the node.
    """
    obj = _decode(config)
    name = _network_name(obj, fallback_name)
    version = _cni_version(obj, name)
    if "plugins" in obj:
        raw_plugins = obj["plugins"]
        if not isinstance(raw_plugins, list) or not raw_plugins:
            raise CniConfigError(f'CNI network {name}: "plugins" must be a non-empty list')
        disable_check = _parse_disable_check(obj.get("disableCheck"))
    else:
        raw_plugins = [obj]
        disable_check = False
    plugins = [
        _check_plugin(plugin, f"CNI network {name}: plugin {index}")
        for index, plugin in enumerate(raw_plugins)
    ]
    return ConfList(
        name=name, cni_version=version, plugins=tuple(plugins), disable_check=disable_check
    )


def _decode(config: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """A private copy of the config as a JSON object."""
    if isinstance(config, Mapping):
        obj: Any = copy.deepcopy(dict(config))
    else:
        try:
            obj = json.loads(config)
        except ValueError as err:
            raise CniConfigError(f"CNI config is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise CniConfigError(f"CNI config must be a JSON object, got {type(obj).__name__}")
    return obj


def _network_name(obj: Mapping[str, Any], fallback_name: str | None) -> str:
    name = obj.get("name") or fallback_name
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CniConfigError(
            f"CNI network name {name!r} is missing or invalid; expected a letter or digit "
            'followed by letters, digits, "_", "." or "-"'
        )
    return name


def _cni_version(obj: Mapping[str, Any], name: str) -> str:
    version = obj.get("cniVersion")
    if version is None:
        raise CniConfigError(
            f'CNI network {name}: "cniVersion" is missing; expected one of '
            + ", ".join(SUPPORTED_VERSIONS)
        )
    if version not in SUPPORTED_VERSIONS:
        raise CniConfigError(
            f'CNI network {name}: "cniVersion" {version!r} is not supported; expected one of '
            + ", ".join(SUPPORTED_VERSIONS),
            code=ERR_INCOMPATIBLE_VERSION,
        )
    return str(version)


def _check_plugin(plugin: Any, where: str) -> dict[str, Any]:
    """One plugin's config, its syntax checked (type names, object-valued fields)."""
    if not isinstance(plugin, dict):
        raise CniConfigError(f"{where} must be a JSON object")
    check_plugin_name(plugin.get("type"), where)
    ipam = plugin.get("ipam")
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise CniConfigError(f'{where}: "ipam" must be a JSON object')
        if ipam:  # an empty ipam object means "no IPAM"
            check_plugin_name(ipam.get("type"), f"{where} ipam")
    for key in ("capabilities", "args"):
        value = plugin.get(key)
        if value is not None and not isinstance(value, dict):
            raise CniConfigError(f'{where}: "{key}" must be a JSON object')
    return plugin


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class RuntimeConf:
    """The per-attachment parameters of an invocation (libcni's RuntimeConf)."""

    container_id: str
    netns: str
    ifname: str
    args: Sequence[tuple[str, str]] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)
    cni_args: Mapping[str, Any] | None = None


def k8s_cni_args(
    namespace: str, name: str, infra_container_id: str, uid: str
) -> list[tuple[str, str]]:
    """The CNI_ARGS pairs a Kubernetes runtime passes for a pod."""
    return [
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", infra_container_id),
        ("K8S_POD_UID", uid),
    ]


def cni_args_env(pairs: Sequence[tuple[str, str]]) -> str:
    items = [(str(k), str(v)) for k, v in pairs]
    for key, value in items:
        if not _ARG_KEY_RE.match(key) or ";" in value or "\0" in value:
            raise CniConfigError(
                f"CNI_ARGS pair {key}={value!r} is invalid; keys are letters, digits and "
                '"_", values may not contain ";"',
                code=ERR_INVALID_ENV,
            )
    if not any(key == "IgnoreUnknown" for key, _ in items):
        items.insert(0, ("IgnoreUnknown", "1"))
    return ";".join(f"{key}={value}" for key, value in items)


def check_runtime(rt: RuntimeConf, need_netns: bool) -> None:
    if not NAME_RE.match(rt.container_id):
        raise CniConfigError(
            f"container id {rt.container_id!r} is invalid; expected letters, digits, "
            '"_", "." or "-", starting with a letter or digit',
            code=ERR_INVALID_ENV,
        )
    name = rt.ifname
    if (
        not name
        or len(name.encode()) > 15
        or name in (".", "..")
        or any(c in name for c in "/:\0")
        or any(c.isspace() for c in name)
    ):
        raise CniConfigError(
            f"interface name {name!r} is invalid; expected 1-15 bytes without "
            '"/", ":" or whitespace',
            code=ERR_INVALID_ENV,
        )
    if need_netns and not rt.netns:
        raise CniConfigError("a network namespace path is required", code=ERR_INVALID_ENV)


def capability_args(sel: NetworkSelection) -> dict[str, Any]:
    """The runtimeConfig capability arguments a selection element asks for."""
    caps: dict[str, Any] = {}
    if sel.ips:
        caps["ips"] = list(sel.ips)
    if sel.mac:
        caps["mac"] = sel.mac
    if sel.port_mappings:
        caps["portMappings"] = [p.to_json() for p in sel.port_mappings]
    if sel.bandwidth is not None:
        caps["bandwidth"] = sel.bandwidth.to_json()
    if sel.infiniband_guid:
        caps["infinibandGUID"] = sel.infiniband_guid
    return caps
