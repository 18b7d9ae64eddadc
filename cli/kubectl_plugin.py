"""`kubectl netshift plan|rollout|status ...`: netshift's operator commands as a kubectl plugin.

kubectl runs any `kubectl-netshift` on the PATH for `kubectl netshift ...`, with the
arguments after `netshift`; netshift installs one (pyproject's [project.scripts]). The
commands are `netshift plan`, `netshift rollout` and the cluster status (cli/status.py),
against the cluster kubectl would use: --kubeconfig, else $KUBECONFIG, else in-cluster
or ~/.kube/config. kubectl passes no flag of its own to a plugin (it refuses one before
the plugin's name), so `--kubeconfig` goes after the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cli import plan, rollout, status
from netshift import logs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl netshift",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    plan.add_parser(sub, local=False)
    rollout.add_parser(sub, local=False)
    status.add_parser(sub, local=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logs.setup(None)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
