"""Time to switch the default network of N running pods through a NetworkProfile change.

    .venv/bin/python bench/rollout.py [--sizes 20,100,200] [--max-concurrent 10] [--probe-pods 10]
                                      [--svg docs/bench/rollout.svg]

Brings up its own local cluster (all of netshift: node simulator, agent,
webhook, controller) in a temporary state directory, then for each N: a fresh
namespace with N pods that the webhook put on the "old" network, 10 ms pings
from a client namespace to `--probe-pods` of them (all N would be N*100
packets/s on a 2-core machine), the profile switched to the "new" network, and
the time until every pod's agent reports the new default. Just before the
switch, the floor: N bridge + host-local ADDs run directly, one after another,
into fresh namespaces. Prints one row per N: switch time, the floor and the
ratio, pods/s, restarts, probes sent/lost; and a verdict for N=200 (<= 10 s,
0 probes lost, 0 restarts). Beside the table, a picture (SVG, `--svg`): per N, the pods
switched over time since the profile changed, each lost probe marked where it was due,
and the floor's time. Everything is torn down at the end. Loopback and the bench's own
namespaces only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cnifloor import floor_adds  # bench/cnifloor.py
from svgplot import COLORS, Figure, Panel  # bench/svgplot.py
from switchprofile import CpuMeter, Spy, pod_path_table  # bench/switchprofile.py

from localcluster.cluster import LocalCluster
from localcluster.demokit import bridge_nad, selected
from localcluster.probe import ClientNetns, SeqPing
from netshift import podstatus
from netshift.kube import (
    Kube,
    deployment_path,
    has_default_service_account,
    nad_path,
    namespace_path,
    pod_path,
    profile_path,
    wait_for,
)

OLD = ("old-cni", "nsbench-old", "10.253.0.0/22", "10.253.3.250/22")
NEW = ("new-cni", "nsbench-new", "10.253.4.0/22", "10.253.7.250/22")
PROFILE = "bench-rollout"


def pods_of(kube: Kube, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get(pod_path(ns))["items"]
    return items


PROCESSES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "webhook",
    "controller",
    "agent",
    "nodesim",
)


def run_size(
    cluster: LocalCluster,
    state: Path,
    n: int,
    max_concurrent: int,
    probe_pods: int,
    profile: Path | None,
) -> dict[str, Any]:
    kube = cluster.kube()
    ns = f"bench-{n}"
    kube.create(namespace_path(), {"metadata": {"name": ns, "labels": {"bench": ns}}})
    for name, bridge, subnet, _ in (OLD, NEW):
        # One IPAM store per network across runs: the pods of the previous run may still be
        # leaving the same bridge, and two stores would hand out their addresses again.
        kube.create(nad_path(ns), bridge_nad(ns, name, bridge, subnet, state / f"ipam-{name}"))
    kube.create(
        profile_path(),
        {
            "apiVersion": "netshift.io/v1alpha1",
            "kind": "NetworkProfile",
            "metadata": {"name": f"{PROFILE}-{n}"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"bench": ns}},
                "defaultNetwork": f"{ns}/{OLD[0]}",
                "rollout": {"existingPods": "Live", "maxConcurrent": max_concurrent},
            },
        },
    )
    wait_for(lambda: has_default_service_account(kube, ns), 30, what="default service account")
    # Its pods are created through the webhook (born on OLD) once the namespace is labelled.
    wait_for(lambda: selected(kube, ns), 30, what=f"{ns} labelled netshift.io/selected")
    kube.create(
        deployment_path(ns),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": n,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "example.invalid/web"}]},
                },
            },
        },
    )

    def running() -> bool:
        pods = pods_of(kube, ns)
        return len(pods) == n and all(
            p.get("status", {}).get("phase") == "Running"
            and podstatus.parse_status(p["metadata"].get("annotations") or {}) is not None
            for p in pods
        )

    t0 = time.monotonic()
    wait_for(running, 60 + n, interval=0.5, what=f"{n} running pods")
    start_s = time.monotonic() - t0
    before = {p["metadata"]["uid"]: p for p in pods_of(kube, ns)}
    probes = [
        SeqPing(CLIENT.name, p["status"]["podIP"]) for p in list(before.values())[:probe_pods]
    ]
    for probe in probes:
        probe.wait_first()

    # The floor, same run: N bridge + host-local ADDs one after another, nothing of netshift.
    floor_s = sum(floor_adds(n, state / f"ipam-floor-{n}", FLOOR_BRIDGE, FLOOR_SUBNET, "eth9"))

    pids = {name: pid for name in PROCESSES if (pid := cluster.pid(name)) is not None}
    cpu = CpuMeter({**pids, "bench (polls, pings)": os.getpid()})
    spy = Spy({k: pids[k] for k in ("controller", "agent") if k in pids}, profile or Path())
    if profile is not None:
        spy.start()
        time.sleep(1.0)  # py-spy attached before the switch begins
    cpu.start()
    wall1 = time.time()
    t1 = time.monotonic()
    kube.patch_merge(
        profile_path(f"{PROFILE}-{n}"),
        {"spec": {"defaultNetwork": f"{ns}/{NEW[0]}"}},
    )

    timeline: list[tuple[float, int]] = [(0.0, 0)]  # (seconds since the patch, pods switched)

    def switched() -> bool:
        done = 0
        for p in pods_of(kube, ns):
            st = podstatus.parse_status(p["metadata"].get("annotations") or {})
            done += bool(st and st.default_network == f"{ns}/{NEW[0]}")
        timeline.append((time.monotonic() - t1, done))
        return done == n

    wait_for(switched, 120 + 2 * n, interval=0.2, what=f"{n} pods switched")
    switch_s = time.monotonic() - t1
    cpu.stop()
    if profile is not None:
        spy.stop()
    node = cluster.nodes[0]
    breakdown = [
        *cpu.table(n),
        *pod_path_table(
            cluster.plane.supervisor.log_dir / "rollout-audit.jsonl",
            state / "nodes" / node.name / "agent" / "timings.jsonl",
            since=wall1,
        ),
        *(spy.summary() if profile is not None else []),
    ]
    sent = lost = 0
    lost_at: list[float] = []
    for probe in probes:
        probe.settle()  # the last echo counted was sent after the switch
        lost_at += [t - t1 for t in probe.lost_at()]
        s, lo = probe.stop()
        sent, lost = sent + s, lost + len(lo)
    after = {p["metadata"]["uid"]: p for p in pods_of(kube, ns)}
    restarts = sum(
        int(c.get("restartCount", 0))
        for p in after.values()
        for c in p.get("status", {}).get("containerStatuses") or []
    )
    same = set(after) == set(before)
    kube.delete(profile_path(f"{PROFILE}-{n}"))
    kube.delete(namespace_path(ns))
    return {
        "pods": n,
        "start_s": start_s,
        "switch_s": switch_s,
        "floor_s": floor_s,
        "rate": n / switch_s,
        "restarts": restarts,
        "same_pods": same,
        "sent": sent,
        "lost": lost,
        "timeline": timeline,
        "lost_at": lost_at,
        "breakdown": breakdown,
    }


def picture(rows: list[dict[str, Any]], max_concurrent: int, probe_pods: int) -> str:
    """Per N: pods switched over time, each lost probe marked when it was due, the floor."""
    panels = []
    for i, r in enumerate(rows):
        panel = Panel(
            f"{r['pods']} pods: switched in {r['switch_s']:.1f} s, "
            f"{r['lost']} of {r['sent']} probes lost",
            "seconds since the NetworkProfile's defaultNetwork changed",
            "pods on the new network",
            y_max=float(r["pods"]),
        )
        color = COLORS[i % len(COLORS)]
        panel.line([(t, float(d)) for t, d in r["timeline"]], "pods switched", color, step=True)
        panel.vline(r["floor_s"], f"floor: {r['pods']} bridge ADDs in a row", "#555")
        panel.mark(r["lost_at"], 0.0, f"a lost probe ({len(r['lost_at'])})", "#d62728")
        panels.append(panel)
    return Figure(
        f"Rollout of a default-network switch (maxConcurrent={max_concurrent})",
        panels,
        note=f"10 ms pings to {probe_pods} pods per run, from a client namespace; "
        "node simulator, real bridge + host-local; bench/rollout.py",
    ).svg()


FLOOR_BRIDGE, FLOOR_SUBNET = "nsbenchf", "10.253.8.0/22"
GOAL_PODS, GOAL_SECONDS = 200, 10.0

CLIENT = ClientNetns("nsbench-client", [(OLD[1], OLD[3]), (NEW[1], NEW[3])])


def keep_logs(state: Path, dest: Path) -> None:
    """The processes' logs, the agent's timing log and the controller's audit log."""
    for path in [*state.rglob("*.log"), *state.rglob("*.jsonl")]:
        target = dest / path.relative_to(state)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="20,100,200")
    ap.add_argument("--max-concurrent", type=int, default=10)
    ap.add_argument("--probe-pods", type=int, default=10)
    ap.add_argument("--svg", default="docs/bench/rollout.svg", help="where to draw the picture")
    ap.add_argument(
        "--profile",
        default=None,
        help="py-spy the controller and the agent during each switch into this directory",
    )
    ap.add_argument(
        "--keep-logs", default=None, help="copy the cluster's logs (*.log, *.jsonl) here first"
    )
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="netshift-bench-rollout-"))
    cluster = LocalCluster(state, pod_subnet="10.248.0.0/22", bridge="nsbench0")
    rows = []
    try:
        cluster.up(say=lambda _line: None)
        CLIENT.create()
        for n in (int(x) for x in args.sizes.split(",")):
            profile = Path(args.profile) / f"n{n}" if args.profile else None
            rows.append(run_size(cluster, state, n, args.max_concurrent, args.probe_pods, profile))
            r = rows[-1]
            print(
                f"N={r['pods']}: switched in {r['switch_s']:.1f}s, lost {r['lost']}/{r['sent']}",
                file=sys.stderr,
            )
    finally:
        if args.keep_logs:
            keep_logs(state, Path(args.keep_logs))
        CLIENT.delete()
        cluster.down(say=lambda _line: None)
        subprocess.run(["ip", "link", "del", FLOOR_BRIDGE], capture_output=True)
        for _, bridge, _, _ in (OLD, NEW):
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
    print(
        f"\nrollout of a default-network switch, maxConcurrent={args.max_concurrent}, "
        f"pings every 10 ms to {args.probe_pods} pods per run\n"
    )
    header = (
        "pods",
        "pods up (s)",
        "switch (s)",
        "floor (s)",
        "x floor",
        "pods/s",
        "restarts",
        "same pods",
        "probes",
        "lost",
    )
    print("  ".join(f"{h:>11}" for h in header))
    for r in rows:
        cells = (
            r["pods"],
            f"{r['start_s']:.1f}",
            f"{r['switch_s']:.1f}",
            f"{r['floor_s']:.1f}",
            f"{r['switch_s'] / r['floor_s']:.1f}x",
            f"{r['rate']:.1f}",
            r["restarts"],
            "yes" if r["same_pods"] else "NO",
            r["sent"],
            r["lost"],
        )
        print("  ".join(f"{c!s:>11}" for c in cells))
    print(
        "floor: the same number of bridge + host-local ADDs run one after another into fresh "
        "namespaces, in the same run (shared machine: only same-run ratios count)"
    )
    for r in rows:
        print(f"\n{r['pods']} pods, where the time went:")
        print("\n".join(r["breakdown"]))
    out = Path(args.svg)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(picture(rows, args.max_concurrent, args.probe_pods))
    print(f"picture: {out}")
    for r in rows:
        if r["pods"] == GOAL_PODS:
            ok = r["switch_s"] <= GOAL_SECONDS and r["lost"] == 0 and r["restarts"] == 0
            print(
                f"verdict: {'MET' if ok else 'NOT MET'} - {GOAL_PODS} pods switched in "
                f"{r['switch_s']:.1f}s (goal <= {GOAL_SECONDS:.0f}s), {r['lost']} probes lost, "
                f"{r['restarts']} restarts (goal 0 and 0)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
