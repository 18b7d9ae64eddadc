"""`netshift demo`: move a namespace from one CNI network to another while its pods keep running.

On the local cluster (brought up if needed): by default on its real node
(kubelet + containerd + Multus, real containers behind a Service; see
realdemo.py), or with `--node sim` on the node simulator (see simdemo.py).
"""

from __future__ import annotations

import argparse
import sys

from localcluster import realdemo, simdemo
from localcluster.cluster import LocalCluster, add_network_arguments
from localcluster.state import stored_kind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default="./.netshift")
    add_network_arguments(parser)
    parser.add_argument(
        "--node",
        choices=("real", "sim"),
        default=None,
        help="the node to run on: real (default; kubelet + containerd + Multus) or sim "
        "(the node simulator); a state dir keeps the node it was first brought up with",
    )
    parser.add_argument("--pods", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the demo objects in place")


def run(args: argparse.Namespace) -> int:
    node = args.node or stored_kind(args.state_dir) or "real"
    if node == "sim":
        return simdemo.run(args)
    say = print
    cluster = LocalCluster(
        args.state_dir,
        pod_subnet=args.pod_subnet,
        bridge=args.bridge,
        ip_family=args.ip_family,
        pod_subnet6=args.pod_subnet6,
        node="real",
    )
    say(f"== bringing up the local cluster in {cluster.state_dir} (real node)")
    cluster.up(say=lambda line: say("   " + line))
    ok = realdemo.run(cluster, args.pods, args.keep, say)
    say(f"export KUBECONFIG={cluster.kubeconfig}   # to look around; `make down` stops it all")
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
