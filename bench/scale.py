"""Scale: controller and webhook memory at 10,000 pods; API requests per operation.

    sudo .venv/bin/python bench/scale.py [--namespaces 1000] [--pods-per-namespace 10]
                                         [--rollout-pods 10] [--node-pods 110]
                                         [--create-timeout 600]

Brings up its own local cluster with all of netshift (node simulator, agent,
webhook, controller) in a temporary state directory, pod subnet 10.249.0.0/24
on bridge nsbsc0, and:

1. API requests per operation, counted by the apiserver itself: its
   `apiserver_request_total` (by verb and resource) scraped from /metrics with
   the admin kubeconfig before and after each operation. Writes only (POST,
   PUT, PATCH, DELETE, APPLY); Lease renewals are left out (every component
   renews its own every few seconds whatever happens), so are the node
   heartbeat and kube-controller-manager's endpoints (shown in brackets), and
   the bench's own writes (the annotation edit, the profile edit) are
   subtracted. An idle
   window of the same length is measured first and shown as background.
   - hot-plug: one network added to one running pod by annotation, until
     network-status lists it (plus 2 s for trailing writes);
   - rollout: a profile's default network switched for the running pods of
     its namespace (`--rollout-pods` and the hot-plug pod), until every pod
     reports it. Split in two: the writes on the pods (their PATCHes, and
     their Events, counted by listing the Events in the pods' namespace), per
     pod; the rest (the profile's status and its Events), per rollout.
2. The agent's memory with a full node: `--node-pods` (110, the kubelet's default
   maxPods) running pods on the simulated node, each with its default network
   (eth0) and one network hot-plugged by annotation; then the agent's RSS and
   PSS (goal: 100 MB).
3. Memory with N pods in M namespaces: pods created through the API (and
   through the webhook, half of the namespaces selected by a profile) with a
   nodeSelector no node has, so they stay Pending; then the RSS and PSS of
   the webhook (all its worker processes) and of the controller (and the
   agent, which still has the pods of step 2). Creation stops at
   `--create-timeout` and says how many pods were made.

Prints two tables. The machine may be shared: memory is not affected by
that, the request counts barely (the background row shows what leaked in).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from localcluster.cluster import LocalCluster
from localcluster.demokit import bridge_nad, selected
from netshift import podstatus
from netshift.keys import NETWORK_STATUS_KEY, NETWORKS_KEY
from netshift.kube import (
    ApiError,
    Kube,
    event_path,
    has_default_service_account,
    nad_path,
    namespace_path,
    pod_path,
    profile_path,
    wait_for,
)

POD_SUBNET, CLUSTER_BRIDGE = "10.249.0.0/24", "nsbsc0"
HP = ("hp", "nsbsc1", "10.249.1.0/24")
OLD = ("old", "nsbsc2", "10.249.2.0/24")
NEW = ("new", "nsbsc3", "10.249.3.0/24")
OPS_NS = "scale-ops"
NODE_NS = "scale-node"
PROFILES = profile_path()
WRITES = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"}
# Writes other components make on their own schedule, whatever netshift does: the node's
# heartbeat (node simulator) and kube-controller-manager's endpoints. Shown, not counted.
BACKGROUND = {"nodes/status", "endpoints", "endpointslices"}
GOAL_WRITES = 2
GOAL_WEBHOOK_MB, GOAL_CONTROLLER_MB, GOAL_AGENT_MB = 120, 150, 100

Counts = collections.Counter[tuple[str, str]]
_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def request_counts(cluster: LocalCluster) -> Counts:
    """apiserver_request_total summed by (verb, resource[/subresource]), writes only."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    counts: Counts = collections.Counter()
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        verb = labels.get("verb", "")
        resource = labels.get("resource", "")
        if verb not in WRITES or resource == "leases":
            continue
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[(verb, resource)] += int(float(m["value"]))
    return counts


def measure(cluster: LocalCluster, action: Callable[[], None], settle: float = 2.0) -> Counts:
    before = request_counts(cluster)
    action()
    time.sleep(settle)
    after = request_counts(cluster)
    after.subtract(before)
    return +after


def split(counts: Counts) -> tuple[Counts, Counts]:
    """(netshift's writes, background writes)."""
    mine: Counts = collections.Counter()
    other: Counts = collections.Counter()
    for key, n in counts.items():
        (other if key[1] in BACKGROUND else mine)[key] = n
    return mine, other


def fmt(counts: Counts, per: float = 1.0) -> str:
    if not counts:
        return "-"
    return ", ".join(
        f"{verb} {res} {n / per:g}" for (verb, res), n in sorted(counts.items(), key=str)
    )


# --- step 1: requests per operation ----------------------------------------------------------


def make_ops_namespace(kube: Kube, state: Path) -> None:
    kube.create(namespace_path(), {"metadata": {"name": OPS_NS, "labels": {"bench": OPS_NS}}})
    for name, bridge, subnet in (HP, OLD, NEW):
        kube.create(
            nad_path(OPS_NS), bridge_nad(OPS_NS, name, bridge, subnet, state / f"ipam-{name}")
        )
    wait_for(lambda: has_default_service_account(kube, OPS_NS), 30, what="default SA")


def running_pods(kube: Kube, selector: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = kube.get(pod_path(OPS_NS), labelSelector=selector)["items"]
        up = [
            p
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running"
            and podstatus.parse_status(p["metadata"].get("annotations") or {}) is not None
        ]
        return up if len(up) == count else None

    found: list[dict[str, Any]] = wait_for(ready, 60 + 2 * count, interval=0.5, what="pods Running")
    return found


def create_pod(kube: Kube, ns: str, name: str, labels: dict[str, str], **spec: Any) -> None:
    kube.create(
        pod_path(ns),
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                "terminationGracePeriodSeconds": 0,
                **spec,
            },
        },
    )


def hotplug_writes(cluster: LocalCluster, kube: Kube) -> Counts:
    create_pod(kube, OPS_NS, "hp-pod", {"role": "hp"})
    (pod,) = running_pods(kube, "role=hp", 1)
    path = pod_path(OPS_NS, pod["metadata"]["name"])

    def plug() -> None:
        kube.patch_merge(path, {"metadata": {"annotations": {NETWORKS_KEY: HP[0]}}})

        def plugged() -> bool:
            notes = kube.get(path)["metadata"].get("annotations") or {}
            return '"net1"' in notes.get(NETWORK_STATUS_KEY, "")

        wait_for(plugged, 60, interval=0.05, what="net1 in network-status")

    counts = measure(cluster, plug)
    counts[("PATCH", "pods")] -= 1  # the annotation edit itself
    return +counts


def pod_event_count(kube: Kube, ns: str) -> int:
    return len(kube.get(event_path(ns), fieldSelector="involvedObject.kind=Pod")["items"])


def rollout_writes(cluster: LocalCluster, kube: Kube, n: int) -> tuple[Counts, int, int]:
    """The writes of a rollout, how many pods it switched, and how many Events went to pods."""
    kube.create(
        PROFILES,
        {
            "apiVersion": "netshift.io/v1alpha1",
            "kind": "NetworkProfile",
            "metadata": {"name": "scale-rollout"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"bench": OPS_NS}},
                "defaultNetwork": f"{OPS_NS}/{OLD[0]}",
                "rollout": {"existingPods": "Live", "maxConcurrent": 10},
            },
        },
    )
    # The controller labels the namespace selected; the webhook's watch sees the profile.
    wait_for(lambda: selected(kube, OPS_NS), 30, what=f"{OPS_NS} labelled netshift.io/selected")
    time.sleep(1.0)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: create_pod(kube, OPS_NS, f"ro-{i}", {"role": "ro"}), range(n)))
    running_pods(kube, "role=ro", n)
    time.sleep(1.0)

    def switch() -> None:
        kube.patch_merge(
            f"{PROFILES}/scale-rollout", {"spec": {"defaultNetwork": f"{OPS_NS}/{NEW[0]}"}}
        )

        def switched() -> bool:
            pods = kube.get(pod_path(OPS_NS), labelSelector="role=ro")["items"]
            return all(
                (st := podstatus.parse_status(p["metadata"].get("annotations") or {})) is not None
                and st.default_network == f"{OPS_NS}/{NEW[0]}"
                for p in pods
            )

        wait_for(switched, 60 + 2 * n, interval=0.2, what="pods switched")

    rolled = len(kube.get(pod_path(OPS_NS))["items"])  # the hot-plug pod is selected too
    events_before = pod_event_count(kube, OPS_NS)
    counts = measure(cluster, switch)
    counts[("PATCH", "networkprofiles")] -= 1  # the profile edit itself
    return +counts, rolled, pod_event_count(kube, OPS_NS) - events_before


# --- step 2: the agent with a full node ---------------------------------------------------


def fill_node(kube: Kube, state: Path, n: int) -> float:
    """`n` running pods in NODE_NS, each with eth0 and one hot-plugged network; seconds taken."""
    start = time.monotonic()
    kube.create(namespace_path(), {"metadata": {"name": NODE_NS}})
    kube.create(nad_path(NODE_NS), bridge_nad(NODE_NS, *HP, state / f"ipam-{HP[0]}"))
    wait_for(lambda: has_default_service_account(kube, NODE_NS), 30, what="default SA")
    names = [f"node-{i:03d}" for i in range(n)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: create_pod(kube, NODE_NS, name, {"role": "node"}), names))

    def with_status(net1: bool) -> bool:
        pods = kube.get(pod_path(NODE_NS))["items"]
        done = [
            p
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running"
            and podstatus.parse_status(p["metadata"].get("annotations") or {}) is not None
            and (not net1 or '"net1"' in p["metadata"]["annotations"].get(NETWORK_STATUS_KEY, ""))
        ]
        return len(done) == n

    wait_for(lambda: with_status(False), 120 + 2 * n, interval=1.0, what=f"{n} pods Running")
    plug = {"metadata": {"annotations": {NETWORKS_KEY: HP[0]}}}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: kube.patch_merge(pod_path(NODE_NS, name), plug), names))
    wait_for(lambda: with_status(True), 60 + n, interval=1.0, what=f"net1 in {n} pods")
    return time.monotonic() - start


# --- step 3: memory at scale ----------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """pid and its descendants."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += tree(int(child))
    return out


def memory_mb(pid: int | None) -> tuple[float, float, int]:
    """(RSS, PSS) in MB summed over the process tree, and how many processes."""
    if pid is None:
        return float("nan"), float("nan"), 0
    rss = pss = 0
    pids = tree(pid)
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
        except OSError:
            continue
    return rss / 1024, pss / 1024, len(pids)


def populate(kube: Kube, namespaces: int, per_ns: int, timeout: float) -> tuple[int, float]:
    kube.create(
        PROFILES,
        {
            "apiVersion": "netshift.io/v1alpha1",
            "kind": "NetworkProfile",
            "metadata": {"name": "scale-half"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"scale-profile": "on"}},
                "defaultNetwork": "scale-nets/default",
                "networks": [{"name": "storage", "namespace": "scale-nets"}],
            },
        },
    )
    names = [f"scale-{i:04d}" for i in range(namespaces)]
    start = time.monotonic()
    deadline = start + timeout
    made = 0
    lock = threading.Lock()

    def make_ns(i: int) -> None:
        labels = {"scale-profile": "on"} if i % 2 == 0 else {}
        kube.create(namespace_path(), {"metadata": {"name": names[i], "labels": labels}})

    def make_pods(ns: str) -> None:
        nonlocal made
        wait_for(lambda: has_default_service_account(kube, ns), 60, what=f"{ns} SA")
        for j in range(per_ns):
            if time.monotonic() > deadline:
                return
            for attempt in range(5):
                try:
                    create_pod(
                        kube,
                        ns,
                        f"p{j}",
                        {"app": "scale"},
                        nodeSelector={"netshift.io/bench": "nowhere"},
                    )
                    break
                except ApiError as err:
                    if err.status not in (409, 429, 500, 503, 504) or attempt == 4:
                        raise
                    time.sleep(0.5)
            with lock:
                made += 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make_ns, range(namespaces)))
        list(pool.map(make_pods, names))
    return made, time.monotonic() - start


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--pods-per-namespace", type=int, default=10)
    ap.add_argument("--rollout-pods", type=int, default=10)
    ap.add_argument("--node-pods", type=int, default=110)
    ap.add_argument("--create-timeout", type=float, default=600.0)
    ap.add_argument("--keep-state", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/scale.py needs root (the node simulator's namespaces)", file=sys.stderr)
        return 2
    state = Path(tempfile.mkdtemp(prefix="netshift-bench-scale-"))
    cluster = LocalCluster(state, pod_subnet=POD_SUBNET, bridge=CLUSTER_BRIDGE)
    started = time.monotonic()
    say = print if os.environ.get("BENCH_VERBOSE") else (lambda _line: None)
    try:
        print(f"local cluster in {state} ...", flush=True)
        cluster.up(say=say)
        kube = cluster.kube()
        make_ops_namespace(kube, state)

        idle = measure(cluster, lambda: time.sleep(5.0), settle=0.0)
        hot = hotplug_writes(cluster, kube)
        roll, rolled, pod_events = rollout_writes(cluster, kube, args.rollout_pods)
        on_node = len(kube.get(pod_path(OPS_NS))["items"])
        filled = fill_node(kube, state, args.node_pods - on_node)
        print(f"node filled with {args.node_pods} running pods in {filled:.0f}s", flush=True)
        time.sleep(5.0)  # the last reports written, the agent idle
        agent_mem = memory_mb(cluster.pid("agent"))

        made, took = populate(kube, args.namespaces, args.pods_per_namespace, args.create_timeout)
        print(f"{made} pods in {args.namespaces} namespaces created in {took:.0f}s", flush=True)
        time.sleep(10.0)  # watches deliver, caches settle
        mem = {name: memory_mb(cluster.pid(name)) for name in ("webhook", "controller", "agent")}

        hot, hot_bg = split(hot)
        roll, roll_bg = split(roll)
        hot_writes = sum(hot.values())
        on_pods = roll[("PATCH", "pods")] + pod_events
        roll_writes = on_pods / rolled
        per_rollout = sum(roll.values()) - on_pods
        print()
        print(
            "API writes (leases left out; the bench's own edit subtracted; "
            f"background = {', '.join(sorted(BACKGROUND))}, not counted)"
        )
        print(f"{'operation':28} {'writes':>8}  by verb and resource  [background]")
        print(f"{'idle, 5 s':28} {'-':>8}  [{fmt(idle)}]")
        print(f"{'hot-plug of 1 network':28} {hot_writes:>8}  {fmt(hot)}  [{fmt(hot_bg)}]")
        print(
            f"{f'rollout, per pod (of {rolled})':28} {roll_writes:>8.2f}  "
            f"PATCH pods {roll[('PATCH', 'pods')] / rolled:g}, pod Events {pod_events / rolled:g}"
        )
        rest = +(roll - collections.Counter({("PATCH", "pods"): roll[("PATCH", "pods")]}))
        print(
            f"{'rollout, per rollout':28} {per_rollout:>8}  {fmt(rest)} less the pods' "
            f"{pod_events} Event(s)  [{fmt(roll_bg)}]"
        )
        print(
            f"{'rollout, all writes / pods':28} {sum(roll.values()) / rolled:>8.2f}  "
            f"{fmt(roll, rolled)}"
        )
        print()
        rss, pss, _ = agent_mem
        print(
            f"agent with {args.node_pods} running pods on its node (eth0 + 1 hot-plugged "
            f"network each): RSS {rss:.0f} MB, PSS {pss:.0f} MB (goal <= {GOAL_AGENT_MB} MB RSS)"
        )
        print()
        print(f"memory with {made} pods in {args.namespaces} namespaces (Pending, no node)")
        print(
            "(RSS summed over a process tree counts pages the forked workers share; PSS does not)"
        )
        print(f"{'process':12} {'procs':>5} {'RSS MB':>8} {'PSS MB':>8} {'goal MB':>8}")
        goals = {
            "webhook": GOAL_WEBHOOK_MB,
            "controller": GOAL_CONTROLLER_MB,
            "agent": GOAL_AGENT_MB,
        }
        for name, (rss, pss, procs) in mem.items():
            print(f"{name:12} {procs:>5} {rss:>8.0f} {pss:>8.0f} {goals[name]:>8}")
        ok = (
            hot_writes <= GOAL_WRITES
            and roll_writes <= GOAL_WRITES
            and mem["webhook"][1] <= GOAL_WEBHOOK_MB
            and mem["controller"][1] <= GOAL_CONTROLLER_MB
            and agent_mem[0] <= GOAL_AGENT_MB
        )
        print(
            f"verdict: {'MET' if ok else 'NOT MET'} - writes per hot-plug {hot_writes}, per "
            f"rolled-out pod {roll_writes:.2f} (goal <= {GOAL_WRITES}) plus {per_rollout} per "
            f"rollout on its profile; webhook PSS "
            f"{mem['webhook'][1]:.0f} MB (<= {GOAL_WEBHOOK_MB}), controller PSS "
            f"{mem['controller'][1]:.0f} MB (<= {GOAL_CONTROLLER_MB}) at {made} pods; agent RSS "
            f"{agent_mem[0]:.0f} MB (<= {GOAL_AGENT_MB}) at {args.node_pods} pods on its node"
        )
        if made < args.namespaces * args.pods_per_namespace:
            print(f"note: only {made} pods were created before --create-timeout")
        running = sum(len(kube.get(pod_path(ns))["items"]) for ns in (OPS_NS, NODE_NS))
        for ns in (OPS_NS, NODE_NS):
            kube.delete(namespace_path(ns))
        wait_for(
            lambda: not any(kube.get(pod_path(ns))["items"] for ns in (OPS_NS, NODE_NS)),
            60 + running,
            interval=0.5,
            what="the running pods to go",
        )
    finally:
        cluster.down(say=say)
        for _, bridge, _ in (HP, OLD, NEW):
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["ip", "link", "del", CLUSTER_BRIDGE], capture_output=True)
        if not args.keep_state:
            shutil.rmtree(state, ignore_errors=True)
        print(f"total {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
