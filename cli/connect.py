"""Which cluster the operator commands (`plan`, `rollout`) talk to, resolved as `netshift kubectl` does.

`--kubeconfig` if given, else `$KUBECONFIG`, else the local cluster's kubeconfig in
`--state-dir` when there is one, else the usual in-cluster / `~/.kube/config` lookup.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netshift.kube import Kube

DEFAULT_STATE_DIR = "./.netshift"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig (default: $KUBECONFIG, else STATE_DIR/kubeconfig, else ~/.kube/config)",
    )
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help="the local cluster whose kubeconfig to use when $KUBECONFIG is not set",
    )


def kubeconfig_path(explicit: str | None, state_dir: str) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("KUBECONFIG"):
        return None  # Kube.from_kubeconfig reads it
    local = os.path.join(state_dir, "kubeconfig")
    return local if os.path.isfile(local) else None


def connect(args: argparse.Namespace) -> Kube:
    from netshift.kube import Kube

    return Kube.from_kubeconfig(kubeconfig_path(args.kubeconfig, args.state_dir))
