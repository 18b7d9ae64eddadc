"""`netshift plan`: what applying (or deleting) a NetworkProfile would do, read-only.

The shell around controller.profileplan and cli.netcheck: read the profile file
and the cluster (profiles, namespaces, running pods, NADs: GETs only), and the
conf files of the networks defined per node (NADs without spec.config) where a
node's conf dir is readable from here (`--node-conf-dir NODE=DIR`; on the local
cluster, its node's), plan, print a table or JSON. Exit 0 when applying is safe,
1 when the profile is invalid, needs a NetworkAttachmentDefinition that does not
exist, makes a network the default that gives no default route, or uses a
per-node network a node has no conf file for; 2 when the file or the cluster
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from cli import connect

if TYPE_CHECKING:
    from cli.netcheck import NetworkCheck, NodeFile
    from controller.profileplan import AnnotationChange, ProfilePlan
    from controller.rollout import Snapshot
    from netshift.kube import Kube

EXIT_SAFE = 0
EXIT_UNSAFE = 1
EXIT_ERROR = 2


def add_parser(sub: Any, local: bool = True) -> None:
    p = sub.add_parser(
        "plan",
        help="show what applying (or deleting) a NetworkProfile would do; changes nothing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "-f", "--filename", help="the NetworkProfile manifest (YAML or JSON; - for stdin)"
    )
    what.add_argument("--delete", metavar="NAME", help="plan deleting this NetworkProfile")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.add_argument(
        "--node-conf-dir",
        action="append",
        default=[],
        metavar="NODE=DIR",
        help="a node's Multus conf dir, readable from here, for the networks defined per node "
        "(repeatable)" + ("; on the local cluster, its real nodes' are used" if local else ""),
    )
    connect.add_arguments(p, local)
    p.set_defaults(func=run)


class _Unreadable(Exception):
    pass


def read_manifest(filename: str, stdin: TextIO | None = None) -> Any:
    """The one document of the file (the API would see the same object)."""
    import yaml

    try:
        if filename == "-":
            text = (stdin or sys.stdin).read()
        else:
            with open(filename, encoding="utf-8") as f:
                text = f.read()
    except OSError as err:
        raise _Unreadable(f"cannot read {filename}: {err.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ValueError(f"{filename} is not YAML: {err}") from None
    if len(docs) != 1:
        raise ValueError(f"{filename}: expected one NetworkProfile, found {len(docs)} documents")
    return docs[0]


def read_cluster(kube: Kube) -> tuple[Snapshot, dict[str, str]]:
    """The cluster now, as the controller's caches would show it; and every NAD's spec.config
    ("ns/name" -> its text, "" for a network defined per node)."""
    from controller.rollout import Snapshot
    from netshift.cni.nad import nad_spec_config
    from netshift.kube import (
        RUNNING_PODS,
        ApiError,
        nad_path,
        namespace_path,
        object_key,
        pod_path,
        profile_path,
    )
    from netshift.pod import Pod
    from netshift.podip import nad_main_plugin
    from netshift.policy import Profile, ProfileError, profile_from_object

    profiles: list[Profile] = []
    invalid: dict[str, str] = {}
    for obj in kube.get(profile_path()).get("items", []):
        try:
            profiles.append(profile_from_object(obj))
        except ProfileError as err:
            invalid[str((obj.get("metadata") or {}).get("name"))] = str(err)
    namespaces = {
        str(meta.get("name")): {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        for meta in (ns.get("metadata") or {} for ns in kube.get(namespace_path())["items"])
    }
    pods = [Pod.from_object(o) for o in kube.get(pod_path(), **RUNNING_PODS).get("items", [])]
    try:
        nad_objects = kube.get(nad_path()).get("items", [])
    except ApiError as err:
        if err.status != 404:
            raise
        nad_objects = []  # no NAD CRD: no NAD exists
    configs = {object_key(o): nad_spec_config(o) for o in nad_objects}
    snapshot = Snapshot(
        profiles=sorted(profiles, key=lambda p: p.name),
        namespaces=namespaces,
        pods=pods,
        nads=set(configs),
        invalid_profiles=invalid,
        nad_plugins={object_key(o): nad_main_plugin(o) for o in nad_objects},
    )
    return snapshot, configs


def node_conf_dirs(args: argparse.Namespace) -> dict[str, str]:
    """Node name -> its Multus conf dir as readable from here: the ones given, else the local
    cluster's own node when the plan talks to it."""
    dirs: dict[str, str] = {}
    for item in args.node_conf_dir:
        node, sep, path = item.partition("=")
        if not sep or not node or not path:
            raise ValueError(f"--node-conf-dir {item!r}: expected NODE=DIR")
        dirs[node] = path
    if dirs or args.state_dir is None:  # given, or a kubectl plugin: no local cluster
        return dirs
    local = os.path.join(args.state_dir, "kubeconfig")
    used = connect.kubeconfig_path(args.kubeconfig, args.state_dir)
    if used is not None and os.path.isfile(local) and os.path.samefile(used, local):
        from localcluster.cluster import LocalCluster
        from localcluster.realnode import RealNode

        for node in LocalCluster(args.state_dir).nodes:
            if isinstance(node, RealNode):
                dirs[node.name] = str(node.layout.cluster_conf_dir)
    return dirs


def read_node_files(names: Sequence[str], dirs: Mapping[str, str]) -> dict[str, list[NodeFile]]:
    """Each per-node network's conf file on each node whose conf dir is readable here."""
    from cli.netcheck import NodeFile
    from netshift.cni.confdir import NodeConfDir
    from netshift.cni.nodeconf import NodeConfError

    found: dict[str, list[NodeFile]] = {}
    for name in names:
        for node, path in sorted(dirs.items()):
            try:
                conf = NodeConfDir(path, node).lookup(name)
            except NodeConfError as err:
                found.setdefault(name, []).append(NodeFile(node, error=str(err)))
            else:
                found.setdefault(name, []).append(NodeFile(node, conf.path, conf.text))
    return found


def run(args: argparse.Namespace) -> int:
    from cli.netcheck import check_networks, used_networks
    from controller.profileplan import plan_apply, plan_delete

    obj: Any = None
    if args.filename is not None:
        try:
            obj = read_manifest(args.filename)
        except _Unreadable as err:
            print(f"netshift plan: {err}", file=sys.stderr)
            return EXIT_ERROR
        except ValueError as err:
            print(f"netshift plan: invalid: {err}", file=sys.stderr)
            return EXIT_UNSAFE
    try:
        dirs = node_conf_dirs(args)
    except ValueError as err:
        print(f"netshift plan: {err}", file=sys.stderr)
        return EXIT_ERROR
    try:
        snapshot, nad_configs = read_cluster(connect.connect(args))
    except Exception as err:  # kubeconfig, TLS, connection, 403 ...
        print(f"netshift plan: cannot read the cluster: {err}", file=sys.stderr)
        return EXIT_ERROR
    now = datetime.now(UTC)
    result = (
        plan_delete(args.delete, snapshot, now) if obj is None else plan_apply(obj, snapshot, now)
    )
    used = used_networks(result)
    per_node = [u.network.split("/", 1)[1] for u in used if nad_configs.get(u.network) == ""]
    checks = check_networks(used, nad_configs, read_node_files(per_node, dirs))
    problems = [p for c in checks for p in c.problems]
    safe = result.safe and not problems
    if args.output == "table":
        print(render(result, checks))
    else:
        data = result.to_json()
        data["safe"] = safe
        data["networks"] = [c.to_json() for c in checks]
        data["networkProblems"] = problems
        json.dump(data, sys.stdout, indent=2)
        print()
        for error in result.errors:
            print(f"netshift plan: invalid: {error}", file=sys.stderr)
        for problem in problems:
            print(f"netshift plan: {problem}", file=sys.stderr)
    return EXIT_SAFE if safe else EXIT_UNSAFE


# --- the human view ------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _diff_lines(changes: Sequence[AnnotationChange], indent: str = "    ") -> list[str]:
    lines = []
    for c in changes:
        if c.after is None:
            lines.append(f"{indent}- {c.key}: {c.before}")
        elif c.before is None:
            lines.append(f"{indent}+ {c.key}: {c.after}")
        else:
            lines.append(f"{indent}~ {c.key}: {c.before} -> {c.after}")
    return lines


def _rollout_text(plan: ProfilePlan) -> str:
    if plan.profile is None:
        return (
            "deleted: its namespaces go to the next profile that selects them; where there is "
            "none, what it injected is taken back from the running pods"
        )
    r = plan.profile.rollout
    if r.existing_pods != "Live":
        return "existingPods Ignore: only new pods get it; running pods keep their networks"
    text = f"Live: running pods are switched, at most {r.max_concurrent} at a time"
    if r.paused:
        text += " (paused: nothing starts until resumed)"
    if r.max_failures:
        text += f", halting after {r.max_failures} failed"
    return text


def render(plan: ProfilePlan, checks: Sequence[NetworkCheck] = ()) -> str:
    title = f'NetworkProfile "{plan.name}" ({plan.action})'
    if plan.errors:
        return "\n".join([title, *(f"  invalid: {e}" for e in plan.errors), "NOT SAFE to apply"])
    lines = [title, f"  rollout: {_rollout_text(plan)}", ""]
    rows = [
        [
            ns.namespace,
            ns.winner_before or "-",
            ns.winner_after or "-",
            ": ".join(t for t in (ns.conflict, ns.conflict_message) if t) or "-",
            f"{ns.changing}/{ns.running}",
            ns.rollout
            + (f" ({ns.rollout_by})" if ns.rollout_by and ns.rollout_by != plan.name else ""),
            ", ".join(ns.missing_networks) or "-",
        ]
        for ns in plan.namespaces
    ]
    if rows:
        lines += _table(
            [
                "NAMESPACE",
                "PROFILE NOW",
                "PROFILE AFTER",
                "CONFLICT",
                "PODS CHANGING",
                "ROLLOUT",
                "MISSING NADS",
            ],
            rows,
        )
    else:
        lines.append("  selects no namespace")
    for ns in plan.namespaces:
        if ns.after_remove or ns.remove_problem:
            lines += [
                "",
                f"{ns.namespace}: "
                + "; ".join(t for t in (ns.after_remove, ns.remove_problem) if t),
            ]
        if ns.sample:
            lines += ["", f"{ns.namespace}: sample pod {ns.sample}", *_diff_lines(ns.sample_diff)]
        if ns.new_pod and ns.changes_hands:
            lines += [f"{ns.namespace}: new pods get", *_diff_lines(ns.new_pod)]
    changing = sum(ns.changing for ns in plan.namespaces)
    rolled = sum(ns.will_roll for ns in plan.namespaces)
    spaces = sum(1 for ns in plan.namespaces if ns.changing)
    lines += _network_lines(checks)
    lines.append("")
    lines.append(
        f"{_count(changing, 'running pod')} would change in {_count(spaces, 'namespace')}; "
        f"the controller would patch {rolled} of them"
    )
    problems = [p for c in checks for p in c.problems]
    if plan.missing_networks:
        lines.append(
            "NOT SAFE to apply: NetworkAttachmentDefinitions that do not exist: "
            + ", ".join(plan.missing_networks)
        )
    lines += [f"NOT SAFE to apply: {p}" for p in problems]
    if plan.remove_problems:
        lines.append("NOT SAFE to apply: " + "; ".join(plan.remove_problems))
    if not plan.missing_networks and not problems and not plan.remove_problems:
        lines.append("safe to apply")
    return "\n".join(lines)


def _defined_by(c: NetworkCheck) -> str:
    if c.defined_by != "per node":
        return c.defined_by
    found = [f"{f.node}: {f.path or 'NONE'}" for f in c.node_files]
    return "per node" + (f" ({', '.join(found)})" if found else " (no node's files readable here)")


def _network_lines(checks: Sequence[NetworkCheck]) -> list[str]:
    if not checks:
        return []
    rows = [
        [
            c.network,
            "default" if c.default else "secondary",
            _defined_by(c),
            f"{c.route}: {c.why}" if c.route else "-",
        ]
        for c in checks
    ]
    lines = ["", *_table(["NETWORK", "USED AS", "DEFINED BY", "DEFAULT ROUTE"], rows)]
    for c in checks:
        for f in c.node_files:
            if f.text:
                lines.append(f"{c.network} on node {f.node}, {f.path}:")
                lines += [f"    {line}" for line in f.text.rstrip().splitlines()]
    return lines
