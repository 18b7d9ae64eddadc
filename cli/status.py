"""`kubectl netshift status`: netshift on a cluster at a glance, read-only.

Its three workloads in netshift-system (ready of wanted, and which controller replica
holds the Lease), its webhook configurations (failure policy, CA bundle patched in or
not), and one line per NetworkProfile saying what `netshift rollout status` would.
Exit 0 when every workload is fully ready and no rollout failed or is stuck, 1
otherwise, 3 when the cluster cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cli import connect

if TYPE_CHECKING:
    from controller.progress import Progress
    from netshift.kube import Kube

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_ERROR = 3
NAMESPACE = "netshift-system"
WORKLOADS = (
    ("deployments", "netshift-webhook"),
    ("deployments", "netshift-controller"),
    ("daemonsets", "netshift-agent"),
)
WEBHOOK_CONFIGS = (("mutating", "netshift"), ("validating", "netshift"))
LEASE = "netshift-controller"


def add_parser(sub: Any, local: bool = True) -> None:
    p = sub.add_parser(
        "status",
        help="netshift's workloads, webhook configurations and rollouts on the cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connect.add_arguments(p, local)
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Workload:
    name: str
    want: int | None  # None: not installed
    ready: int = 0

    @property
    def healthy(self) -> bool:
        return self.want is not None and self.ready >= self.want

    def line(self) -> str:
        if self.want is None:
            return f"{self.name:22} not installed"
        return f"{self.name:22} {self.ready}/{self.want} ready"


def workload(name: str, obj: Mapping[str, Any] | None) -> Workload:
    """Ready of wanted, from a Deployment's or a DaemonSet's status."""
    if obj is None:
        return Workload(name, None)
    status = obj.get("status") or {}
    if obj.get("kind") == "DaemonSet":
        return Workload(
            name, int(status.get("desiredNumberScheduled", 0)), int(status.get("numberReady", 0))
        )
    want = (obj.get("spec") or {}).get("replicas", 1)
    return Workload(name, int(want), int(status.get("readyReplicas", 0)))


def webhook_line(configs: Sequence[Mapping[str, Any] | None]) -> tuple[str, bool]:
    """The webhook configurations' failure policies and whether each has its CA bundle."""
    hooks = [w for c in configs if c is not None for w in c.get("webhooks") or []]
    if len(hooks) == 0 or any(c is None for c in configs):
        return "webhook configurations   not installed", False
    policies = sorted({str(w.get("failurePolicy", "Fail")) for w in hooks})
    missing = [w["name"] for w in hooks if not (w.get("clientConfig") or {}).get("caBundle")]
    text = f"webhook configurations   {len(hooks)} webhooks, failurePolicy {'/'.join(policies)}, "
    if missing:
        return text + f"no CA bundle yet: {', '.join(missing)}", False
    return text + "CA bundle set", True


def report(
    workloads: Sequence[Workload],
    leader: str | None,
    configs: Sequence[Mapping[str, Any] | None],
    profiles: Sequence[Progress],
) -> tuple[list[str], bool]:
    """The lines to print and whether all is well."""
    from controller.progress import FAILED, STUCK, progress_line

    lines = []
    for w in workloads:
        text = w.line()
        if w.name == "netshift-controller" and w.want is not None:
            text += f", leader {leader}" if leader else ", no leader"
        lines.append(text)
    hook_text, hooks_ok = webhook_line(configs)
    lines.append(hook_text)
    if profiles:
        lines.append("")
        lines.extend(progress_line(p) for p in profiles)
    else:
        lines.append("no NetworkProfiles")
    ok = (
        all(w.healthy for w in workloads)
        and bool(leader)
        and hooks_ok
        and not any(p.state in (FAILED, STUCK) for p in profiles)
    )
    return lines, ok


def _get(kube: Kube, path: str) -> dict[str, Any] | None:
    from netshift.kube import ApiError

    try:
        return kube.get(path)
    except ApiError as err:
        if err.status == 404:
            return None
        raise


def read(kube: Kube) -> tuple[list[str], bool]:
    from controller.progress import read_progress
    from netshift.kube import (
        APPS_V1,
        api_path,
        lease_path,
        profile_path,
        webhook_configuration_path,
    )

    workloads = [
        workload(name, _get(kube, api_path(APPS_V1, kind, NAMESPACE, name)))
        for kind, name in WORKLOADS
    ]
    lease = _get(kube, lease_path(NAMESPACE, LEASE)) or {}
    leader = (lease.get("spec") or {}).get("holderIdentity")
    configs = [_get(kube, webhook_configuration_path(kind, name)) for kind, name in WEBHOOK_CONFIGS]
    items = (_get(kube, profile_path()) or {}).get("items") or []
    profiles = [read_progress(obj) for obj in sorted(items, key=lambda o: o["metadata"]["name"])]
    return report(workloads, leader, configs, profiles)


def run(args: argparse.Namespace) -> int:
    try:
        lines, ok = read(connect.connect(args))
    except Exception as err:  # kubeconfig, TLS, connection, 403 ...
        print(f"netshift status: {err}", file=sys.stderr)
        return EXIT_ERROR
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_UNHEALTHY
