"""The CNI floor of the hot-plug and rollout benches: the plugin's own ADDs, run directly."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

CNI_DIR = "/usr/lib/cni"


class Floor:
    """Bridge + host-local ADDs exec'd directly into fresh network namespaces (root).

    What a runtime does for one attachment, with nothing of netshift: the
    namespace is made first (not timed), then the plugin binary is exec'd with
    the same kind of config the benches' networks have (timed), then DEL and
    the namespace goes. `close` deletes the bridge.
    """

    def __init__(self, ipam_dir: Path, bridge: str, subnet: str, ifname: str = "net1") -> None:
        self.bridge = bridge
        self.ifname = ifname
        self.count = 0
        config = {
            "cniVersion": "1.0.0",
            "name": f"floor-{bridge}",
            "type": "bridge",
            "bridge": bridge,
            "isGateway": False,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "dataDir": str(ipam_dir),
            },
        }
        self.stdin = json.dumps(config).encode()

    def add_one(self) -> float:
        """Seconds of one ADD."""
        i = self.count
        self.count += 1
        ns = f"nsfloor-{os.getpid()}-{i}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        env = {
            "CNI_CONTAINERID": f"floor{i}",
            "CNI_NETNS": f"/var/run/netns/{ns}",
            "CNI_IFNAME": self.ifname,
            "CNI_PATH": CNI_DIR,
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }
        plugin = [f"{CNI_DIR}/bridge"]
        try:
            t0 = time.perf_counter()
            add = subprocess.run(
                plugin, input=self.stdin, env={**env, "CNI_COMMAND": "ADD"}, capture_output=True
            )
            took = time.perf_counter() - t0
            if add.returncode != 0:
                raise RuntimeError(f"floor ADD failed: {add.stdout!r} {add.stderr!r}")
            subprocess.run(
                plugin, input=self.stdin, env={**env, "CNI_COMMAND": "DEL"}, capture_output=True
            )
        finally:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        return took

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def floor_adds(
    count: int, ipam_dir: Path, bridge: str, subnet: str, ifname: str = "net1"
) -> list[float]:
    """Seconds of `count` serial ADDs (see Floor)."""
    floor = Floor(ipam_dir, bridge, subnet, ifname)
    try:
        return [floor.add_one() for _ in range(count)]
    finally:
        floor.close()
