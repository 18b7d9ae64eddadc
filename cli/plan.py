"""`netshift plan`: what applying (or deleting) a NetworkProfile would do, read-only.

The shell around controller.profileplan: read the profile file and the cluster
(profiles, namespaces, running pods, NADs: GETs only), plan, print a table or
JSON. Exit 0 when applying is safe, 1 when the profile is invalid or needs a
NetworkAttachmentDefinition that does not exist, 2 when the file or the
cluster cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from cli import connect

if TYPE_CHECKING:
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


def read_cluster(kube: Kube) -> Snapshot:
    """The cluster now, as the controller's caches would show it."""
    from controller.reconcile import NAMESPACES_PATH, PODS_PATH, PROFILES_PATH, RUNNING_PODS
    from controller.rollout import Snapshot
    from netshift.kube import ApiError, nad_path, object_key
    from netshift.pod import Pod
    from netshift.podip import nad_main_plugin
    from netshift.policy import Profile, ProfileError, profile_from_object

    profiles: list[Profile] = []
    invalid: dict[str, str] = {}
    for obj in kube.get(PROFILES_PATH).get("items", []):
        try:
            profiles.append(profile_from_object(obj))
        except ProfileError as err:
            invalid[str((obj.get("metadata") or {}).get("name"))] = str(err)
    namespaces = {
        str(meta.get("name")): {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        for meta in (ns.get("metadata") or {} for ns in kube.get(NAMESPACES_PATH)["items"])
    }
    pods = [Pod.from_object(o) for o in kube.get(PODS_PATH, **RUNNING_PODS).get("items", [])]
    try:
        nad_objects = kube.get(nad_path()).get("items", [])
    except ApiError as err:
        if err.status != 404:
            raise
        nad_objects = []  # no NAD CRD: no NAD exists
    nads = {object_key(o) for o in nad_objects}
    return Snapshot(
        profiles=sorted(profiles, key=lambda p: p.name),
        namespaces=namespaces,
        pods=pods,
        nads=nads,
        invalid_profiles=invalid,
        nad_plugins={object_key(o): nad_main_plugin(o) for o in nad_objects},
    )


def run(args: argparse.Namespace) -> int:
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
        snapshot = read_cluster(connect.connect(args))
    except Exception as err:  # kubeconfig, TLS, connection, 403 ...
        print(f"netshift plan: cannot read the cluster: {err}", file=sys.stderr)
        return EXIT_ERROR
    now = datetime.now(UTC)
    result = (
        plan_delete(args.delete, snapshot, now) if obj is None else plan_apply(obj, snapshot, now)
    )
    if args.output == "table":
        print(render(result))
    else:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
        for error in result.errors:
            print(f"netshift plan: invalid: {error}", file=sys.stderr)
    return EXIT_SAFE if result.safe else EXIT_UNSAFE


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


def render(plan: ProfilePlan) -> str:
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
    lines.append("")
    lines.append(
        f"{_count(changing, 'running pod')} would change in {_count(spaces, 'namespace')}; "
        f"the controller would patch {rolled} of them"
    )
    if plan.missing_networks:
        lines.append(
            "NOT SAFE to apply: NetworkAttachmentDefinitions that do not exist: "
            + ", ".join(plan.missing_networks)
        )
    if plan.remove_problems:
        lines.append("NOT SAFE to apply: " + "; ".join(plan.remove_problems))
    if not plan.missing_networks and not plan.remove_problems:
        lines.append("safe to apply")
    return "\n".join(lines)
