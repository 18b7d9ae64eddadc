"""The client containers' ping (localcluster.probe.PINGER) counts every echo the network delivers.

Two pods on one bridge network (real bridge + host-local plugins, IPv4 and IPv6, in a
node namespace of their own). The client pod pings the other at 10 ms while the other
ignores neighbour solicitations (IPv6) or ARP (IPv4) for half a second: the client's
kernel holds the echoes until the next solicitation, a second after the first, is
answered, and then sends them together; their replies come back as one burst.

busybox's ping, which the real-node tests ran in client containers before, keeps 18 of
such a burst (its socket's receive buffer is about 14 KiB) and loses the rest: on the real
node that was the IPv6 loss of issue 20. Nothing was lost on the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster.probe import SeqPing, container_ping_argv
from localcluster.topology import V4, V6, Subnet, Topology, pod_addresses, subnets
from support.builders import unique
from support.require import CNI_DIR, needs_node_host


@dataclass
class Pods:
    router: str
    client: str
    server: str
    subnet: Subnet


def _plug(router: str, netns: str, bridge: str, subnet: Subnet, data_dir: Path) -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": "pingnet",
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": subnet.ranges(), "dataDir": str(data_dir)},
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": netns,
        "CNI_NETNS": f"/var/run/netns/{netns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": CNI_DIR,
    }
    done = subprocess.run(
        ["ip", "netns", "exec", router, f"{CNI_DIR}/bridge"],
        input=json.dumps(conf),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"CNI ADD {netns}: {done.stdout} {done.stderr}"


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    tag = unique("cp")[:8]
    (subnet,) = subnets(1, (V4, V6), second=238)
    topo = Topology(name=tag, bridges={f"{tag}b": subnet}, router=f"{tag}n")
    made: list[str] = []
    try:
        topo.create()
        for role in ("c", "s"):
            name = f"{tag}{role}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            _plug(topo.router or "", name, f"{tag}b", subnet, tmp_path)
        # An ICMP datagram socket, as in the client containers (the pod's sysctl there).
        allow = ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]
        subprocess.run(["ip", "netns", "exec", made[0], *allow], check=True)
        yield Pods(topo.router or "", made[0], made[1], subnet)
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)
        topo.delete()


def _ignore_resolution(netns: str, family: int, on: bool) -> None:
    """The server stops (or resumes) answering neighbour solicitations / ARP requests."""
    if family == V6:
        op = "-I" if on else "-D"
        rule = ["INPUT", "-p", "icmpv6", "--icmpv6-type", "neighbour-solicitation", "-j", "DROP"]
        subprocess.run(["ip", "netns", "exec", netns, "ip6tables", op, *rule], check=True)
    else:
        state = "off" if on else "on"
        subprocess.run(["ip", "-n", netns, "link", "set", "eth0", "arp", state], check=True)


@needs_node_host
@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
def test_the_container_ping_counts_every_echo_of_a_burst_after_neighbour_discovery_held_them(
    pods: Pods, family: int
) -> None:
    (target,) = pod_addresses(pods.server, "eth0", (family,))
    _ignore_resolution(pods.server, family, True)
    try:
        argv = container_ping_argv(target, python=sys.executable)
        ping = SeqPing(pods.client, target, argv=["ip", "netns", "exec", pods.client, *argv])
        # The echoes wait for the server's address: the client's neighbour entry stays
        # incomplete (checked, so that this test cannot pass without the burst).
        state = ""
        for _ in range(50):
            shown = subprocess.run(
                ["ip", "-n", pods.client, "neigh", "show", target, "dev", "eth0"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            state = shown.split()[-1] if shown.strip() else ""
            if state == "INCOMPLETE":
                break
            time.sleep(0.02)
        assert state == "INCOMPLETE", f"no resolution in progress for {target}: {shown!r}"
        time.sleep(0.5)
        assert not ping.lost() and not ping.wait_first(0), "echoes came back while held"
    finally:
        _ignore_resolution(pods.server, family, False)
    assert ping.wait_first(), f"no echo from {target}"
    assert ping.settle(100)
    counted, lost = ping.stop()
    # Held were the echoes of a second or so (about 100 at 10 ms): none is missing.
    assert lost == [], f"{len(lost)} of {counted} echoes lost: {lost[:10]}"
