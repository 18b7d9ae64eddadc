"""agent/netlink.py against real network namespaces, veth pairs and a real TCP flow."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from agent import netlink
from agent import rtnetlink as rtnl
from agent.netlink import Route, SourceRule, SwitchRecord, VerifyError
from localcluster.probe import socket_in
from support.builders import unique
from support.netns import (
    EchoServer,
    TwoNetworks,
    exchange,
    in_ns,
    netns,
    netns_path,
    route_dev,
    rules,
    sh,
    two_networks,
)
from support.require import needs_node_host

pytestmark = needs_node_host

V4: int = socket.AF_INET
V6: int = socket.AF_INET6
TABLE = 100


@pytest.fixture
def nets() -> Iterator[TwoNetworks]:
    with two_networks() as n:
        yield n


def switch_to_b(n: TwoNetworks, table: int = TABLE) -> SwitchRecord:
    return netlink.switch_default_route(
        n.pod_path,
        "nb",
        {V4: n.gw_b4, V6: n.gw_b6},
        "na",
        [f"{n.pod_a4}/24", f"{n.pod_a6}/112"],
        table,
    )


def main_defaults(n: TwoNetworks) -> set[tuple[str, str | None, str | None]]:
    return {(r.dst, r.gateway, r.ifname) for r in netlink.default_routes(n.pod_path)}


# --- namespaces ------------------------------------------------------------------------


def test_netns_given_by_name_or_by_path(nets: TwoNetworks) -> None:
    by_name = [i.name for i in netlink.list_interfaces(nets.pod)]
    by_path = [i.name for i in netlink.list_interfaces(nets.pod_path)]
    assert by_name == by_path == ["na", "nb"]


def test_netns_given_as_proc_pid_path() -> None:
    with netns() as ns:
        sh("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "30"])
        try:
            want = os.stat(netns_path(ns)).st_ino
            path = f"/proc/{proc.pid}/ns/net"
            deadline = time.monotonic() + 5
            while os.stat(path).st_ino != want:  # until `ip netns exec` has entered it
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert sorted(i.name for i in netlink.list_interfaces(path)) == ["v0", "v1"]
        finally:
            proc.kill()
            proc.wait()


def test_missing_netns_raises_and_is_never_created() -> None:
    path = f"/var/run/netns/{unique('nsgone')}"
    with pytest.raises(netlink.NetnsNotFound) as err:
        netlink.list_interfaces(path)
    assert path in str(err.value)
    assert not os.path.exists(path)


def test_calls_from_many_threads_for_different_namespaces_do_not_mix_or_leak() -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    with netns("nsta") as a, netns("nstb") as b, netns("nstc") as c:
        for ns in (a, b, c):
            sh(
                "ip",
                "-n",
                ns,
                "link",
                "add",
                f"if{ns[-6:]}",
                "type",
                "veth",
                "peer",
                "name",
                "peer0",
            )
        errors: list[str] = []

        def hammer(ns: str) -> None:
            for _ in range(15):
                names = sorted(i.name for i in netlink.list_interfaces(ns))
                if names != sorted([f"if{ns[-6:]}", "peer0"]):
                    errors.append(f"{ns}: {names}")
                if netlink.interface_state(ns, "peer0") is None:
                    errors.append(f"{ns}: peer0 missing")

        workers = [threading.Thread(target=hammer, args=(ns,)) for ns in (a, b, c) * 3]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
    assert len(os.listdir("/proc/self/fd")) <= fds_before


# --- reading interfaces ---------------------------------------------------------------


def test_interface_state_reports_link_and_addresses_without_link_local(nets: TwoNetworks) -> None:
    state = netlink.interface_state(nets.pod_path, "na")
    assert state is not None
    assert state.name == "na"
    assert state.up is True
    assert state.oper_state == "UP"
    assert state.mtu == 1500
    assert state.mac == in_ns(nets.pod, "cat", "/sys/class/net/na/address").strip()
    assert state.index == int(in_ns(nets.pod, "cat", "/sys/class/net/na/ifindex"))
    assert state.addresses == [f"{nets.pod_a4}/24", f"{nets.pod_a6}/112"]
    assert not any(a.startswith("fe80") for a in state.addresses)


def test_interface_state_of_a_missing_interface_is_none(nets: TwoNetworks) -> None:
    assert netlink.interface_state(nets.pod_path, "net9") is None


def test_list_interfaces_leaves_out_loopback(nets: TwoNetworks) -> None:
    assert [i.name for i in netlink.list_interfaces(nets.pod_path)] == ["na", "nb"]


def test_interface_state_sees_a_link_set_down(nets: TwoNetworks) -> None:
    sh("ip", "-n", nets.pod, "link", "set", "nb", "down")
    state = netlink.interface_state(nets.pod_path, "nb")
    assert state is not None
    assert state.up is False
    assert state.oper_state == "DOWN"


def test_a_monitor_socket_gets_the_namespaces_link_and_address_changes_only() -> None:
    groups = rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR
    with netns() as watched, netns() as other:
        sock = netlink.monitor_socket(netns_path(watched), groups)
        sock.settimeout(5.0)
        try:
            sh("ip", "-n", other, "link", "add", "elsewhere", "type", "bridge")
            sh("ip", "-n", watched, "link", "add", "mon0", "type", "bridge")
            sh("ip", "-n", watched, "addr", "add", "10.249.7.1/24", "dev", "mon0")
            seen: list[tuple[int, bytes]] = []
            while not any(kind == rtnl.RTM_NEWADDR for kind, _ in seen):
                data = sock.recv(1 << 16)
                length, kind = rtnl.NLMSG.unpack_from(data)[:2]
                seen.append((kind, data[rtnl.NLMSG.size : length]))
        finally:
            sock.close()
    names = [
        rtnl.attrs(body, rtnl.IFINFOMSG.size, len(body)).get(rtnl.IFLA_IFNAME, b"").rstrip(b"\0")
        for kind, body in seen
        if kind == rtnl.RTM_NEWLINK
    ]
    assert names and set(names) == {b"mon0"}, names  # nothing of the other namespace
    address = next(body for kind, body in seen if kind == rtnl.RTM_NEWADDR)
    at = rtnl.attrs(address, rtnl.IFADDRMSG.size, len(address))
    assert at[rtnl.IFA_LOCAL] == socket.inet_aton("10.249.7.1")


def test_a_monitor_socket_of_a_missing_namespace_is_refused() -> None:
    with pytest.raises(netlink.NetnsNotFound):
        netlink.monitor_socket("/var/run/netns/netshift-no-such-ns", 0x1)


# --- verify_interface -----------------------------------------------------------------


def test_verify_accepts_an_interface_with_all_its_addresses(nets: TwoNetworks) -> None:
    netlink.verify_interface(nets.pod_path, "na", [f"{nets.pod_a4}/24", f"{nets.pod_a6}/112"])
    netlink.verify_interface(
        nets.pod_path, "na", [nets.pod_a4, "fd98:0::1:2"]
    )  # bare, uncompressed


def test_verify_names_a_missing_interface(nets: TwoNetworks) -> None:
    with pytest.raises(VerifyError) as err:
        netlink.verify_interface(nets.pod_path, "net9", [], timeout=0.1)
    assert "net9" in str(err.value)
    assert "does not exist" in str(err.value)


def test_verify_names_a_missing_address(nets: TwoNetworks) -> None:
    with pytest.raises(VerifyError) as err:
        netlink.verify_interface(
            nets.pod_path, "na", [f"{nets.pod_a4}/24", "10.98.1.99/24"], timeout=0.1
        )
    message = str(err.value)
    assert "10.98.1.99/24" in message
    assert "missing" in message
    assert err.value.problems == [
        f"address 10.98.1.99/24 is missing (has: {nets.pod_a4}/24, {nets.pod_a6}/112)"
    ]


def test_verify_treats_a_different_prefix_as_missing(nets: TwoNetworks) -> None:
    with pytest.raises(VerifyError, match=r"10\.98\.1\.2/16"):
        netlink.verify_interface(nets.pod_path, "na", ["10.98.1.2/16"], timeout=0.1)


def test_verify_rejects_a_link_that_is_down(nets: TwoNetworks) -> None:
    sh("ip", "-n", nets.pod, "link", "set", "nb", "down")
    with pytest.raises(VerifyError, match=r"nb.*down"):
        netlink.verify_interface(nets.pod_path, "nb", [f"{nets.pod_b4}/24"], timeout=0.1)


def test_verify_waits_for_a_tentative_ipv6_address(nets: TwoNetworks) -> None:
    sh("ip", "-n", nets.pod, "addr", "add", "fd98::1:55/112", "dev", "na")  # with DAD
    state = netlink.interface_state(nets.pod_path, "na")
    assert state is not None and state.tentative == ["fd98::1:55/112"]
    with pytest.raises(VerifyError, match="fd98::1:55/112 is still tentative"):
        netlink.verify_interface(nets.pod_path, "na", ["fd98::1:55/112"], timeout=0.05)
    netlink.verify_interface(nets.pod_path, "na", ["fd98::1:55/112"], timeout=5)


def test_verify_reports_failed_duplicate_address_detection(nets: TwoNetworks) -> None:
    sh("ip", "-n", nets.router_a, "addr", "add", "fd98::1:66/112", "dev", "pa", "nodad")
    sh("ip", "-n", nets.pod, "addr", "add", "fd98::1:66/112", "dev", "na")
    started = time.monotonic()
    with pytest.raises(VerifyError, match="fd98::1:66/112 failed duplicate address detection"):
        netlink.verify_interface(nets.pod_path, "na", ["fd98::1:66/112"], timeout=10)
    assert time.monotonic() - started < 8  # gives up as soon as DAD has failed


# --- default routes -------------------------------------------------------------------


def test_default_routes_lists_both_families_of_the_main_table(nets: TwoNetworks) -> None:
    routes = netlink.default_routes(nets.pod_path)
    assert [(r.dst, r.gateway, r.ifname, r.table) for r in routes] == [
        ("0.0.0.0/0", nets.gw_a4, "na", 254),
        ("::/0", nets.gw_a6, "na", 254),
    ]
    assert routes[1].metric == 1024


def test_remove_default_routes_via_keeps_the_pods_default(nets: TwoNetworks) -> None:
    # What IPAM with 0.0.0.0/0 and ::/0 does on a hot-added secondary network.
    sh(
        "ip",
        "-n",
        nets.pod,
        "route",
        "add",
        "default",
        "via",
        nets.gw_b4,
        "dev",
        "nb",
        "metric",
        "50",
    )
    sh(
        "ip",
        "-n",
        nets.pod,
        "-6",
        "route",
        "add",
        "default",
        "via",
        nets.gw_b6,
        "dev",
        "nb",
        "metric",
        "50",
    )
    assert route_dev(nets.pod, nets.far6) == "nb"  # the hijack the function exists to undo

    removed = netlink.remove_default_routes_via(nets.pod_path, "nb")

    assert {(r.dst, r.gateway, r.ifname, r.metric) for r in removed} == {
        ("0.0.0.0/0", nets.gw_b4, "nb", 50),
        ("::/0", nets.gw_b6, "nb", 50),
    }
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_a4, "na"), ("::/0", nets.gw_a6, "na")}
    assert route_dev(nets.pod, nets.far4) == "na"
    assert route_dev(nets.pod, nets.far6) == "na"
    assert netlink.remove_default_routes_via(nets.pod_path, "nb") == []
    assert netlink.remove_default_routes_via(nets.pod_path, "net9") == []


def test_set_default_route_via_moves_one_family(nets: TwoNetworks) -> None:
    route = netlink.set_default_route_via(nets.pod_path, "nb", nets.gw_b4)
    assert (route.dst, route.gateway, route.ifname) == ("0.0.0.0/0", nets.gw_b4, "nb")
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_b4, "nb"), ("::/0", nets.gw_a6, "na")}
    with pytest.raises(netlink.LinkNotFound, match="net9"):
        netlink.set_default_route_via(nets.pod_path, "net9", nets.gw_b4)


def test_set_default_route_via_a_device_without_gateway(nets: TwoNetworks) -> None:
    route = netlink.set_default_route_via(nets.pod_path, "nb", None, family=V4)
    assert (route.dst, route.gateway, route.ifname) == ("0.0.0.0/0", None, "nb")
    assert "default dev nb" in sh("ip", "-n", nets.pod, "-4", "route", "show", "default")
    with pytest.raises(ValueError, match="family"):
        netlink.set_default_route_via(nets.pod_path, "nb", None)


# --- make-before-break default switch -------------------------------------------------


def test_switch_moves_the_default_and_keeps_old_address_on_old_interface(nets: TwoNetworks) -> None:
    record = switch_to_b(nets)

    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_b4, "nb"), ("::/0", nets.gw_b6, "nb")}
    for far, old, new in (
        (nets.far4, nets.pod_a4, nets.pod_b4),
        (nets.far6, nets.pod_a6, nets.pod_b6),
    ):
        assert route_dev(nets.pod, far) == "nb"
        assert route_dev(nets.pod, far, src=new) == "nb"
        assert route_dev(nets.pod, far, src=old) == "na"
    assert set(record.rules) == {
        SourceRule(f"{nets.pod_a4}/32", TABLE, netlink.SOURCE_RULE_PRIORITY),
        SourceRule(f"{nets.pod_a6}/128", TABLE, netlink.SOURCE_RULE_PRIORITY),
    }
    assert {(r.dst, r.gateway, r.ifname, r.table) for r in record.routes} >= {
        ("0.0.0.0/0", nets.gw_a4, "na", TABLE),
        ("10.98.1.0/24", None, "na", TABLE),
        ("::/0", nets.gw_a6, "na", TABLE),
        ("fd98::1:0/112", None, "na", TABLE),
    }
    assert {(r.dst, r.ifname) for r in record.defaults} == {("0.0.0.0/0", "nb"), ("::/0", "nb")}
    # The old interface's own subnet is still reached directly, not through its gateway.
    assert "via" not in in_ns(nets.pod, "ip", "route", "get", "10.98.1.7", "from", nets.pod_a4)
    # Nothing was taken down.
    assert all(i.up for i in netlink.list_interfaces(nets.pod_path))


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
def test_switch_keeps_an_established_tcp_connection_alive(nets: TwoNetworks, family: int) -> None:
    far, old = (nets.far4, nets.pod_a4) if family == V4 else (nets.far6, nets.pod_a6)
    server = EchoServer(nets.router_a, family, far)
    client = None
    try:
        client = socket_from_old_address(nets, family, old, far, server.port)
        assert exchange(client, b"before the switch") == b"before the switch"

        switch_to_b(nets)

        assert route_dev(nets.pod, far) == "nb"
        for i in range(5):
            assert exchange(client, b"after %d" % i) == b"after %d" % i
    finally:
        if client is not None:
            client.close()
        server.close()


@pytest.mark.parametrize(
    ("family", "mapped"),
    [(V4, False), (V6, False), (V4, True)],
    ids=["ipv4", "ipv6", "ipv4-on-an-ipv6-socket"],
)
def test_removing_its_source_routes_retires_the_old_address_and_its_connections(
    nets: TwoNetworks, family: int, mapped: bool
) -> None:
    # Once the rules are gone while the old interface stays, a packet from the old address
    # would leave through network B (IPv6 even sends from an address already deleted): its
    # sockets are aborted and the address deleted while the rules still hold. An IPv6
    # socket's IPv4 connection (a server listening on ::) is listed as IPv6, v4-mapped.
    far, old = (nets.far4, nets.pod_a4) if family == V4 else (nets.far6, nets.pod_a6)
    server = EchoServer(nets.router_a, family, far)
    client = None
    try:
        if mapped:
            client = socket_from_old_address(
                nets, V6, f"::ffff:{old}", f"::ffff:{far}", server.port
            )
        else:
            client = socket_from_old_address(nets, family, old, far, server.port)
        record = switch_to_b(nets)
        assert exchange(client, b"ping") == b"ping"

        retired = netlink.remove_source_routes(nets.pod_path, record)

        assert retired == [nets.pod_a4, nets.pod_a6] or retired == [nets.pod_a6, nets.pod_a4]
        with pytest.raises(ConnectionAbortedError):
            exchange(client, b"lost")
        assert old not in in_ns(nets.pod, "ip", "addr", "show", "dev", "na")
    finally:
        if client is not None:
            client.close()
        server.close()


def test_removing_the_source_routes_of_an_old_interface_that_stays_retires_nothing(
    nets: TwoNetworks,
) -> None:
    # A switch whose new default failed, undone: the old interface is not leaving, so its
    # addresses and connections stay, even when (a plugin's leftover) a main default goes
    # out of another interface.
    server = EchoServer(nets.router_a, V4, nets.far4)
    client = None
    try:
        client = socket_from_old_address(nets, V4, nets.pod_a4, nets.far4, server.port)
        record = switch_to_b(nets)
        assert exchange(client, b"ping") == b"ping"

        retired = netlink.remove_source_routes(nets.pod_path, record, leaving=False)

        assert retired == []
        assert nets.pod_a4 in in_ns(nets.pod, "ip", "addr", "show", "dev", "na")
        assert not client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        if client is not None:
            client.close()
        server.close()


def socket_from_old_address(
    n: TwoNetworks, family: int, source: str, dst: str, port: int
) -> socket.socket:
    client = socket_in(n.pod, family)
    client.settimeout(3.0)
    client.bind((source, 0))
    client.connect((dst, port))
    return client


def test_switch_is_idempotent(nets: TwoNetworks) -> None:
    first = switch_to_b(nets, table=1000)  # a table id above 255 needs FRA_TABLE/RTA_TABLE
    rules_after_first = rules(nets.pod)
    table_after_first = sh("ip", "-n", nets.pod, "route", "show", "table", "1000")

    second = switch_to_b(nets, table=1000)

    assert second == first
    assert rules(nets.pod) == rules_after_first
    assert sh("ip", "-n", nets.pod, "route", "show", "table", "1000") == table_after_first
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_b4, "nb"), ("::/0", nets.gw_b6, "nb")}
    assert route_dev(nets.pod, nets.far4, src=nets.pod_a4) == "na"


def test_switch_completes_after_a_crash_between_its_steps(nets: TwoNetworks) -> None:
    # State as if the agent died after copying the IPv4 default and adding one rule.
    sh(
        "ip",
        "-n",
        nets.pod,
        "route",
        "add",
        "default",
        "via",
        nets.gw_a4,
        "dev",
        "na",
        "table",
        str(TABLE),
    )
    sh(
        "ip",
        "-n",
        nets.pod,
        "rule",
        "add",
        "from",
        nets.pod_a4,
        "lookup",
        str(TABLE),
        "priority",
        "1000",
    )

    record = switch_to_b(nets)

    assert len(record.rules) == 2
    assert sum(f"lookup {TABLE}" in r for r in rules(nets.pod)) == 2
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_b4, "nb"), ("::/0", nets.gw_b6, "nb")}
    assert route_dev(nets.pod, nets.far4, src=nets.pod_a4) == "na"
    assert route_dev(nets.pod, nets.far6, src=nets.pod_a6) == "na"


def test_switch_only_moves_the_families_the_new_network_serves(nets: TwoNetworks) -> None:
    record = netlink.switch_default_route(
        nets.pod_path, "nb", [nets.gw_b4], "na", [nets.pod_a4, nets.pod_a6], TABLE
    )
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_b4, "nb"), ("::/0", nets.gw_a6, "na")}
    assert route_dev(nets.pod, nets.far4, src=nets.pod_a4) == "na"
    assert len(record.rules) == 2


def test_switch_when_the_old_interface_is_already_gone(nets: TwoNetworks) -> None:
    assert netlink.delete_link(nets.pod_path, "na") is True
    record = switch_to_b(nets)
    assert record.rules == () and record.routes == ()
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_b4, "nb"), ("::/0", nets.gw_b6, "nb")}


def test_switch_refuses_reserved_tables_and_same_interface(nets: TwoNetworks) -> None:
    with pytest.raises(ValueError, match="reserved"):
        switch_to_b(nets, table=254)
    with pytest.raises(ValueError, match="same"):
        netlink.switch_default_route(nets.pod_path, "na", [nets.gw_a4], "na", [], TABLE)
    with pytest.raises(netlink.LinkNotFound):
        netlink.switch_default_route(nets.pod_path, "net9", [nets.gw_b4], "na", [], TABLE)


def test_remove_source_routes_cleans_up_rules_and_table(nets: TwoNetworks) -> None:
    record = switch_to_b(nets)
    netlink.remove_source_routes(nets.pod_path, record)

    assert not any(f"lookup {TABLE}" in r for r in rules(nets.pod))
    assert sh("ip", "-n", nets.pod, "-4", "route", "show", "table", str(TABLE)) == ""
    assert sh("ip", "-n", nets.pod, "-6", "route", "show", "table", str(TABLE)) == ""
    # `na` is still there but carries no default: its old addresses went before their rules,
    # so that no packet from them can follow the main default out of `nb`.
    state = netlink.interface_state(nets.pod_path, "na")
    assert state is not None and state.up
    assert not {nets.pod_a4, nets.pod_a6} & {a.split("/")[0] for a in state.addresses}
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_b4, "nb"), ("::/0", nets.gw_b6, "nb")}
    netlink.remove_source_routes(nets.pod_path, record)  # again: nothing left, no error


def test_remove_source_routes_of_a_switch_back_keeps_the_addresses(nets: TwoNetworks) -> None:
    record = switch_to_b(nets)
    netlink.switch_default_route(
        nets.pod_path, "na", [nets.gw_a4, nets.gw_a6], "nb", [nets.pod_b4, nets.pod_b6], TABLE + 1
    )
    netlink.remove_source_routes(nets.pod_path, record)
    state = netlink.interface_state(nets.pod_path, "na")
    assert state is not None and {nets.pod_a4, nets.pod_a6} <= {
        a.split("/")[0] for a in state.addresses
    }
    assert not any(
        f"lookup {TABLE} " in r or r.endswith(f"lookup {TABLE}") for r in rules(nets.pod)
    )
    assert route_dev(nets.pod, nets.far4, src=nets.pod_a4) == "na"


def test_remove_default_routes_via_takes_one_hop_of_a_multipath_ipv6_default(
    nets: TwoNetworks,
) -> None:
    # What the bridge plugin's ::/0 does to the pod's default: one route, two next hops.
    in_ns(nets.pod, "ip", "-6", "route", "append", "default", "via", nets.gw_b6, "dev", "nb")
    assert "nexthop" in in_ns(nets.pod, "ip", "-6", "route", "show", "default")
    removed = netlink.remove_default_routes_via(nets.pod_path, "nb")
    assert [(r.dst, r.gateway, r.ifname) for r in removed] == [("::/0", nets.gw_b6, "nb")]
    assert main_defaults(nets) == {("0.0.0.0/0", nets.gw_a4, "na"), ("::/0", nets.gw_a6, "na")}


def test_keep_source_routes_pins_old_addresses_before_any_default_moves(nets: TwoNetworks) -> None:
    addrs = [f"{nets.pod_a4}/24", f"{nets.pod_a6}/112"]
    kept, copied = netlink.keep_source_routes(nets.pod_path, "na", addrs, TABLE)
    assert {r.src for r in kept} == {f"{nets.pod_a4}/32", f"{nets.pod_a6}/128"}
    assert {(r.dst, r.ifname) for r in copied} >= {("0.0.0.0/0", "na"), ("::/0", "na")}
    # A plugin's default that wins in the main table (IPv4 prepends, IPv6 merges) ...
    in_ns(nets.pod, "ip", "route", "prepend", "default", "via", nets.gw_b4, "dev", "nb")
    in_ns(nets.pod, "ip", "-6", "route", "append", "default", "via", nets.gw_b6, "dev", "nb")
    assert route_dev(nets.pod, nets.far4) == "nb"
    # ... never carries a packet from an old address.
    assert route_dev(nets.pod, nets.far4, src=nets.pod_a4) == "na"
    assert route_dev(nets.pod, nets.far6, src=nets.pod_a6) == "na"
    record = switch_to_b(nets)  # picks the same state up
    assert set(kept) <= set(record.rules)


def test_remove_source_routes_after_the_old_interface_was_detached(nets: TwoNetworks) -> None:
    record = switch_to_b(nets)
    netlink.delete_link(nets.pod_path, "na")
    netlink.remove_source_routes(nets.pod_path, record)
    assert not any(f"lookup {TABLE}" in r for r in rules(nets.pod))


def test_switch_record_survives_json() -> None:
    record = SwitchRecord(
        table=100,
        old_ifname="eth0",
        new_ifname="net1",
        rules=(SourceRule("10.98.1.2/32", 100, 1000),),
        routes=(Route("0.0.0.0/0", "10.98.1.1", "eth0", 0, 100),),
        defaults=(Route("::/0", "fd98::2:1", "net1", 1024, 254),),
    )
    assert SwitchRecord.from_json(record.to_json()) == record


# --- delete_link ------------------------------------------------------------------------


def test_delete_link_removes_an_interface_and_tolerates_a_missing_one(nets: TwoNetworks) -> None:
    assert netlink.delete_link(nets.pod_path, "nb") is True
    assert netlink.interface_state(nets.pod_path, "nb") is None
    assert netlink.delete_link(nets.pod_path, "nb") is False
