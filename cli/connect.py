"""Which cluster the operator commands (`plan`, `rollout`) talk to, resolved as `netshift kubectl` does.

`--kubeconfig` if given, else `$KUBECONFIG`, else the local cluster's kubeconfig in
`--state-dir` when there is one, else the usual in-cluster / `~/.kube/config` lookup.
As a kubectl plugin (`local=False`) there is no local cluster step: kubectl's own lookup.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netshift.kube import Kube

DEFAULT_STATE_DIR = "./.netshift"


def add_arguments(parser: argparse.ArgumentParser, local: bool = True) -> None:
    if not local:
        parser.add_argument(
            "--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG, ~/.kube/config)"
        )
        parser.set_defaults(state_dir=None)
        return
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


def kubeconfig_path(explicit: str | None, state_dir: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("KUBECONFIG") or state_dir is None:
        return None  # Kube.from_kubeconfig reads $KUBECONFIG, else in-cluster or ~/.kube/config
    local = os.path.join(state_dir, "kubeconfig")
    return local if os.path.isfile(local) else None


def connect(args: argparse.Namespace) -> Kube:
    from netshift.kube import Kube

    return Kube.from_kubeconfig(kubeconfig_path(args.kubeconfig, args.state_dir))
