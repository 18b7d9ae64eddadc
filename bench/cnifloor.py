"""The CNI floor of the hot-plug and rollout benches: the plugin's own ADDs, run directly."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

CNI_DIR = "/usr/lib/cni"


def floor_adds(
    count: int, ipam_dir: Path, bridge: str, subnet: str, ifname: str = "net1"
) -> list[float]:
    """Seconds of `count` serial bridge + host-local ADDs into fresh network namespaces.

    What a runtime does for one attachment, with nothing of netshift: the
    namespace is made first (not timed), then the plugin binary is exec'd with
    the same kind of config the benches' networks have; then DEL and cleanup.
    Needs root.
    """
    config = {
        "cniVersion": "1.0.0",
        "name": f"floor-{bridge}",
        "type": "bridge",
        "bridge": bridge,
        "isGateway": False,
        "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(ipam_dir)},
    }
    stdin = json.dumps(config).encode()
    seconds: list[float] = []
    try:
        for i in range(count):
            ns = f"nsfloor-{os.getpid()}-{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            env = {
                "CNI_CONTAINERID": f"floor{i}",
                "CNI_NETNS": f"/var/run/netns/{ns}",
                "CNI_IFNAME": ifname,
                "CNI_PATH": CNI_DIR,
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            }
            try:
                t0 = time.perf_counter()
                add = subprocess.run(
                    [f"{CNI_DIR}/bridge"],
                    input=stdin,
                    env={**env, "CNI_COMMAND": "ADD"},
                    capture_output=True,
                )
                seconds.append(time.perf_counter() - t0)
                if add.returncode != 0:
                    raise RuntimeError(f"floor ADD failed: {add.stdout!r} {add.stderr!r}")
                subprocess.run(
                    [f"{CNI_DIR}/bridge"],
                    input=stdin,
                    env={**env, "CNI_COMMAND": "DEL"},
                    capture_output=True,
                )
            finally:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    return seconds
