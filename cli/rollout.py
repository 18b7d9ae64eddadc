"""`netshift rollout status|pause|resume PROFILE`: follow and steer a NetworkProfile's rollout.

`status` follows the profile's status (polled) until the rollout is Complete
(exit 0), has failed — rollout.maxFailures reached, or every pod done and some
failed — or cannot finish as it is (invalid spec, existingPods Ignore) (exit 1),
or the timeout passes (exit 2); a profile that does not exist is 1, a cluster that
cannot be reached 3. On a terminal it draws a progress bar; elsewhere
it prints one line per change. `pause` / `resume` set spec.rollout.paused.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from cli import connect

if TYPE_CHECKING:
    from netshift.kube import Kube

EXIT_NOT_FOUND = 1
EXIT_ERROR = 3

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)?")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def duration(text: str) -> float:
    """Seconds of a duration like kubectl's: 90, 90s, 10m, 1h30m, 0 (= no timeout)."""
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 10m, 1h)")
    return total


def add_parser(sub: Any, local: bool = True) -> None:
    p = sub.add_parser(
        "rollout",
        help="follow, pause or resume a NetworkProfile's rollout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", required=True)
    status = verbs.add_parser("status", help="follow the rollout until it is complete")
    status.add_argument("profile")
    status.add_argument(
        "--timeout",
        type=duration,
        default=600.0,
        help="give up after this long (default 10m; 0: never)",
    )
    status.add_argument("--interval", type=duration, default=1.0, help=argparse.SUPPRESS)
    connect.add_arguments(status, local)
    status.set_defaults(func=run_status)
    for verb, paused in (("pause", True), ("resume", False)):
        v = verbs.add_parser(
            verb, help=f"{verb} the rollout (spec.rollout.paused={str(paused).lower()})"
        )
        v.add_argument("profile")
        connect.add_arguments(v, local)
        v.set_defaults(func=run_pause, paused=paused)


def _path(name: str) -> str:
    from netshift.kube import profile_path

    return profile_path(name)


def _get(kube: Kube, name: str) -> dict[str, Any] | None:
    from netshift.kube import ApiError

    try:
        return kube.get(_path(name))
    except ApiError as err:
        if err.status == 404:
            return None
        raise


class _Display:
    """Progress as one bar redrawn in place on a terminal, else one line per change."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.last = ""

    def show(self, shown: str) -> None:
        if shown != self.last:
            if self.tty:
                print(f"\r\x1b[K{shown}", end="", flush=True)
            else:
                print(shown, flush=True)
        self.last = shown

    def end_line(self) -> None:
        """Leave the bar's line before anything else is printed."""
        if self.tty and self.last:
            print()


def run_status(args: argparse.Namespace) -> int:
    kube = connect.connect(args)
    display = _Display(sys.stdout.isatty())
    try:
        return _follow(kube, args, display)
    except KeyboardInterrupt:
        display.end_line()
        return 130
    except Exception as err:  # kubeconfig, TLS, connection, 403 ...
        print(f"\nnetshift rollout status: {err}", file=sys.stderr)
        return EXIT_ERROR


def _follow(kube: Kube, args: argparse.Namespace, display: _Display) -> int:
    """Follow the profile's status until it completes, fails or the timeout passes."""
    from controller.progress import (
        EXIT_TIMEOUT,
        final_message,
        progress_bar,
        progress_line,
        read_progress,
    )

    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    while True:
        obj = _get(kube, args.profile)
        if obj is None:
            display.end_line()
            print(f'NetworkProfile "{args.profile}" not found', file=sys.stderr)
            return EXIT_NOT_FOUND
        progress = read_progress(obj)
        display.show(progress_bar(progress) if display.tty else progress_line(progress))
        code = progress.exit_code
        if code is not None:
            display.end_line()
            print(final_message(progress), flush=True)
            return code
        if deadline is not None and time.monotonic() >= deadline:
            display.end_line()
            print(
                f'NetworkProfile "{args.profile}": timed out after {args.timeout:g}s '
                f"({progress.state}: {progress.message})",
                flush=True,
            )
            return EXIT_TIMEOUT
        time.sleep(
            args.interval
            if deadline is None
            else min(args.interval, max(0.0, deadline - time.monotonic()))
        )


def run_pause(args: argparse.Namespace) -> int:
    from netshift.kube import ApiError

    kube = connect.connect(args)
    verb = "paused" if args.paused else "resumed"
    try:
        kube.patch_merge(_path(args.profile), {"spec": {"rollout": {"paused": args.paused}}})
    except ApiError as err:
        if err.status == 404:
            print(f'NetworkProfile "{args.profile}" not found', file=sys.stderr)
            return EXIT_NOT_FOUND
        print(f"netshift rollout: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(f"networkprofile.netshift.io/{args.profile} {verb}")
    return 0
