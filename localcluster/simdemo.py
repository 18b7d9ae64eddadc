"""`netshift demo --node sim`: the demo on the node simulator (the stand-in for kubelet +
runtime), with probes from a client namespace on the networks' own subnets.

On the local cluster (brought up if needed) it creates two networks standing
for the old and the new CNI, a NetworkProfile and a labelled namespace with a
few pods (the webhook gives them the old network), starts probe traffic from a
client namespace (10 ms pings and a TCP stream per pod), switches the profile
to the new network (the controller rolls it out, the agent moves each pod's
default route make-before-break) and prints a before/after table per pod.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from localcluster.cluster import LocalCluster
from localcluster.demokit import (
    NEW,
    NS,
    OLD,
    PROFILE,
    apply,
    bridge_nad,
    profile,
    selected,
    table,
)
from localcluster.probe import ClientNetns, Ping, Stream
from netshift import podstatus
from netshift.kube import (
    ApiError,
    Kube,
    deployment_path,
    has_default_service_account,
    nad_path,
    namespace_path,
    pod_path,
    profile_path,
    wait_for,
)

CLIENT = "nsdemo-client"


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]},
            },
        },
    }


@dataclass
class PodView:
    name: str
    uid: str
    ip: str
    restarts: int
    netns_inode: int
    default_if: str
    default_route: str


def pod_views(kube: Kube) -> list[PodView]:
    views = []
    for pod in kube.get(pod_path(NS), labelSelector="app=web")["items"]:
        uid = pod["metadata"]["uid"]
        netns = f"/var/run/netns/netshift-{uid}"
        route = subprocess.run(
            ["ip", "-n", f"netshift-{uid}", "-4", "route", "show", "default"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dev = route.split(" dev ")[1].split()[0] if " dev " in route else "-"
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        views.append(
            PodView(
                name=pod["metadata"]["name"],
                uid=uid,
                ip=pod.get("status", {}).get("podIP", ""),
                restarts=sum(int(c.get("restartCount", 0)) for c in statuses),
                netns_inode=os.stat(netns).st_ino if os.path.exists(netns) else 0,
                default_if=dev,
                default_route=route.split(" proto ")[0] or "-",
            )
        )
    return sorted(views, key=lambda v: v.name)


def cleanup(kube: Kube, client: ClientNetns) -> None:
    client.delete()
    with contextlib.suppress(ApiError):
        kube.delete(profile_path(PROFILE))
    with contextlib.suppress(ApiError):
        kube.delete(namespace_path(NS))

    def gone() -> bool:
        try:
            kube.get(namespace_path(NS))
            return False
        except ApiError as err:
            return err.status == 404

    wait_for(gone, 120, what=f"namespace {NS} deleted")
    for _, bridge, _ in (OLD, NEW):
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def run(args: argparse.Namespace) -> int:
    say = print
    # The node simulator: the demo's probes find pods by its namespace names. A state dir
    # running a real-node cluster is refused with a message saying so.
    cluster = LocalCluster(
        args.state_dir,
        pod_subnet=args.pod_subnet,
        bridge=args.bridge,
        ip_family=args.ip_family,  # dual is refused: the node simulator wires IPv4 only
        node="sim",
    )
    say(f"== bringing up the local cluster in {cluster.state_dir}")
    cluster.up(say=lambda line: say("   " + line))
    kube = cluster.kube()
    client = ClientNetns(CLIENT, [(OLD[1], f"{OLD[2]}.250/24"), (NEW[1], f"{NEW[2]}.250/24")])
    ipam = cluster.state_dir / "demo-ipam"
    with contextlib.suppress(ApiError, TimeoutError):
        cleanup(kube, client)  # a previous --keep run

    say(f"== namespace {NS}, networks {OLD[0]} ({OLD[2]}.0/24) and {NEW[0]} ({NEW[2]}.0/24)")
    apply(
        kube,
        namespace_path(),
        {"metadata": {"name": NS, "labels": {"netshift.io/demo": "true"}}},
    )
    for name, bridge, prefix in (OLD, NEW):
        apply(kube, nad_path(NS), bridge_nad(NS, name, bridge, f"{prefix}.0/24", ipam))
    say(f"== NetworkProfile {PROFILE}: default network {NS}/{OLD[0]}, rollout Live")
    apply(kube, profile_path(), profile(f"{NS}/{OLD[0]}"))
    wait_for(lambda: has_default_service_account(kube, NS), 30, what="the default ServiceAccount")
    # The Deployment's pods get the profile at creation once the namespace is labelled.
    wait_for(lambda: selected(kube, NS), 30, what=f"{NS} labelled netshift.io/selected")
    say(f"== Deployment web with {args.pods} pods")
    apply(kube, deployment_path(NS), deployment(args.pods))
    wait_for(
        lambda: len([v for v in pod_views(kube) if v.ip and v.default_if != "-"]) == args.pods,
        120,
        what=f"{args.pods} running pods",
    )
    before = {v.uid: v for v in pod_views(kube)}
    annotated = kube.get(pod_path(NS), labelSelector="app=web")["items"][0]
    injected = (annotated["metadata"].get("annotations") or {}).get(
        "v1.multus-cni.io/default-network", "(none: is the webhook running?)"
    )
    say(f"   the webhook gave new pods v1.multus-cni.io/default-network={injected}")

    client.create()
    say(f"== probes from namespace {CLIENT}: ping every 10 ms and a TCP stream to each pod IP")
    pings = {uid: Ping(CLIENT, v.ip) for uid, v in before.items()}
    streams = {
        uid: Stream(f"netshift-{uid}", CLIENT, v.ip, timeout=2.0) for uid, v in before.items()
    }
    time.sleep(1.0)

    say(f"== switching the profile to {NS}/{NEW[0]}")
    t0 = time.monotonic()
    kube.patch_merge(
        profile_path(PROFILE),
        {"spec": {"defaultNetwork": f"{NS}/{NEW[0]}"}},
    )

    def switched() -> bool:
        pods = kube.get(pod_path(NS), labelSelector="app=web")["items"]
        done = 0
        for pod in pods:
            st = podstatus.parse_status(pod["metadata"].get("annotations") or {})
            if st and st.default_network == f"{NS}/{NEW[0]}":
                done += 1
        return done == len(before)

    try:
        wait_for(switched, 180, interval=0.2, what="every pod on the new network")
    except TimeoutError as err:
        say(f"!! {err}")
    took = time.monotonic() - t0
    time.sleep(1.0)
    probe = {uid: pings[uid].stop() for uid in before}
    tcp = {uid: streams[uid].stop() for uid in before}
    after = {v.uid: v for v in pod_views(kube)}

    say(f"== the rollout reached all {len(before)} pods in {took:.1f}s\n")
    header = (
        "POD",
        "UID",
        "RESTARTS",
        "NETNS",
        "DEFAULT ROUTE (before -> after)",
        "PINGS",
        "LOST",
        "TCP",
    )
    rows = []
    ok = True
    for uid, b in before.items():
        a = after.get(uid)
        sent, lost = probe[uid]
        alive = bool(tcp[uid].get("alive"))
        same = a is not None and a.netns_inode == b.netns_inode
        ok = ok and a is not None and lost == 0 and alive and same and a.restarts == 0
        rows.append(
            (
                b.name,
                uid[:8],
                f"{b.restarts}->{a.restarts if a else '?'}",
                "same" if same else "CHANGED",
                f"{b.default_route} -> {a.default_route if a else 'gone'}",
                str(sent),
                str(lost),
                "alive" if alive else f"DEAD ({tcp[uid].get('error')})",
            )
        )
    for line in table(header, rows):
        say(line)
    say("")
    say(
        "verdict: same pods, same namespaces, no restart, no lost probe, every TCP stream alive"
        if ok
        else "verdict: NOT a clean switch (see the table)"
    )
    if args.keep:
        say(f"(--keep: namespace {NS}, profile {PROFILE} and namespace {CLIENT} left in place)")
    else:
        say("== cleaning up")
        cleanup(kube, client)
    say(f"export KUBECONFIG={cluster.kubeconfig}   # to look around; `make down` stops it all")
    return 0 if ok else 1
