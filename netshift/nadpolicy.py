"""Which NetworkAttachmentDefinition configs are safe to run: the structure, and the cluster's policy.

The agent runs a NAD's CNI config as root on the node, so two layers decide
whether a config may be admitted (by the webhook) or run (by the agent):

- the structure, always: ``spec.config`` is a JSON object, every plugin has a
  ``type`` that is a bare plugin file name (never a path), a conflist has a
  non-empty ``plugins`` list, an ``ipam`` section is an object with a plain
  ``type``;
- the platform team's :class:`NadPolicy`, off unless enabled: allowed plugin
  and IPAM types, ``ipam.dataDir`` only under allowed prefixes, bridge names
  not on a deny list, namespaces exempt from it.

Pure: no I/O. `check_nad` returns every problem at once, each naming the field
(``spec.config.plugins[0].ipam.dataDir``), what is wrong and what would be
accepted. The policy is read from a ConfigMap (`POLICY_KEY` of
`policy_from_configmap`); see docs/webhook.md, "NAD policy".
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

import yaml

from netshift.cni.config import plugin_name_problem

POLICY_CONFIGMAP = "netshift-nad-policy"
POLICY_KEY = "policy.yaml"
CONFIG_FIELD = "spec.config"
# The bridge plugin's bridge when the config names none.
DEFAULT_BRIDGE = "cni0"

Kind = Literal["config", "policy"]


class NadPolicyError(ValueError):
    """The policy itself cannot be read: nothing can be decided against it."""


@dataclass(frozen=True)
class Problem:
    """One reason a NAD config is refused."""

    field: str  # e.g. "spec.config.plugins[0].type"
    message: str  # what is wrong and what would be accepted
    kind: Kind = "config"  # "config": malformed for anyone; "policy": forbidden by the policy

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class NadPolicy:
    """The cluster's restrictions on NAD configs. `NadPolicy()` is off: structure only.

    A restriction left as None does not restrict.
    """

    enabled: bool = False
    allowed_types: frozenset[str] | None = None
    allowed_ipam_types: frozenset[str] | None = None
    ipam_data_dir_prefixes: tuple[str, ...] | None = None
    denied_bridges: tuple[str, ...] = ()  # names or shell patterns ("virbr*")
    exempt_namespaces: frozenset[str] = field(default_factory=frozenset)

    def applies_to(self, namespace: str | None) -> bool:
        return self.enabled and (namespace is None or namespace not in self.exempt_namespaces)


OFF = NadPolicy()

_KEYS = {
    "enabled",
    "allowedTypes",
    "allowedIpamTypes",
    "ipamDataDirPrefixes",
    "deniedBridges",
    "exemptNamespaces",
}


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise NadPolicyError(f"{key} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _data_dir_prefixes(data: Mapping[str, Any]) -> tuple[str, ...] | None:
    prefixes = _strings(data, "ipamDataDirPrefixes")
    if prefixes is None:
        return None
    for prefix in prefixes:
        if not prefix.startswith("/") or posixpath.normpath(prefix) != (prefix.rstrip("/") or "/"):
            raise NadPolicyError(
                f"ipamDataDirPrefixes: {prefix!r} is not a normalized absolute path"
            )
    return tuple(p.rstrip("/") or "/" for p in prefixes)


def _plugin_names(data: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    names = _strings(data, key)
    for name in names or ():
        problem = plugin_name_problem(name)
        if problem is not None:
            raise NadPolicyError(f"{key}: {problem}")
    return names


def parse_policy(data: Any) -> NadPolicy:
    """The policy from its decoded YAML/JSON form (keys in camelCase, as in the ConfigMap)."""
    if data is None:
        return OFF
    if not isinstance(data, Mapping):
        raise NadPolicyError(f"the policy must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        # A misspelt restriction must not silently restrict nothing.
        raise NadPolicyError(
            f"unknown keys {', '.join(map(str, unknown))}; expected {', '.join(sorted(_KEYS))}"
        )
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise NadPolicyError(f"enabled must be true or false, got {enabled!r}")
    prefixes = _data_dir_prefixes(data)
    types = _plugin_names(data, "allowedTypes")
    ipam_types = _plugin_names(data, "allowedIpamTypes")
    return NadPolicy(
        enabled=enabled,
        allowed_types=frozenset(types) if types is not None else None,
        allowed_ipam_types=frozenset(ipam_types) if ipam_types is not None else None,
        ipam_data_dir_prefixes=prefixes,
        denied_bridges=_strings(data, "deniedBridges") or (),
        exempt_namespaces=frozenset(_strings(data, "exemptNamespaces") or ()),
    )


def policy_from_configmap(obj: Mapping[str, Any] | None) -> NadPolicy:
    """The policy a ConfigMap holds under data[POLICY_KEY]; no ConfigMap or no key: OFF."""
    if obj is None:
        return OFF
    text = (obj.get("data") or {}).get(POLICY_KEY)
    if text is None:
        return OFF
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise NadPolicyError(f"{POLICY_KEY} is not valid YAML: {err}") from None
    return parse_policy(data)


def _one_of(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in sorted(names)) or "(none)"


def _plugins(obj: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[Problem]]:
    """(path, plugin) of every plugin of a conf or conflist, and the structural problems."""
    if "plugins" not in obj:
        return [(CONFIG_FIELD, obj)], []
    raw = obj["plugins"]
    where = f"{CONFIG_FIELD}.plugins"
    if not isinstance(raw, list) or not raw:
        return [], [
            Problem(where, "a conflist must have a non-empty list of plugin configurations")
        ]
    plugins: list[tuple[str, dict[str, Any]]] = []
    problems: list[Problem] = []
    for index, plugin in enumerate(raw):
        path = f"{where}[{index}]"
        if isinstance(plugin, dict):
            plugins.append((path, plugin))
        else:
            problems.append(Problem(path, "must be a JSON object (one plugin configuration)"))
    return plugins, problems


def _structure(path: str, plugin: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    problem = plugin_name_problem(plugin.get("type"))
    if problem is not None:
        problems.append(Problem(f"{path}.type", problem))
    ipam = plugin.get("ipam")
    if ipam is not None:
        if not isinstance(ipam, dict):
            problems.append(Problem(f"{path}.ipam", "must be a JSON object"))
        elif ipam:  # an empty ipam object means "no IPAM"
            problem = plugin_name_problem(ipam.get("type"))
            if problem is not None:
                problems.append(Problem(f"{path}.ipam.type", problem))
    return problems


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _policy(path: str, plugin: Mapping[str, Any], policy: NadPolicy) -> list[Problem]:
    problems: list[Problem] = []

    def deny(where: str, message: str) -> None:
        problems.append(Problem(where, message, kind="policy"))

    kind = plugin.get("type")
    # A type that is no plain name is a structural problem already: said once.
    if (
        policy.allowed_types is not None
        and plugin_name_problem(kind) is None
        and kind not in policy.allowed_types
    ):
        deny(
            f"{path}.type",
            f"plugin type {kind!r} is not allowed by the NAD policy; "
            f"expected one of {_one_of(policy.allowed_types)}",
        )
    ipam = plugin.get("ipam")
    if isinstance(ipam, dict) and ipam:
        ipam_type = ipam.get("type")
        if (
            policy.allowed_ipam_types is not None
            and plugin_name_problem(ipam_type) is None
            and ipam_type not in policy.allowed_ipam_types
        ):
            deny(
                f"{path}.ipam.type",
                f"IPAM type {ipam_type!r} is not allowed by the NAD policy; "
                f"expected one of {_one_of(policy.allowed_ipam_types)}",
            )
        prefixes = policy.ipam_data_dir_prefixes
        if prefixes is not None and "dataDir" in ipam:
            problem = _data_dir_problem(ipam["dataDir"], prefixes)
            if problem is not None:
                deny(f"{path}.ipam.dataDir", problem)
    if policy.denied_bridges and ("bridge" in plugin or kind == "bridge"):
        bridge = plugin.get("bridge", DEFAULT_BRIDGE)
        if not isinstance(bridge, str):
            deny(f"{path}.bridge", f"must be a string, got {bridge!r}")
        elif any(fnmatchcase(bridge, pattern) for pattern in policy.denied_bridges):
            shown = " (the bridge plugin's default)" if "bridge" not in plugin else ""
            deny(
                f"{path}.bridge",
                f"bridge {bridge!r}{shown} is denied by the NAD policy "
                f"({_one_of(policy.denied_bridges)}); expected a bridge of this network's own",
            )
    return problems


def _data_dir_problem(value: Any, prefixes: Sequence[str]) -> str | None:
    expected = f"expected a directory under {_one_of(prefixes)}"
    if not isinstance(value, str) or not value.startswith("/"):
        return f"{value!r} is not an absolute path; {expected}"
    # normpath folds "..": /var/lib/cni/networks/../../../etc is /etc. Symlinks on the
    # node cannot be seen from here; the prefixes should be directories only root writes.
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if any(_under(normal, prefix) for prefix in prefixes):
        return None
    return f"{value!r} is outside the directories the NAD policy allows; {expected}"


def check_nad(
    config_text: str, policy: NadPolicy = OFF, *, namespace: str | None = None
) -> list[Problem]:
    """Every problem of a NAD's ``spec.config`` (empty: admit / run it).

    Structural problems are found whatever the policy; the policy's are added
    when it is enabled and `namespace` (the NAD's, when known) is not exempt.
    """
    try:
        obj = json.loads(config_text)
    except ValueError as err:
        return [
            Problem(
                CONFIG_FIELD,
                f"is not valid JSON ({err}); expected a CNI network configuration (a JSON object)",
            )
        ]
    if not isinstance(obj, dict):
        return [
            Problem(
                CONFIG_FIELD,
                f"must be a JSON object (a CNI conf or conflist), got JSON {type(obj).__name__}",
            )
        ]
    plugins, problems = _plugins(obj)
    for path, plugin in plugins:
        problems += _structure(path, plugin)
    if policy.applies_to(namespace):
        for path, plugin in plugins:
            problems += _policy(path, plugin, policy)
    return problems
