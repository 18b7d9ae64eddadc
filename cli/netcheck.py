"""The networks a NetworkProfile plan puts on pods: how each is defined, and whether a default
network will give the pods a default route (pure; `netshift plan`'s shell reads the NADs and,
where it can, the nodes' conf files).

A network the profile makes the *default* must carry a default route in its CNI
result, or the agent refuses the switch (`DefaultSwitchFailed`) and the pods
keep their old default. The plan judges that from the config
(`netshift.cni.defaultroute`): NO is a problem (the plan is not safe), UNKNOWN is
said with its reason (an IPAM server, a plugin whose result the config does not
show, a node file that cannot be read from here). A NAD without ``spec.config``
is defined per node: each node's conf file of that name is judged where it could
be read, and a node without one is a problem (Multus and the agent would fail
there alike).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from controller.profileplan import ProfilePlan
from netshift.annotations import AnnotationError, parse_default_network, parse_networks
from netshift.cni.config import CniConfigError, load_conflist
from netshift.cni.defaultroute import NO, UNKNOWN, YES, DefaultRoute, judge_default_route
from netshift.cni.nodeconf import per_node_summary
from netshift.keys import DEFAULT_NETWORK_KEY, NETWORKS_KEY

SPEC_CONFIG: Final = "spec.config"
PER_NODE: Final = "per node"
MISSING: Final = "missing"


@dataclass(frozen=True)
class UsedNetwork:
    network: str  # "ns/name"
    default: bool  # some namespace gets it as its pods' default network
    namespaces: tuple[str, ...]


@dataclass(frozen=True)
class NodeFile:
    """What the shell found for a per-node network on one node."""

    node: str
    path: str = ""
    text: str = ""
    error: str = ""  # no usable file there (netshift.cni.nodeconf's message)


@dataclass(frozen=True)
class NetworkCheck:
    network: str
    default: bool
    namespaces: tuple[str, ...]
    defined_by: str  # SPEC_CONFIG, PER_NODE or MISSING
    node_files: tuple[NodeFile, ...] = ()
    route: str = ""  # for a default network: YES, NO or UNKNOWN; "" for a secondary one
    why: str = ""
    problems: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "usedAs": "default" if self.default else "secondary",
            "namespaces": list(self.namespaces),
            "definedBy": self.defined_by,
            "nodeFiles": [
                {"node": f.node, "path": f.path or None, "error": f.error or None}
                for f in self.node_files
            ],
            "defaultRoute": self.route or None,
            "why": self.why or None,
            "problems": list(self.problems),
        }


def used_networks(plan: ProfilePlan) -> list[UsedNetwork]:
    """Every NAD the change gives the pods of a namespace (as new pods get it), by role."""
    roles: dict[str, bool] = {}
    spaces: dict[str, set[str]] = {}

    def use(network: str, default: bool, namespace: str) -> None:
        roles[network] = roles.get(network, False) or default
        spaces.setdefault(network, set()).add(namespace)

    for ns in plan.namespaces:
        after = {c.key: c.after for c in ns.new_pod}
        with contextlib.suppress(AnnotationError):  # the planner said so
            if after.get(DEFAULT_NETWORK_KEY):
                ref = parse_default_network(str(after[DEFAULT_NETWORK_KEY]), ns.namespace)
                use(f"{ref.namespace}/{ref.name}", True, ns.namespace)
        with contextlib.suppress(AnnotationError):  # the planner said so
            for sel in parse_networks(after.get(NETWORKS_KEY) or ""):
                ref = sel.ref(ns.namespace)
                use(f"{ref.namespace}/{ref.name}", False, ns.namespace)
    return [UsedNetwork(n, roles[n], tuple(sorted(spaces[n]))) for n in sorted(roles)]


def check_networks(
    used: Sequence[UsedNetwork],
    nad_configs: Mapping[str, str],
    node_files: Mapping[str, Sequence[NodeFile]],
) -> list[NetworkCheck]:
    """Judge each used network. `nad_configs`: "ns/name" -> spec.config ("" when defined per
    node; absent: no such NAD). `node_files`: NAD name -> what each readable node has."""
    return [_check(u, nad_configs, node_files) for u in used]


def _check(
    used: UsedNetwork, nad_configs: Mapping[str, str], node_files: Mapping[str, Sequence[NodeFile]]
) -> NetworkCheck:
    base = NetworkCheck(used.network, used.default, used.namespaces, MISSING)
    if used.network not in nad_configs:
        return base  # the profile plan lists it among the missing NADs already
    config = nad_configs[used.network]
    if config:
        route, problem = _judge(used, config, f"its {SPEC_CONFIG}")
        return NetworkCheck(
            used.network,
            used.default,
            used.namespaces,
            SPEC_CONFIG,
            route=route.verdict if used.default else "",
            why=route.why if used.default else "",
            problems=(problem,) if problem else (),
        )
    name = used.network.split("/", 1)[1]
    files = tuple(node_files.get(name, ()))
    problems: list[str] = []
    verdicts: list[tuple[NodeFile, DefaultRoute]] = []
    for f in files:
        if f.error:
            problems.append(f"{used.network}: {f.error}")
            continue
        judged, problem = _judge(used, f.text, f"node {f.node}'s {f.path}")
        verdicts.append((f, judged))
        if problem:
            problems.append(problem)
    verdict, why = _combine(name, verdicts, known=bool(files))
    return NetworkCheck(
        used.network,
        used.default,
        used.namespaces,
        PER_NODE,
        node_files=files,
        route=verdict if used.default else "",
        why=why if used.default else "",
        problems=tuple(problems),
    )


def _judge(used: UsedNetwork, config: str, where: str) -> tuple[DefaultRoute, str]:
    """The verdict on one config, and the problem it makes ("" none)."""
    try:
        conflist = load_conflist(config, fallback_name=used.network.split("/", 1)[1])
    except CniConfigError as err:
        return DefaultRoute(UNKNOWN, str(err)), f"{used.network}: {where} is broken: {err}"
    route = judge_default_route(conflist)
    if used.default and route.verdict == NO:
        return route, (
            f"{used.network} is not a default network ({where} gives no default route: "
            f"{route.why}); the agent would refuse the switch and keep the old default"
        )
    return route, ""


def _combine(
    name: str, verdicts: Sequence[tuple[NodeFile, DefaultRoute]], *, known: bool
) -> tuple[str, str]:
    if not known:
        return UNKNOWN, (
            f"{per_node_summary(name)}: no node's conf dir is readable from here, so each "
            "node's file decides at the switch"
        )
    if not verdicts:
        return UNKNOWN, "no node has a usable conf file"
    kinds = {r.verdict for _f, r in verdicts}
    for verdict in (NO, UNKNOWN):
        if verdict in kinds:
            return verdict, "; ".join(
                f"node {f.node}: {r.why}" for f, r in verdicts if r.verdict == verdict
            )
    return YES, "; ".join(f"node {f.node}: {r.why}" for f, r in verdicts)
