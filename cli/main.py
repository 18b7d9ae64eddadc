"""The `netshift` command: one entry point, a subcommand per component.

Component subcommands import their package lazily so that `netshift up` does
not pay for FastAPI or pyroute2, and so that this shared package never
depends on the components at import time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from cli import plan, rollout
from cli.connect import DEFAULT_STATE_DIR
from localcluster.cluster import add_network_arguments
from netshift import logs

# subcommand -> (module with add_arguments(parser) and run(args) -> int, help)
COMPONENTS: dict[str, tuple[str, str]] = {
    "webhook": ("webhook.main", "run the mutating/validating admission webhook"),
    "agent": ("agent.main", "run the node agent (hot-plug networks into running pods)"),
    "controller": ("controller.main", "run the rollout controller"),
    "nodesim": ("nodesim.main", "run the node simulator (stand-in for kubelet + runtime + Multus)"),
    "demo": ("localcluster.demo", "switch a namespace's default network live and show the pods"),
}


def _cmd_up(args: argparse.Namespace) -> int:
    from localcluster.cluster import LocalCluster
    from localcluster.errors import ClusterError
    from localcluster.state import stored_kind

    started = time.monotonic()
    try:
        # A state dir keeps the node it was made with; a new one gets a real node.
        node = args.node or stored_kind(args.state_dir) or "real"
        cluster = LocalCluster(
            args.state_dir,
            pod_subnet=args.pod_subnet,
            bridge=args.bridge,
            ip_family=args.ip_family,
            pod_subnet6=args.pod_subnet6,
            node=node,
        )
        cluster.up(services=[] if args.plane_only else None)
    except ClusterError as err:
        print(f"netshift up failed: {err}", file=sys.stderr)
        return 1
    names = ", ".join(n.name for n in cluster.nodes)
    print(f"local cluster ready in {time.monotonic() - started:.1f}s (node {names})")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from localcluster.cluster import LocalCluster

    LocalCluster(args.state_dir).down()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from localcluster.cluster import LocalCluster

    cluster = LocalCluster(args.state_dir)
    rows = cluster.status()
    if not rows:
        print("no local cluster in", cluster.state_dir)
        return 1
    for name, pid, alive in rows:
        print(f"{name:26} pid {pid or '-':>8}  {'running' if alive else 'NOT RUNNING'}")
    return 0 if all(alive for _, _, alive in rows) else 1


def _kubectl(argv: list[str]) -> int:
    """`netshift kubectl ARGS`: the pinned kubectl, on the local cluster unless $KUBECONFIG says otherwise."""
    import os

    from localcluster import binaries

    state_dir = DEFAULT_STATE_DIR
    if argv[:1] and argv[0].startswith("--state-dir="):
        state_dir, argv = argv[0].split("=", 1)[1], argv[1:]
    cmd = [binaries.find("kubectl")]
    if not os.environ.get("KUBECONFIG"):
        cmd.append(f"--kubeconfig={os.path.join(state_dir, 'kubeconfig')}")
    os.execv(cmd[0], cmd + argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netshift", description=__doc__)
    parser.add_argument("--log-format", choices=["text", "json"], default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("kubectl", help="the pinned kubectl, pointed at the local cluster")

    up = sub.add_parser("up", help="start (or reuse) the local cluster")
    up.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    add_network_arguments(up)
    up.add_argument(
        "--node",
        choices=["real", "sim"],
        default=None,
        help="real: kubelet + containerd + Multus, netshift as pods (default for a new state "
        "dir); sim: the node simulator, netshift as host processes",
    )
    up.add_argument(
        "--plane-only", action="store_true", help="only etcd + Kubernetes, none of netshift"
    )
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", help="stop every process of the local cluster")
    down.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    down.set_defaults(func=_cmd_down)

    status = sub.add_parser("status", help="show the processes of the local cluster")
    status.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    status.set_defaults(func=_cmd_status)

    plan.add_parser(sub)
    rollout.add_parser(sub)

    for name, (module, help_text) in COMPONENTS.items():
        # No help of its own: `netshift agent --help` reaches the component's parser.
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.set_defaults(component=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kubectl"]:
        return _kubectl(argv[1:])
    parser = build_parser()
    # Component subcommands own their options: parse the head, then hand over.
    known, rest = parser.parse_known_args(argv)
    logs.setup(known.log_format, verbose=known.verbose)
    module_name = getattr(known, "component", None)
    if module_name is None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        result: Any = known.func(known)
        return int(result)
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"netshift {known.command}")
    module.add_arguments(sub)
    sub_args = sub.parse_args(rest)
    return int(module.run(sub_args))


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
