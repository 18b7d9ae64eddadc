"""Processes of the local cluster: what one is, whether it lives, and its environment."""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Proc:
    """One long-running process of the plane."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    healthy: Callable[[], bool] | None = None
    # Run once the process is healthy (e.g. register the webhook with the apiserver).
    after_healthy: Callable[[], None] | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for children: no proxy variables, so loopback stays loopback."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; it only waits for its parent to reap it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_ok(url: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        handler = urllib.request.ProxyHandler({})
        opener = urllib.request.build_opener(handler, urllib.request.HTTPSHandler(context=ctx))
        with opener.open(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except Exception:
        return False


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def main_python() -> Sequence[str]:
    """The command that runs netshift's own CLI in child processes."""
    # -P: never put the working directory on sys.path; a state dir holding a folder
    # named like a package (agent/, webhook/) must not shadow netshift's own.
    return [sys.executable, "-P", "-m", "cli.main"]


def write_kubeconfig(
    path: Path, server: str, ca_file: Path, cert: Path, key: Path, user: str
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "netshift",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "netshift", "context": {"cluster": "netshift", "user": user}}],
        "current-context": "netshift",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    path.chmod(0o600)
