"""Time to switch the default network of N running pods through a NetworkProfile change.

    .venv/bin/python bench/rollout.py [--sizes 20,100,200] [--max-concurrent 50] [--probe-pods 10]
                                      [--rounds 1] [--svg docs/bench/rollout.svg]
                                      [--profile DIR [--profile-cpu]] [--keep-logs DIR]

Brings up its own local cluster (all of netshift: node simulator, agent,
webhook, controller) in a temporary state directory, then for each round and N: a fresh
namespace with N pods that the webhook put on the "old" network, 10 ms pings
from a client namespace to `--probe-pods` of them (all N would be N*100
packets/s on a 2-core machine), the profile switched to the "new" network, and
the time until every pod's agent reports the new default (seen through a watch of the
namespace's pods: polling lists of N pods would load the apiserver under test). Just before the
switch, the floor: N bridge + host-local ADDs run directly, one after another,
into fresh namespaces. Prints one row per round and N: switch time, the floor and the
ratio, pods/s, restarts, probes sent/lost; with several rounds, a median row per N; and a
verdict for N=200 (median ratio <= 2x the floor, 0 probes lost, 0 restarts: issue 23).

Where the time went, per round and N (bench/switchprofile.py): the CPU each of the
cluster's processes used during the switch (per pod, user and kernel time apart; a table
of the rounds' medians), the apiserver requests it served (apiserver_request_total before
and after), each pod's path from the controller's audit
log and the agent's timing log (patch round trip, pick-up, CNI, status patch, until the
controller sees it settled; the slots held on average), and with `--profile DIR`
py-spy's view of the controller's, the agent's and the webhook's threads: where they
waited, or with `--profile-cpu` where their CPU went (py-spy must be installed:
`pip install py-spy`; it costs CPU, so ratios are measured without it).

Beside the table, a picture (SVG, `--svg`): per N, the pods switched over time since the
profile changed, each lost probe marked where it was due, and the floor's time.
Everything is torn down at the end (`--keep-logs DIR` copies the logs first). Loopback
and the bench's own namespaces only.
"""

from __future__ import annotations

import argparse
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

from cnifloor import floor_adds  # bench/cnifloor.py
from svgplot import COLORS, Figure, Panel  # bench/svgplot.py
from switchprofile import (  # bench/switchprofile.py
    CpuMeter,
    Spy,
    api_request_table,
    api_requests,
    pod_path_table,
)

from localcluster.cluster import LocalCluster
from localcluster.demokit import bridge_nad, selected
from localcluster.probe import ClientNetns, SeqPing
from netshift import podstatus
from netshift.kube import (
    Informer,
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
SPIED = ("controller", "agent", "webhook")  # the Python ones py-spy can read


def run_size(
    cluster: LocalCluster,
    state: Path,
    n: int,
    max_concurrent: int,
    probe_pods: int,
    profile: Path | None,
    round_: int = 1,
    profile_idle: bool = True,
) -> dict[str, Any]:
    kube = cluster.kube()
    tag = f"{n}-r{round_}"
    ns = f"bench-{tag}"
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
            "metadata": {"name": f"{PROFILE}-{tag}"},
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
    spy = Spy({k: pids[k] for k in SPIED if k in pids}, profile or Path(), idle=profile_idle)
    if profile is not None:
        spy.start()
        time.sleep(1.0)  # py-spy attached before the switch begins
    # The switch is watched, not polled: a list of N pods five times a second cost the
    # apiserver and this process as much CPU as the controller's whole work.
    watch = SwitchWatch(kube, ns, f"{ns}/{NEW[0]}", n)
    watch.start()
    requests_before = api_requests(kube.get_text("/metrics"))
    cpu.start()
    wall1 = time.time()
    t1 = time.monotonic()
    watch.t0 = t1
    kube.patch_merge(
        profile_path(f"{PROFILE}-{tag}"),
        {"spec": {"defaultNetwork": f"{ns}/{NEW[0]}"}},
    )
    if not watch.done.wait(120 + 2 * n):
        raise TimeoutError(f"{len(watch.switched)} of {n} pods switched")
    switch_s = watch.last - t1
    cpu.stop()
    requests_after = api_requests(kube.get_text("/metrics"))
    watch.stop()
    timeline = watch.timeline
    load = os.getloadavg()[0]  # the machine is shared: every figure with its load
    if profile is not None:
        spy.stop()
    node = cluster.nodes[0]
    breakdown = [
        *cpu.table(n),
        *api_request_table(requests_before, requests_after, n),
        *pod_path_table(
            cluster.plane.supervisor.log_dir / "rollout-audit.jsonl",
            state / "nodes" / node.name / "agent" / "timings.jsonl",
            since=wall1,
            max_concurrent=max_concurrent,
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
    kube.delete(profile_path(f"{PROFILE}-{tag}"))
    kube.delete(namespace_path(ns))
    return {
        "pods": n,
        "round": round_,
        "start_s": start_s,
        "switch_s": switch_s,
        "floor_s": floor_s,
        "rate": n / switch_s,
        "ratio": switch_s / floor_s,
        "restarts": restarts,
        "same_pods": same,
        "sent": sent,
        "lost": lost,
        "timeline": timeline,
        "lost_at": lost_at,
        "breakdown": breakdown,
        "cpu_ms": cpu.per_pod(n),
        "load": load,
    }


class SwitchWatch:
    """Watches the namespace's pods; `done` once all N report the new default network."""

    def __init__(self, kube: Kube, ns: str, network: str, n: int) -> None:
        self.network, self.n = network, n
        self.switched: set[str] = set()
        self.done = threading.Event()
        self.t0 = time.monotonic()
        self.last = 0.0  # when the last pod was seen switched (monotonic)
        self.timeline: list[tuple[float, int]] = [(0.0, 0)]  # (s since t0, pods switched)
        self._informer = Informer(kube, pod_path(ns), on_event=self._event, name="bench pods")

    def start(self) -> None:
        self._informer.start()
        if not self._informer.wait_synced(30):
            raise TimeoutError("the bench's pod watch did not sync in 30 s")

    def stop(self) -> None:
        self._informer.stop()

    def _event(self, kind: str, pod: dict[str, Any]) -> None:
        st = podstatus.parse_status(pod["metadata"].get("annotations") or {})
        if kind == "DELETED" or not st or st.default_network != self.network:
            return
        uid = pod["metadata"]["uid"]
        if uid in self.switched:
            return
        self.switched.add(uid)
        self.last = time.monotonic()
        self.timeline.append((self.last - self.t0, len(self.switched)))
        if len(self.switched) == self.n:
            self.done.set()


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
GOAL_PODS, GOAL_RATIO = 200, 2.0  # issue 23: within 2x the serial floor of the same run

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
    # The profile's rollout.maxConcurrent; 50 is issue 23's scenario.
    ap.add_argument("--max-concurrent", type=int, default=50)
    ap.add_argument("--probe-pods", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="rounds of every size; medians")
    ap.add_argument("--svg", default="docs/bench/rollout.svg", help="where to draw the picture")
    ap.add_argument(
        "--profile",
        default=None,
        help="py-spy the controller and the agent during each switch into this directory",
    )
    ap.add_argument(
        "--profile-cpu",
        action="store_true",
        help="with --profile: only where the threads ran (CPU), not where they waited",
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
        for round_ in range(1, args.rounds + 1):
            for n in (int(x) for x in args.sizes.split(",")):
                profile = Path(args.profile) / f"n{n}-r{round_}" if args.profile else None
                rows.append(
                    run_size(
                        cluster,
                        state,
                        n,
                        args.max_concurrent,
                        args.probe_pods,
                        profile,
                        round_,
                        profile_idle=not args.profile_cpu,
                    )
                )
                r = rows[-1]
                print(
                    f"round {round_}, N={n}: switched in {r['switch_s']:.1f}s "
                    f"({r['switch_s'] / r['floor_s']:.2f}x the floor), lost {r['lost']}/{r['sent']}",
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
    report(rows, args)
    return 0


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The table, the CPU per pod, where the time went, the picture and the verdict."""
    print(
        f"\nrollout of a default-network switch, maxConcurrent={args.max_concurrent}, "
        f"pings every 10 ms to {args.probe_pods} pods per run\n"
    )
    header = (
        "pods",
        "round",
        "pods up (s)",
        "switch (s)",
        "floor (s)",
        "x floor",
        "pods/s",
        "restarts",
        "same pods",
        "probes",
        "lost",
        "load (1m)",
    )
    print("  ".join(f"{h:>11}" for h in header))
    sizes = sorted({r["pods"] for r in rows})
    for r in rows:
        print("  ".join(f"{c!s:>11}" for c in row_cells(r, str(r["round"]))))
    medians = {n: median_row([r for r in rows if r["pods"] == n]) for n in sizes}
    if args.rounds > 1:
        for n in sizes:
            print("  ".join(f"{c!s:>11}" for c in row_cells(medians[n], "median")))
    print(
        "floor: the same number of bridge + host-local ADDs run one after another into fresh "
        "namespaces, just before each switch (shared machine: only same-run ratios count); "
        "median row: the median of each column on its own"
    )
    for n in sizes:
        print("\n".join(cpu_medians(n, [r for r in rows if r["pods"] == n])))
    for r in rows:
        print(f"\n{r['pods']} pods, round {r['round']}, where the time went:")
        print("\n".join(r["breakdown"]))
    out = Path(args.svg)
    out.parent.mkdir(parents=True, exist_ok=True)
    shown = [medians[n]["closest"] for n in sizes]
    out.write_text(picture(shown, args.max_concurrent, args.probe_pods))
    print(f"\npicture: {out} (per size, the round closest to the median ratio)")
    if GOAL_PODS in medians:
        m = medians[GOAL_PODS]
        goal = [r for r in rows if r["pods"] == GOAL_PODS]
        lost = sum(r["lost"] for r in goal)
        restarts = sum(r["restarts"] for r in goal)
        ok = m["ratio"] <= GOAL_RATIO and lost == 0 and restarts == 0
        print(
            f"verdict: {'MET' if ok else 'NOT MET'} - {GOAL_PODS} pods switched in "
            f"{m['ratio']:.2f}x the floor of the same run (median of {len(goal)}; goal <= "
            f"{GOAL_RATIO:.0f}x), {lost} probes lost, {restarts} restarts (goal 0 and 0)"
        )


def row_cells(r: dict[str, Any], label: str) -> tuple[object, ...]:
    return (
        r["pods"],
        label,
        f"{r['start_s']:.1f}",
        f"{r['switch_s']:.1f}",
        f"{r['floor_s']:.1f}",
        f"{r['ratio']:.2f}x",
        f"{r['rate']:.1f}",
        r["restarts"],
        "yes" if r["same_pods"] else "NO",
        r["sent"],
        r["lost"],
        f"{r['load']:.1f}",
    )


def cpu_medians(n: int, rows: list[dict[str, Any]]) -> list[str]:
    """CPU milliseconds per pod of each process during the switch, per round and median:
    on a loaded machine less noisy than the wall clock, and what a change must move."""
    names = sorted({k for r in rows for k in r["cpu_ms"]}, key=lambda k: -rows[0]["cpu_ms"][k])
    lines = [f"\nCPU ms per pod during the switch, {n} pods (rounds ... | median):"]
    total = [sum(r["cpu_ms"].values()) for r in rows]
    for name, values in [
        *((k, [r["cpu_ms"].get(k, 0.0) for r in rows]) for k in names),
        ("all", total),
    ]:
        cells = " ".join(f"{v:6.1f}" for v in values)
        lines.append(f"  {name:24} {cells} | {statistics.median(values):6.1f}")
    return lines


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each column's median over the rounds of one size (and the round closest to it)."""
    med: dict[str, Any] = {"pods": rows[0]["pods"]}
    keys = ("start_s", "switch_s", "floor_s", "ratio", "rate", "sent", "lost", "restarts", "load")
    for key in keys:
        med[key] = statistics.median(r[key] for r in rows)
    med["same_pods"] = all(r["same_pods"] for r in rows)
    med["closest"] = min(rows, key=lambda r: abs(r["ratio"] - med["ratio"]))
    return med


if __name__ == "__main__":
    sys.exit(main())
