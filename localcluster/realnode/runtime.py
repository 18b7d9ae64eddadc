"""The node's container runtime from outside: ctr and crictl against its containerd."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster.errors import NodeError
from localcluster.procs import clean_env
from localcluster.realnode.layout import Layout
from localcluster.realnode.tools import find_node_binary


@dataclass(frozen=True)
class Sandbox:
    """One pod sandbox as crictl lists it."""

    id: str
    name: str
    namespace: str
    labels: dict[str, str]


class Runtime:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            [
                find_node_binary("ctr"),
                f"--address={self.layout.socket}",
                "--namespace=k8s.io",
                *args,
            ],
            check=check,
            timeout=timeout,
        )

    def crictl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            [find_node_binary("crictl"), f"--runtime-endpoint={self.layout.endpoint}", *args],
            check=check,
            timeout=timeout,
        )

    def ready(self) -> bool:
        return self.ctr("version", check=False, timeout=5).returncode == 0

    def sandboxes(self) -> list[Sandbox]:
        done = self.crictl("pods", "-o", "json", check=False)
        if done.returncode != 0:
            return []
        items: list[dict[str, Any]] = json.loads(done.stdout or "{}").get("items", [])
        return [
            Sandbox(
                item["id"],
                item.get("metadata", {}).get("name", ""),
                item.get("metadata", {}).get("namespace", ""),
                item.get("labels", {}),
            )
            for item in items
        ]

    def shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 processes started for this node's containerd."""
        pids = []
        socket = str(self.layout.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and socket in cmd:
                pids.append(int(entry.name))
        return pids


def _run(argv: Sequence[str], *, check: bool, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, env=clean_env(), timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        if check:
            raise NodeError(f"{' '.join(argv[:3])} timed out after {timeout:.0f}s") from err
        return subprocess.CompletedProcess(list(argv), 124, "", "timed out")
    if check and done.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-1500:]}")
    return done
