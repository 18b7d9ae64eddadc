"""`netshift demo` — the README's first command — shows a clean live switch on a fresh cluster.

It brings up a whole local cluster of its own (plane, node simulator, agent,
webhook registered with the apiserver, controller), so this one test covers
`netshift up` with every netshift process as a newcomer runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env


def test_the_demo_on_the_node_simulator_switches_every_pod_without_restart_or_loss(
    cluster: LocalCluster,
) -> None:
    state = Path(tempfile.mkdtemp(prefix="netshift-demo-"))
    cmd = [sys.executable, "-m", "cli.main", "--log-format=text", "demo", "--node", "sim"]
    net = ["--pod-subnet", f"10.246.{os.getpid() % 250}.0/24", "--bridge", f"nsd{os.getpid()}"[:15]]
    try:
        done = subprocess.run(
            [*cmd, "--state-dir", str(state), *net, "--pods", "3"],
            capture_output=True,
            text=True,
            timeout=600,
            env=clean_env(),
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert "webhook: started" in out and "controller: started" in out, out
        assert "default-network=netshift-demo/old-cni" in out, "the webhook did not inject"
        assert "verdict: same pods, same namespaces, no restart, no lost probe" in out, out
        assert "DEAD" not in out and "CHANGED" not in out
        demo_cluster = LocalCluster(state)
        assert not demo_cluster.crashed()
    finally:
        LocalCluster(state).down(say=lambda _l: None)
        shutil.rmtree(state, ignore_errors=True)
