"""Hot-plug latency with N pods on one node: annotation patch → interface in the netns, and status.

    sudo .venv/bin/python bench/hotplug.py [--pods 100] [--plugs K] [--concurrency 10]
                                           [--svg docs/bench/hotplug.svg]

What runs: its own local cluster (localcluster.cluster.LocalCluster: real
etcd, kube-apiserver, controller-manager, scheduler) in a temporary state
directory, with pod subnet 10.247.0.0/24 on bridge nsbhp0 so that it never
meets `netshift up` or the tests; the node simulator (the stand-in for kubelet
+ runtime + Multus); and `netshift agent` as a subprocess with --timing-log,
exactly as `netshift up` starts it. No webhook, no controller: the bench plays
the user who edits pods.

What it does: creates N pods and waits until they run; creates one bridge
network (bridge nsbhp1, host-local 10.247.1.0/24). Then, for K of the pods,
first one at a time and then with --concurrency patches in flight:
- add: PATCH `k8s.v1.cni.cncf.io/networks: hp` (the agent plugs it as net1),
- remove: PATCH the annotation away (the agent unplugs net1),
each timed from just before the PATCH to two ends: the kernel's netlink event
in the pod's namespace that completes the change (net1 up with its address, or
net1 deleted), seen by a socket subscribed before the PATCH; and this script's
own watch on the pods seeing `network-status` with (or without) net1. Every
added interface is also checked in the pod's namespace (up, with its address).

The floor, in the same run, one just before each one-at-a-time add: the
bridge plugin's own ADD (with host-local), exec'd directly into a fresh
network namespace (bench/cnifloor.py). The table after the phases sets netshift's
one-at-a-time add beside it, with the ratios: the verdict against the goals
(p50 <= 2.5x, p99 <= 5x) is on issue 11's path, annotation PATCH -> net1 up with
its address in the pod's netns; the ratio of annotate -> status seen, which adds
the agent's status PATCH and its watch delivery, is printed under it.

What it prints, per mode and operation, p50 and p99 in milliseconds of:
- watch delivery  agent's seen_at - t_patch (the agent got the pod event),
- queue           from seen_at until the reconcile started its work,
- converge        plan + CNI ADD/DEL + verify + records + the pod Event,
- status write    the agent's annotation PATCH,
- status seen     from the agent's done_at until this script's watch saw it,
- in the pod netns t_patch until the kernel's event of the change in the netns,
- end-to-end      t_patch until network-status was seen updated.
The agent's numbers come from its timing log (one JSON line per reconcile that
changed something: seen_at, cni_seconds, status_seconds, done_at); the clocks
are the same machine's.

Beside the tables, a picture (SVG, `--svg`): the distribution of the adds' and the
removes' latencies (annotate -> the change in the pod's netns, and -> status seen; one
at a time and concurrently) against the floor's, with the goals drawn where they lie.

At the end the pods are deleted (and released by the agent), the cluster is
stopped, the bridges are deleted and the state directory is removed (unless
--keep-state). Takes about 70 s on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnifloor import Floor  # bench/cnifloor.py
from netnswatch import NetnsWatch  # bench/netnswatch.py
from svgplot import Figure, Panel, ecdf  # bench/svgplot.py

from agent import netlink
from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env, log_tail
from netshift.keys import NETWORK_STATUS_KEY, NETWORKS_KEY
from netshift.kube import (
    ApiError,
    Informer,
    Kube,
    api_path,
    nad_path,
    namespace_path,
    pod_path,
    wait_for,
)

NAMESPACE = "bench-hotplug"
POD_SUBNET, CLUSTER_BRIDGE = "10.247.0.0/24", "nsbhp0"
NET_NAME, NET_BRIDGE, NET_SUBNET = "hp", "nsbhp1", "10.247.1.0/24"
IFNAME = "net1"  # an unnamed network on a pod with only eth0
CNI_DIR = "/usr/lib/cni"


@dataclass
class Op:
    pod: str
    uid: str
    kind: str  # "add" | "remove"
    mode: str  # "sequential" | "concurrent"
    t_patch: float = 0.0
    t_seen: float | None = None
    t_netns: float | None = None  # the kernel's event: net1 up with its address / net1 gone
    done: threading.Event = field(default_factory=threading.Event)
    agent: dict[str, Any] | None = None  # the agent's timing entry


class StatusWatch:
    """This script's own watch on the bench pods: when does network-status show the change?"""

    def __init__(self, kube: Kube) -> None:
        self._pending: dict[str, Op] = {}
        self._lock = threading.Lock()
        self.informer = Informer(kube, pod_path(NAMESPACE), on_event=self._on_event, name="bench")

    def start(self) -> None:
        self.informer.start()
        if not self.informer.wait_synced(30):
            raise RuntimeError("the bench's pod watch did not sync")

    def expect(self, op: Op) -> None:
        with self._lock:
            self._pending[op.pod] = op

    def _on_event(self, _kind: str, pod: dict[str, Any]) -> None:
        now = time.time()
        name = pod["metadata"]["name"]
        with self._lock:
            op = self._pending.get(name)
            if op is None or op.t_patch == 0.0:
                return
            present = IFNAME in interfaces_in_status(pod)
            if present == (op.kind == "add"):
                op.t_seen = now
                del self._pending[name]
                op.done.set()


def interfaces_in_status(pod: dict[str, Any]) -> set[str]:
    raw = (pod["metadata"].get("annotations") or {}).get(NETWORK_STATUS_KEY) or "[]"
    try:
        return {str(e.get("interface")) for e in json.loads(raw) if isinstance(e, dict)}
    except ValueError:
        return set()


# --- setup ----------------------------------------------------------------------------------


def start_agent(cluster: LocalCluster, work: Path) -> subprocess.Popen[bytes]:
    work.mkdir(parents=True, exist_ok=True)
    ready = work / "ready"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "cli.main",
        "agent",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--node={cluster.nodes[0].name}",
        f"--records-dir={work / 'records'}",
        f"--cluster-network-conf={cluster.nodes[0].cluster_conflist}",
        *cluster.nodes[0].netns_resolver_args(),
        f"--ready-file={ready}",
        f"--timing-log={work / 'timings.jsonl'}",
    ]
    with open(work / "agent.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_env()
        )

    def is_ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited:\n{log_tail(work / 'agent.log')}")
        try:
            return ready.read_text().strip() == str(proc.pid)
        except OSError:
            return False

    wait_for(is_ready, 60, what="the agent's ready file")
    return proc


def make_namespace(kube: Kube, state: Path) -> None:
    kube.create(namespace_path(), {"metadata": {"name": NAMESPACE}})

    def has_sa() -> bool:
        try:
            kube.get(api_path("", "serviceaccounts", NAMESPACE, "default"))
            return True
        except ApiError:
            return False

    wait_for(has_sa, 30, what="the namespace's default ServiceAccount")
    config = {
        "cniVersion": "1.0.0",
        "name": NET_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": NET_BRIDGE,
                "isGateway": False,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NET_SUBNET}]],
                    "dataDir": str(state / "ipam-hp"),
                },
            }
        ],
    }
    kube.create(
        nad_path(NAMESPACE),
        {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": NET_NAME},
            "spec": {"config": json.dumps(config)},
        },
    )


def create_pods(kube: Kube, count: int) -> dict[str, str]:
    """name -> uid of `count` running pods."""

    def create(i: int) -> None:
        kube.create(
            pod_path(NAMESPACE),
            {
                "metadata": {"name": f"p{i:03d}", "labels": {"app": "bench"}},
                "spec": {
                    "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))

    def running() -> dict[str, str] | None:
        pods = kube.get(pod_path(NAMESPACE))["items"]
        up = {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running"
        }
        return up if len(up) == count else None

    found: dict[str, str] = wait_for(
        running, 60 + count, interval=0.5, what=f"{count} pods Running"
    )
    return found


# --- measuring -----------------------------------------------------------------------------


def run_op(kube: Kube, watch: StatusWatch, op: Op) -> None:
    value = NET_NAME if op.kind == "add" else None
    watch.expect(op)
    in_netns = NetnsWatch(f"/var/run/netns/netshift-{op.uid}", IFNAME, appear=op.kind == "add")
    op.t_patch = time.time()
    kube.patch_merge(
        pod_path(NAMESPACE, op.pod), {"metadata": {"annotations": {NETWORKS_KEY: value}}}
    )
    if not op.done.wait(60):
        raise RuntimeError(f"{op.kind} on {op.pod}: network-status not updated in 60s")
    op.t_netns = in_netns.wait(5)
    if op.t_netns is None:
        raise RuntimeError(f"{op.kind} on {op.pod}: no netlink event of {IFNAME} in its netns")
    if op.kind == "add":
        state = netlink.interface_state(f"/var/run/netns/netshift-{op.uid}", IFNAME)
        if state is None or not state.up or not state.addresses:
            raise RuntimeError(f"{op.pod}: {IFNAME} is reported but not up with an address")


def run_phase(
    kube: Kube,
    watch: StatusWatch,
    pods: dict[str, str],
    mode: str,
    concurrency: int,
    floor: Floor | None = None,
    floor_seconds: list[float] | None = None,
) -> list[Op]:
    """The adds then the removes; with `floor`, one floor ADD just before each add."""
    ops: list[Op] = []
    for kind in ("add", "remove"):
        batch = [Op(name, uid, kind, mode) for name, uid in sorted(pods.items())]

        def one(op: Op) -> None:
            if floor is not None and floor_seconds is not None and op.kind == "add":
                floor_seconds.append(floor.add_one())
            run_op(kube, watch, op)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, batch))
        ops += batch
    return ops


def attach_agent_timings(ops: list[Op], timing_log: Path) -> None:
    entries = [json.loads(line) for line in timing_log.read_text().splitlines() if line.strip()]
    by_uid: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_uid.setdefault(entry["uid"], []).append(entry)
    for op in ops:
        assert op.t_seen is not None
        candidates = [
            e
            for e in by_uid.get(op.uid, [])
            # done_at is taken when the agent's PATCH returned, which can be after the
            # watch already delivered the change to this script.
            if op.t_patch <= e["done_at"] <= op.t_seen + 1.0
        ]
        op.agent = candidates[0] if candidates else None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


PHASES: list[tuple[str, Callable[[Op, dict[str, Any]], float]]] = [
    ("watch delivery", lambda op, a: a["seen_at"] - op.t_patch),
    (
        "queue",
        lambda op, a: a["done_at"] - a["status_seconds"] - a["cni_seconds"] - a["seen_at"],
    ),
    ("converge (CNI)", lambda op, a: a["cni_seconds"]),
    ("status write", lambda op, a: a["status_seconds"]),
    ("status seen", lambda op, a: (op.t_seen or 0.0) - a["done_at"]),
    ("in the pod netns", lambda op, a: (op.t_netns or 0.0) - op.t_patch),
    ("end-to-end", lambda op, a: (op.t_seen or 0.0) - op.t_patch),
]


def report(ops: Iterable[Op], concurrency: int) -> str:
    groups: dict[tuple[str, str], list[Op]] = {}
    for op in ops:
        groups.setdefault((op.mode, op.kind), []).append(op)
    titles = [
        f"{'seq' if mode == 'sequential' else f'c{concurrency}'} {kind}" for mode, kind in groups
    ]
    head = f"{'ms  p50 / p99':18}" + "".join(f"{t:>18}" for t in titles)
    lines = [head]
    for name, fn in PHASES:
        row = f"{name:18}"
        for group in groups.values():
            values = [fn(op, op.agent) * 1000 for op in group if op.agent is not None]
            row += f"{pct(values, 50):>9.1f} /{pct(values, 99):>7.1f}"
        lines.append(row)
    counts = "".join(
        f"{f'{sum(op.agent is not None for op in g)}/{len(g)}':>18}" for g in groups.values()
    )
    lines.append(f"{'ops (timed/all)':18}{counts}")
    return "\n".join(lines)


# --- the floor: the plugin's own ADD, run directly ---------------------------------------

FLOOR_BRIDGE, FLOOR_SUBNET = "nsbhpf", "10.247.2.0/24"
# Goals: netshift's sequential add end-to-end over the plugin's ADD (issue 11).
GOAL_P50, GOAL_P99 = 2.5, 5.0


def floor_report(ops: list[Op], floor: list[float]) -> list[str]:
    adds = [op for op in ops if op.mode == "sequential" and op.kind == "add"]
    in_netns = [((op.t_netns or 0.0) - op.t_patch) * 1000 for op in adds]
    seen = [((op.t_seen or 0.0) - op.t_patch) * 1000 for op in adds]
    base = [s * 1000 for s in floor]
    f50, f99 = pct(base, 50), pct(base, 99)
    n50, n99, s50, s99 = pct(in_netns, 50), pct(in_netns, 99), pct(seen, 50), pct(seen, 99)
    r50, r99 = n50 / f50, n99 / f99
    ok = r50 <= GOAL_P50 and r99 <= GOAL_P99
    return [
        f"{'one pod at a time, ms':40}{'p50':>9}{'p99':>9}",
        f"{'floor: bridge ADD run directly':40}{f50:>9.1f}{f99:>9.1f}   ({len(base)} ADDs)",
        f"{'netshift: annotate -> net1 in the netns':40}{n50:>9.1f}{n99:>9.1f}"
        f"   ({len(in_netns)} adds; up with its address, by netlink event)",
        f"{'  ratio to the floor':40}{r50:>8.2f}x{r99:>8.2f}x",
        f"{'netshift: annotate -> status seen':40}{s50:>9.1f}{s99:>9.1f}"
        "   (+ the agent's status PATCH and its watch delivery)",
        f"{'  ratio to the floor':40}{s50 / f50:>8.2f}x{s99 / f99:>8.2f}x",
        f"verdict: {'MET' if ok else 'NOT MET'} - annotate -> net1 up with its address in the "
        f"pod netns: p50 {r50:.2f}x (goal <= {GOAL_P50}x), p99 {r99:.2f}x (goal <= {GOAL_P99}x); "
        "shared machine: only same-run ratios count",
    ]


def picture(ops: list[Op], floor: list[float], pods: int, concurrency: int) -> str:
    """Latency distributions (ms, log scale) of netshift's adds and removes and of the floor."""
    panels = []
    for kind in ("add", "remove"):
        verb = "net1 up with its address" if kind == "add" else "net1 gone"
        panel = Panel(
            f"{kind}: annotate -> {verb} in the pod's netns",
            "milliseconds (log scale)",
            "fraction of operations at most this",
            x_log=True,
            y_max=1.0,
            legend="bottom-right",
        )
        if kind == "add" and floor:
            base = [s * 1000 for s in floor]
            panel.line(ecdf(base), "floor: bridge + host-local ADD run directly", "#555", step=True)
            panel.vline(
                pct(base, 50) * GOAL_P50, f"goal: p50 <= {GOAL_P50}x the floor's", "#2ca02c"
            )
            panel.vline(
                pct(base, 99) * GOAL_P99, f"goal: p99 <= {GOAL_P99}x the floor's", "#9467bd"
            )
        for mode, color, label in (
            ("sequential", "#1f77b4", "one at a time"),
            ("concurrent", "#ff7f0e", f"{concurrency} in flight"),
        ):
            group = [op for op in ops if op.mode == mode and op.kind == kind]
            netns = [((op.t_netns or 0.0) - op.t_patch) * 1000 for op in group]
            seen = [((op.t_seen or 0.0) - op.t_patch) * 1000 for op in group]
            panel.line(ecdf(netns), f"netshift, {label}: in the netns", color, step=True)
            panel.line(ecdf(seen), f"netshift, {label}: status seen", color, step=True, dash="5 3")
        panels.append(panel)
    return Figure(
        f"Hot-plug latency, {pods} pods on the node, bridge + host-local",
        panels,
        panel_height=330,
        note="node simulator + netshift agent; floor measured in the same run, one ADD before "
        "each one-at-a-time add; bench/hotplug.py",
    ).svg()


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--plugs", type=int, default=None, help="pods to hot-plug (default all)")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument("--svg", default="docs/bench/hotplug.svg", help="where to draw the picture")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/hotplug.py needs root (network namespaces)", file=sys.stderr)
        return 2
    plugs = min(args.plugs or args.pods, args.pods)

    state = Path(tempfile.mkdtemp(prefix="netshift-bench-hotplug-"))
    cluster = LocalCluster(state, pod_subnet=POD_SUBNET, bridge=CLUSTER_BRIDGE)
    agent: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        print(f"local cluster in {state} ...", flush=True)
        cluster.up(services=["nodesim"], say=lambda _line: None)
        kube = cluster.kube()
        agent = start_agent(cluster, state / "agent")
        make_namespace(kube, state)
        t0 = time.monotonic()
        pods = create_pods(kube, args.pods)
        print(f"{args.pods} pods running in {time.monotonic() - t0:.1f}s", flush=True)
        watch = StatusWatch(kube)
        watch.start()
        chosen = dict(sorted(pods.items())[:plugs])

        # The floor interleaved with the one-at-a-time adds: both see the same background.
        floor: list[float] = []
        floor_cni = Floor(state / "ipam-floor", FLOOR_BRIDGE, FLOOR_SUBNET, IFNAME)
        try:
            ops = run_phase(kube, watch, chosen, "sequential", 1, floor_cni, floor)
        finally:
            floor_cni.close()
        print(f"sequential: {len(ops)} operations done", flush=True)
        ops += run_phase(kube, watch, chosen, "concurrent", args.concurrency)
        print(f"concurrent ({args.concurrency} in flight): done", flush=True)
        time.sleep(1.0)  # the agent logs a change just after its status PATCH returned
        attach_agent_timings(ops, state / "agent" / "timings.jsonl")
        watch.informer.stop()

        print()
        print(
            f"hot-plug latency, {args.pods} pods on the node, {plugs} plugged, "
            f"bridge + host-local, agent with its default 10 workers"
        )
        print(report(ops, args.concurrency))
        print()
        print("\n".join(floor_report(ops, floor)))
        out = Path(args.svg)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(picture(ops, floor, args.pods, args.concurrency))
        print(f"picture: {out}")

        # Tear down while the agent runs, so that it releases what it plugged.
        kube.delete(namespace_path(NAMESPACE))
        records = state / "agent" / "records"
        wait_for(
            lambda: not any(records.iterdir()) if records.exists() else True,
            120,
            interval=0.5,
            what="the agent to release every pod",
        )
        left = [p.name for p in (state / "ipam-hp" / NET_NAME).glob("10.*")]
        print(f"\naddresses left in the hot-plug network's IPAM store: {len(left)}")
    except Exception:
        if agent is not None:
            print(log_tail(state / "agent" / "agent.log", 40), file=sys.stderr)
        raise
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
        cluster.down(say=lambda _line: None)
        subprocess.run(["ip", "link", "del", NET_BRIDGE], capture_output=True)
        subprocess.run(["ip", "link", "del", FLOOR_BRIDGE], capture_output=True)
        subprocess.run(["ip", "link", "del", CLUSTER_BRIDGE], capture_output=True)
        if not args.keep_state:
            shutil.rmtree(state, ignore_errors=True)
        print(f"total {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
