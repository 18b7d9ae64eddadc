"""Figures of the real node: `netshift up` cold and warm, memory of every process, pod Ready time.

    sudo .venv/bin/python bench/realnode.py [--pods 10] [--keep]

What runs: `netshift up` (the real node: containerd + runc, kubelet, kube-proxy, Multus
thick as a DaemonSet, netshift's webhook, controller and agent as pods) in a fresh
temporary state dir with pod subnet 10.246.250.0/24 on bridge nsbrn0, so that it never
meets a developer's `netshift up` or the tests. Binaries and images must be built
(scripts/setup.sh); "cold" is a fresh state dir, not a fresh machine.

It prints: the cold `up` (nothing running), the warm `up` (everything running: what a
second `netshift up` costs), the resident memory of each process of the running system
(the plane, the node's daemons, every containerd shim and every container process,
named by pod), the time from creating a busybox pod to Ready, one at a time and --pods at
once, and hot-plug latency over those pods, one at a time: annotation PATCH → network-status
with net1 and its address (and back), and PATCH → the kernel's netlink event in the pod's
netns (net1 up with its address; net1 deleted). Then `netshift down` (unless --keep) and the state dir is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from netnswatch import NetnsWatch  # bench/netnswatch.py

from localcluster import realnode
from localcluster.cluster import LocalCluster
from netshift.kube import Informer, nad_path, patch_annotations, pod_path


def netshift(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-P", "-m", "cli.main", *args], check=True)
    return time.monotonic() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def pod_of(pid: int) -> str:
    """namespace/name of the pod a process runs in, from its cgroup (kubepods/…/pod<uid>/…)."""
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return "?"
    for part in cgroup.split("/"):
        if part.startswith("pod"):
            return part[3:]
    return "?"


def memory_table(cluster: LocalCluster, uid_names: dict[str, str]) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    for name, pid, alive in cluster.status():
        if alive and pid is not None:
            rows.append((name, rss_kib(pid)))
    node = cluster.single_node(realnode.RealNode)
    for shim in node.runtime.shim_pids():
        rows.append(("containerd-shim-runc-v2", rss_kib(shim)))
        for child in children(shim):
            comm = Path(f"/proc/{child}/comm").read_text().strip()
            rows.append((f"  {uid_names.get(pod_of(child), '?')}: {comm}", rss_kib(child)))
            for grandchild in children(child):
                comm = Path(f"/proc/{grandchild}/comm").read_text().strip()
                rows.append((f"    {comm}", rss_kib(grandchild)))
    return rows


def pod_ready_seconds(cluster: LocalCluster, names: list[str]) -> list[float]:
    image = realnode.image_name("BUSYBOX_IMAGE")
    started = time.monotonic()
    for name in names:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "100000"],
                    }
                ],
            },
        }
        cluster.kube().create(pod_path("default"), pod)
    ready: dict[str, float] = {}
    while len(ready) < len(names) and time.monotonic() - started < 120:
        for pod in cluster.kube().get(pod_path("default"))["items"]:
            name = pod["metadata"]["name"]
            conds = pod.get("status", {}).get("conditions", [])
            if (
                name in names
                and name not in ready
                and any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            ):
                ready[name] = time.monotonic() - started
        time.sleep(0.05)
    return [ready.get(n, float("nan")) for n in names]


NETWORKS = "k8s.v1.cni.cncf.io/networks"
STATUS = "k8s.v1.cni.cncf.io/network-status"


def has_net1(pod: dict[str, Any]) -> bool:
    entries = json.loads(pod["metadata"].get("annotations", {}).get(STATUS, "[]"))
    return any(e.get("interface") == "net1" and e.get("ips") for e in entries)


def sandbox_netns(node: realnode.RealNode, namespace: str, name: str) -> str:
    """The netns path of the pod's sandbox, as containerd's CRI tells it."""
    ids = node.runtime.crictl("pods", "--namespace", namespace, "--name", name, "-q").stdout.split()
    spec = json.loads(node.runtime.crictl("inspectp", ids[0]).stdout)["info"]["runtimeSpec"]
    return str(next(n["path"] for n in spec["linux"]["namespaces"] if n["type"] == "network"))


def hotplug_ms(cluster: LocalCluster, pods: list[str], rounds: int) -> dict[str, list[float]]:
    """PATCH of the networks annotation → network-status shows net1 with its address (plug)
    or without net1 (unplug), one pod at a time, seen by this script's own pod watch (as
    bench/hotplug.py times the node simulator's); and PATCH → the kernel's event in the
    pod's netns (net1 up with its address, net1 deleted), "plug in netns" / "unplug in netns"."""
    kube = cluster.kube()
    node = cluster.single_node(realnode.RealNode)
    netns = {name: sandbox_netns(node, "default", name) for name in pods}
    config = {
        "cniVersion": "1.0.0",
        "name": "bench",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "nsbrn1",
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.246.251.0/24"}]],
                    "dataDir": str(node.root / "cni" / "bench"),
                },
            }
        ],
    }
    kube.create(
        nad_path("default"),
        {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "bench"},
            "spec": {"config": json.dumps(config)},
        },
    )
    out: dict[str, list[float]] = {
        "plug": [],
        "unplug": [],
        "plug in netns": [],
        "unplug in netns": [],
    }
    waiting: dict[str, tuple[bool, threading.Event]] = {}

    def on_event(_kind: str, pod: dict[str, Any]) -> None:
        wanted = waiting.get(pod["metadata"]["name"])
        if wanted is not None and has_net1(pod) == wanted[0]:
            wanted[1].set()

    watch = Informer(kube, pod_path("default"), on_event=on_event, name="bench")
    watch.start()
    if not watch.wait_synced(30):
        raise SystemExit("the bench's pod watch did not sync")
    try:
        for _ in range(rounds):
            for name in pods:
                for op, value in (("plug", "bench@net1"), ("unplug", None)):
                    seen = threading.Event()
                    waiting[name] = (op == "plug", seen)
                    in_netns = NetnsWatch(netns[name], "net1", appear=op == "plug")
                    started, t0 = time.monotonic(), time.time()
                    patch_annotations(kube, pod_path("default", name), {NETWORKS: value})
                    if not seen.wait(30):
                        raise SystemExit(f"{op} of {name} took more than 30 s")
                    out[op].append((time.monotonic() - started) * 1000)
                    del waiting[name]
                    at = in_netns.wait(5)
                    if at is None:
                        raise SystemExit(f"{op} of {name}: no netlink event of net1 in its netns")
                    out[f"{op} in netns"].append((at - t0) * 1000)
    finally:
        watch.stop()
    subprocess.run(["ip", "link", "del", "nsbrn1"], capture_output=True)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="hot-plug rounds over the pods")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    with realnode.machine_lock():
        return run(args)


def run(args: argparse.Namespace) -> int:
    state = Path(tempfile.mkdtemp(prefix="netshift-bench-real-"))
    net = ["--state-dir", str(state), "--pod-subnet", "10.246.250.0/24", "--bridge", "nsbrn0"]
    try:
        cold = netshift("up", "--node", "real", *net)
        warm = netshift("up", *net)
        cluster = LocalCluster(state)
        one = pod_ready_seconds(cluster, ["bench-one"])[0]
        names = [f"bench-{i}" for i in range(args.pods)]
        many = pod_ready_seconds(cluster, names)
        plug = hotplug_ms(cluster, names, args.rounds)
        pods = cluster.kube().get(pod_path())["items"]
        uid_names = {
            p["metadata"]["uid"]: f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in pods
        }
        rows = memory_table(cluster, uid_names)
        print()
        print(f"netshift up, cold (fresh state dir): {cold:6.1f} s")
        print(f"netshift up, warm (all running):     {warm:6.1f} s")
        print(f"one pod created → Ready:             {one:6.2f} s")
        print(
            f"{args.pods} pods at once → all Ready:       {max(many):6.2f} s "
            f"(median {statistics.median(many):.2f} s)"
        )
        for op, values in plug.items():
            end = "the kernel's event in the pod netns" if "netns" in op else "network-status"
            print(
                f"hot-{op.split()[0]} (PATCH → {end}), n={len(values)}: "
                f"p50 {pct(values, 0.5):.0f} ms, p99 {pct(values, 0.99):.0f} ms"
            )
        print("\nresident memory (RSS) of the running system:")
        for name, kib in rows:
            print(f"  {name:60} {kib / 1024:7.1f} MiB")
        print(f"  {'total':60} {sum(k for _, k in rows) / 1024:7.1f} MiB")
        print(json.dumps({"cold_s": cold, "warm_s": warm, "pod_ready_s": one}))
    finally:
        if not args.keep:
            netshift("down", "--state-dir", str(state))
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"kept: {state}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("bench/realnode.py: run as root")
    sys.exit(main())
