"""`netshift nodesim`: run the node simulator (stand-in for kubelet + runtime + Multus)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType

from netshift.kube import Kube
from nodesim.sim import NodeSimulator, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--node", required=True, help="the Node object this simulator runs")
    parser.add_argument("--state-dir", required=True, help="its records, CNI config and IPAM store")
    parser.add_argument("--bridge", default="nsbr0", help="bridge of the cluster default network")
    parser.add_argument("--subnet", default="10.244.0.0/24", help="pod subnet of this node")
    parser.add_argument(
        "--cni-bin-dir", action="append", default=None, help="CNI plugin dir (repeatable)"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--release-all",
        action="store_true",
        help="tear down every sandbox on record (CNI DEL, netns removed) and exit",
    )


def run(args: argparse.Namespace) -> int:
    sim = NodeSimulator(
        Kube.from_kubeconfig(args.kubeconfig),
        Settings(
            node=args.node,
            state_dir=Path(args.state_dir),
            bridge=args.bridge,
            subnet=args.subnet,
            plugin_dirs=tuple(args.cni_bin_dir or ["/usr/lib/cni", "/opt/cni/bin"]),
            workers=args.workers,
        ),
    )

    if args.release_all:
        return 1 if sim.release_all() else 0

    def stop(_sig: int, _frame: FrameType | None) -> None:
        sim.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sim.run()
    return 0
