"""The node agent hot-plugs networks into running pods: real apiserver, CNI plugins, namespaces.

The agent runs as its own process (`netshift agent`), finds the node
simulator's namespaces by path, and is the only one acting on annotation edits
(the test cluster has no webhook, so these tests also play the user who
bypasses it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import netlink
from localcluster.cluster import LocalCluster
from netshift import annotations as ann
from netshift import keys
from netshift.kube import Kube, nad_path, pod_path, wait_for
from support.agent import (
    NETWORKS,
    AgentProcess,
    Networks,
    agent_status,
    annotate,
    attachment,
    create_running_pod,
    default_route_ifnames,
    delete_pod_and_wait,
    has_event,
    interfaces,
    ipam_ips,
    netns_of,
    network_status,
    next_subnet,
    plugin_calls,
    pod_events,
    pod_manifest,
    recording_plugin,
    route_get,
    running_agent,
    sh,
    slow_plugin_dir,
    v4_addresses,
    wait_running,
    wait_settled,
)


@pytest.fixture(scope="module")
def agent_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent")


@pytest.fixture(scope="module")
def slow_plugin(agent_workdir: Path) -> Iterator[tuple[Path, Path, Path]]:
    with slow_plugin_dir(agent_workdir / "slow") as found:
        yield found


@pytest.fixture(scope="module")
def plugin_log(slow_plugin: tuple[Path, Path, Path]) -> Path:
    """The call log of "recbridge", a bridge that records each ADD and DEL (in the agent's path)."""
    return recording_plugin(slow_plugin[0])


@pytest.fixture(scope="module")
def agent(
    cluster: LocalCluster, agent_workdir: Path, slow_plugin: tuple[Path, Path, Path]
) -> Iterator[AgentProcess]:
    with running_agent(cluster, agent_workdir, (str(slow_plugin[0]),)) as proc:
        yield proc


def ips_in(nets: Networks, nad: str, state_addresses: list[str]) -> list[str]:
    return [a.split("/")[0] for a in state_addresses if nets.in_subnet(nad, a)]


# --- adding -------------------------------------------------------------------------------


def test_annotating_a_running_pod_adds_bridge_and_macvlan_interfaces_without_moving_the_default_route(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    eth0_before = interfaces(path)["eth0"]
    assert default_route_ifnames(path) == ["eth0"]
    nets.bridge("blue", default_route=True)  # its IPAM hands out 0.0.0.0/0
    nets.macvlan("mv")

    annotate(kube, namespace, "web", {NETWORKS: "blue, mv@macv0"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    ifs = interfaces(path)
    assert set(ifs) == {"eth0", "net1", "macv0"}
    net1, macv0 = ifs["net1"], ifs["macv0"]
    assert net1.up and macv0.up
    blue_ip = ips_in(nets, "blue", net1.addresses)
    mv_ip = ips_in(nets, "mv", macv0.addresses)
    assert len(blue_ip) == 1 and len(mv_ip) == 1, (net1, macv0)
    # The addresses are the ones host-local reserved, for this pod and interface.
    assert nets.owners("blue") == {blue_ip[0]: (uid, "net1")}
    assert nets.owners("mv") == {mv_ip[0]: (uid, "macv0")}

    # The default route has not moved, although blue's IPAM carries one.
    assert default_route_ifnames(path) == ["eth0"]
    assert " dev eth0 " in route_get(path, "192.0.2.1") + " "
    assert interfaces(path)["eth0"].addresses == eth0_before.addresses

    status = network_status(pod)
    assert status["eth0"].get("default") is True
    assert status["net1"]["name"] == f"{namespace}/blue"
    assert status["net1"]["ips"] == blue_ip
    assert status["net1"]["mac"] == net1.mac
    assert not status["net1"].get("default")
    assert status["macv0"]["name"] == f"{namespace}/mv"
    assert status["macv0"]["ips"] == mv_ip
    assert [e for e in status.values() if e.get("default")] == [status["eth0"]]

    report = agent_status(pod)
    assert report is not None and report.phase == keys.CONVERGED
    assert attachment(report, "net1").state == keys.ATTACHED
    assert attachment(report, "macv0").state == keys.ATTACHED
    assert attachment(report, "net1").network == f"{namespace}/blue"
    wait_for(
        lambda: [e["reason"] for e in pod_events(kube, namespace, "web")].count("Attached") >= 2,
        10,
        what="two Attached Events",
    )


def test_networks_asked_for_at_creation_are_adopted_without_being_replugged(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    """The node simulator (Multus's stand-in) attaches them; the agent must not redo them."""
    nets.bridge("blue")
    nets.bridge("green")
    pod = create_running_pod(kube, namespace, "web", {NETWORKS: "blue, green@data0"})
    path = netns_of(pod)
    before = interfaces(path)
    assert set(before) == {"eth0", "net1", "data0"}

    # Any edit wakes the agent up; the creation-time interfaces stay as they are.
    annotate(kube, namespace, "web", {"example.com/touch": "1"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    after = interfaces(path)
    assert set(after) == {"eth0", "net1", "data0"}
    assert after["net1"].index == before["net1"].index
    assert after["data0"].index == before["data0"].index

    # ... and can be removed like any other.
    annotate(kube, namespace, "web", {NETWORKS: "green@data0"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert set(interfaces(path)) == {"eth0", "data0"}
    assert nets.ips("blue") == set()
    assert set(network_status(pod)) == {"eth0", "data0"}


# --- removing and changing ----------------------------------------------------------------


def test_removing_a_network_deletes_its_interface_and_releases_its_ip(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue", default_route=True)
    nets.macvlan("mv")
    annotate(kube, namespace, "web", {NETWORKS: "blue, mv@macv0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    net1 = interfaces(path)["net1"]
    assert len(nets.ips("mv")) == 1

    annotate(kube, namespace, "web", {NETWORKS: "blue"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    ifs = interfaces(path)
    assert "macv0" not in ifs
    assert nets.ips("mv") == set()  # back in the pool
    assert ifs["net1"].index == net1.index and ifs["net1"].addresses == net1.addresses
    assert set(network_status(pod)) == {"eth0", "net1"}
    report = agent_status(pod)
    assert report is not None and {a.interface for a in report.attachments} == {"eth0", "net1"}
    assert has_event(kube, namespace, "web", "Detached")

    # Removing the last one empties the store too; the default route never moved.
    annotate(kube, namespace, "web", {NETWORKS: None})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert set(interfaces(path)) == {"eth0"}
    assert nets.ips("blue") == set()
    assert default_route_ifnames(path) == ["eth0"]
    assert set(network_status(pod)) == {"eth0"}


def test_swapping_the_network_behind_one_interface_name_detaches_before_attaching(
    kube: Kube, namespace: str, nets: Networks, plugin_log: Path
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue", plugin_type="recbridge")
    nets.bridge("green", plugin_type="recbridge")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert ips_in(nets, "blue", interfaces(path)["data0"].addresses)

    annotate(kube, namespace, "web", {NETWORKS: "green@data0"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    data0 = interfaces(path)["data0"]
    green_ip = ips_in(nets, "green", data0.addresses)
    assert len(green_ip) == 1 and not ips_in(nets, "blue", data0.addresses)
    assert nets.ips("blue") == set()
    assert nets.ips("green") == set(green_ip)
    entry = network_status(pod)["data0"]
    assert entry["name"] == f"{namespace}/green" and entry["ips"] == green_ip
    report = agent_status(pod)
    assert report is not None
    assert attachment(report, "data0").network == f"{namespace}/green"
    # Blue's DEL ran before green's ADD: the other order would fail on the taken name.
    assert plugin_calls(plugin_log, pod["metadata"]["uid"]) == [
        ("ADD", "data0", "blue"),
        ("DEL", "data0", "blue"),
        ("ADD", "data0", "green"),
    ]


def test_removing_an_unnamed_network_leaves_the_other_its_automatic_name(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("red")
    nets.bridge("blue")
    annotate(kube, namespace, "web", {NETWORKS: "red, blue"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    before = interfaces(path)
    assert ips_in(nets, "red", before["net1"].addresses)
    assert ips_in(nets, "blue", before["net2"].addresses)

    annotate(kube, namespace, "web", {NETWORKS: "blue"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    after = interfaces(path)
    assert set(after) == {"eth0", "net2"}
    assert after["net2"].index == before["net2"].index  # not re-plugged
    assert after["net2"].addresses == before["net2"].addresses
    assert nets.ips("red") == set()
    assert network_status(pod)["net2"]["name"] == f"{namespace}/blue"

    # A network added later takes the lowest free name; blue keeps net2.
    annotate(kube, namespace, "web", {NETWORKS: "blue, red"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    again = interfaces(path)
    assert set(again) == {"eth0", "net1", "net2"}
    assert again["net2"].index == before["net2"].index
    assert ips_in(nets, "red", again["net1"].addresses)


# --- failures -----------------------------------------------------------------------------


BROKEN_CONFIGS = {
    "broken-json": '{"cniVersion": "1.0.0", "name": "bad", "type": "bridge", ',
    "unknown-plugin": json.dumps(
        {"cniVersion": "1.0.0", "name": "bad", "type": "no-such-plugin-here"}
    ),
    "path-like-type": json.dumps({"cniVersion": "1.0.0", "name": "bad", "type": "../../bin/sh"}),
}
EXPECTED_REASON = {
    "broken-json": "not valid JSON",
    "unknown-plugin": "'no-such-plugin-here' not found",
    "path-like-type": "is not a plain plugin file name",
}


@pytest.mark.parametrize("kind", sorted(BROKEN_CONFIGS))
def test_a_bad_nad_fails_only_its_attachment_with_the_reason_and_is_retried_with_backoff(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess, kind: str
) -> None:
    # Both NADs before the pod: the agent's NAD watch has them long before the pod asks for
    # them, so the first failure is the config's, not "does not exist". (Made right before
    # the annotation, blue was once not in the agent's cache yet on a loaded machine: a
    # first AttachFailed "blue does not exist", retried and attached a second later.)
    nets.raw("bad", BROKEN_CONFIGS[kind])
    nets.bridge("blue")
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    before = interfaces(path)

    annotate(kube, namespace, "web", {NETWORKS: "blue@data0, bad@bad0"})
    first_try = time.monotonic()
    pod = wait_settled(kube, namespace, "web", keys.DEGRADED)

    report = agent_status(pod)
    assert report is not None
    failed = attachment(report, "bad0")
    assert failed.state == keys.FAILED
    assert EXPECTED_REASON[kind] in failed.message, failed.message
    assert EXPECTED_REASON[kind] in report.message
    assert attachment(report, "data0").state == keys.ATTACHED
    assert has_event(kube, namespace, "web", "AttachFailed", "Warning")
    warnings = [
        e
        for e in pod_events(kube, namespace, "web")
        if e["reason"] == "AttachFailed" and e["type"] == "Warning"
    ]
    assert warnings and EXPECTED_REASON[kind] in warnings[0]["message"]

    # The pod's other interfaces are untouched: same links, same addresses, still up.
    after = interfaces(path)
    assert set(after) == {"eth0", "data0"}
    for name in ("eth0", "data0"):
        assert after[name].index == before[name].index
        assert after[name].addresses == before[name].addresses
        assert after[name].up
    assert default_route_ifnames(path) == ["eth0"]
    assert set(network_status(pod)) == {"eth0", "data0"}

    # Retried, with growing pauses: 1s, 2s, 4s, ...
    def retries() -> dict[int, int]:
        found: dict[int, int] = {}
        for event in pod_events(kube, namespace, "web"):
            if event["reason"] == "AttachFailed":
                match = re.search(r"\(attempt (\d+), retry in (\d+)s\)", event["message"])
                assert match, event["message"]
                found[int(match[1])] = int(match[2])
        return found

    wait_for(lambda: 3 in retries(), 20, what="a third attempt")
    assert time.monotonic() - first_try > 2.5  # 1s + 2s of backoff, not a busy loop
    assert int(agent.records(uid)["bad0"]["attempts"]) >= 3
    assert {n: retries().get(n) for n in (1, 2, 3)} == {1: 1, 2: 2, 3: 4}
    assert set(interfaces(path)) == {"eth0", "data0"}

    # Fixing the wish clears the failure.
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    report = agent_status(pod)
    assert report is not None and {a.interface for a in report.attachments} == {"eth0", "data0"}
    assert interfaces(path)["data0"].index == before["data0"].index


def test_a_malformed_annotation_written_past_the_webhook_degrades_and_changes_nothing(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    before = interfaces(path)

    bad = '[{"name": "blue", "interface": "data0"}, {"name": "Not_A_Name"}]'
    with pytest.raises(ann.AnnotationError) as parse_error:
        ann.parse_networks(bad)
    annotate(kube, namespace, "web", {NETWORKS: bad})
    pod = wait_settled(kube, namespace, "web", keys.DEGRADED)

    report = agent_status(pod)
    assert report is not None and report.message == str(parse_error.value)
    assert "Not_A_Name" in report.message
    after = interfaces(path)
    assert set(after) == {"eth0", "data0"}
    assert after["data0"].index == before["data0"].index
    assert after["data0"].addresses == before["data0"].addresses
    assert set(network_status(pod)) == {"eth0", "data0"}
    assert has_event(kube, namespace, "web", "InvalidNetworks", "Warning")

    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert interfaces(path)["data0"].index == before["data0"].index


# --- crashes, restarts, deletion ----------------------------------------------------------


def test_agent_killed_in_the_middle_of_an_attach_converges_after_restart_without_leaks(
    kube: Kube,
    namespace: str,
    nets: Networks,
    agent: AgentProcess,
    slow_plugin: tuple[Path, Path, Path],
) -> None:
    _plugin_dir, flag, marker = slow_plugin
    pod = create_running_pod(kube, namespace, "web")
    uid, path = pod["metadata"]["uid"], netns_of(pod)
    nets.bridge("slow", plugin_type="slowbridge")
    bridge = nets.links.names[-1]
    marker.unlink(missing_ok=True)
    flag.touch()
    try:
        annotate(kube, namespace, "web", {NETWORKS: "slow@data0"})
        # The plugin has made the link and reserved the address; its result is not out yet.
        wait_for(marker.exists, 30, what="the slow ADD to reach its pause")
        assert agent.records(uid)["data0"]["state"] == "Attaching"
        agent.kill()  # SIGKILL
        assert "data0" in interfaces(path) and len(nets.ips("slow")) == 1
    finally:
        flag.unlink(missing_ok=True)

    agent.start()
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    ifs = interfaces(path)
    assert set(ifs) == {"eth0", "data0"}  # no second interface
    address = ips_in(nets, "slow", ifs["data0"].addresses)
    assert len(address) == 1
    # The IPAM store holds exactly the address of the attached interface.
    assert nets.owners("slow") == {address[0]: (uid, "data0")}
    # ... and the bridge has exactly one port: no leftover host veth.
    ports = sh("ip", "-o", "link", "show", "master", bridge).stdout.strip().splitlines()
    assert len(ports) == 1, ports
    assert network_status(pod)["data0"]["ips"] == address
    assert agent.records(uid)["data0"]["state"] == "Attached"


def test_edits_made_while_the_agent_is_down_are_applied_when_it_starts(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    nets.bridge("green")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)

    agent.stop()
    annotate(kube, namespace, "web", {NETWORKS: "green@data1"})
    time.sleep(1)
    assert set(interfaces(path)) == {"eth0", "data0"}  # nobody acted on it
    agent.start()

    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    ifs = interfaces(path)
    assert set(ifs) == {"eth0", "data1"}
    assert ips_in(nets, "green", ifs["data1"].addresses)
    assert nets.ips("blue") == set()
    assert set(network_status(pod)) == {"eth0", "data1"}


def test_pods_deleted_while_the_agent_is_down_are_released_when_it_starts(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    uid = pod["metadata"]["uid"]
    nets.bridge("blue")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert len(nets.ips("blue")) == 1

    agent.stop()
    delete_pod_and_wait(kube, namespace, "web")
    agent.start()

    wait_for(lambda: not nets.ips("blue"), 30, what="blue's address released")
    wait_for(lambda: not (agent.records_dir / uid).exists(), 30, what="the pod's records gone")


def test_deleting_a_pod_releases_every_hot_plugged_address_and_its_records(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    uid = pod["metadata"]["uid"]
    nets.bridge("blue", default_route=True)
    nets.macvlan("mv")
    annotate(kube, namespace, "web", {NETWORKS: "blue, mv@macv0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert len(nets.ips("blue")) == 1 and len(nets.ips("mv")) == 1
    assert agent.record_files(uid)

    delete_pod_and_wait(kube, namespace, "web")

    wait_for(
        lambda: not nets.ips("blue") and not nets.ips("mv"),
        30,
        what="the pod's hot-plugged addresses released",
    )
    wait_for(lambda: not (agent.records_dir / uid).exists(), 30, what="the pod's records gone")


def test_the_agent_patches_its_reports_and_keeps_what_others_wrote(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    entries = json.loads(pod["metadata"]["annotations"][keys.NETWORK_STATUS_KEY])
    entries[0]["device-info"] = {"type": "veth", "version": "1.1.0"}  # a field only others write
    annotate(
        kube,
        namespace,
        "web",
        {keys.NETWORK_STATUS_KEY: json.dumps(entries), "example.com/keep": "me"},
    )
    nets.bridge("blue")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert pod["metadata"]["annotations"]["example.com/keep"] == "me"
    status = network_status(pod)
    assert status["eth0"]["device-info"] == {"type": "veth", "version": "1.1.0"}
    assert status["eth0"]["ips"] == entries[0]["ips"]
    assert v4_addresses(interfaces(netns_of(pod))["data0"])


def test_changing_the_ips_behind_one_interface_replugs_it_with_the_new_address(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue", capabilities={"ips": True})
    base = nets.subnets["blue"].rsplit(".", 1)[0]

    def wish(host: int) -> str:
        return json.dumps([{"name": "blue", "interface": "data0", "ips": [f"{base}.{host}/24"]}])

    annotate(kube, namespace, "web", {NETWORKS: wish(50)})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert f"{base}.50/24" in interfaces(path)["data0"].addresses
    assert nets.ips("blue") == {f"{base}.50"}

    annotate(kube, namespace, "web", {NETWORKS: wish(60)})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert ips_in(nets, "blue", interfaces(path)["data0"].addresses) == [f"{base}.60"]
    assert nets.ips("blue") == {f"{base}.60"}
    assert network_status(pod)["data0"]["ips"] == [f"{base}.60"]


def test_a_network_is_detached_with_its_recorded_config_after_its_nad_changed_or_vanished(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    nets.bridge("green")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0, green@data1"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert len(nets.ips("blue")) == 1 and len(nets.ips("green")) == 1

    # blue's NAD now points at another IPAM store; green's is gone.
    nad = kube.get(nad_path(namespace, "blue"))
    config = json.loads(nad["spec"]["config"])
    config["plugins"][0]["ipam"]["dataDir"] = str(nets.workdir / "elsewhere")
    nad["spec"]["config"] = json.dumps(config)
    kube.put(nad_path(namespace, "blue"), nad)
    kube.delete(nad_path(namespace, "green"))

    annotate(kube, namespace, "web", {NETWORKS: None})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert set(interfaces(path)) == {"eth0"}
    assert nets.ips("blue") == set()  # released from the store the ADD used
    assert nets.ips("green") == set()
    assert set(network_status(pod)) == {"eth0"}


def test_a_restarted_agent_leaves_what_it_attached_alone(
    kube: Kube, namespace: str, nets: Networks, agent: AgentProcess
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    nets.macvlan("mv")
    nets.bridge("green")
    annotate(kube, namespace, "web", {NETWORKS: "blue, mv@macv0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    before = interfaces(path)

    def attached_events() -> int:
        return [e["reason"] for e in pod_events(kube, namespace, "web")].count("Attached")

    # Events follow the status patch (a background sender): both are in before the kill.
    wait_for(lambda: attached_events() == 2, 10, what="an Attached Event per network")
    attached = attached_events()
    agent.kill()
    agent.start()
    # The restarted agent plans against its records: one more network is one more ADD,
    # and what was there stays (same links, same addresses).
    annotate(kube, namespace, "web", {NETWORKS: "blue, mv@macv0, green@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    after = interfaces(path)
    assert set(after) == {"eth0", "net1", "macv0", "data0"}
    for name in ("eth0", "net1", "macv0"):
        assert (after[name].index, after[name].addresses) == (
            before[name].index,
            before[name].addresses,
        )
    wait_for(lambda: attached_events() >= attached + 1, 10, what="the new Attached Event")
    time.sleep(0.5)  # an Event for a re-plugged network would come as fast
    assert attached_events() == attached + 1


def test_a_dual_stack_network_gets_both_addresses_and_takes_no_default_route(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    subnet4 = next_subnet()
    subnet6 = f"fd50:0:0:{subnet4.split('.')[2]}::/64"
    data_dir = nets.workdir / "ipam" / "ds"
    nets.raw(
        "ds",
        {
            "cniVersion": "1.0.0",
            "name": "ds",
            "type": "bridge",
            "bridge": nets.links.bridge(),
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet4}], [{"subnet": subnet6}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                "dataDir": str(data_dir),
            },
        },
    )
    annotate(kube, namespace, "web", {NETWORKS: "ds@data0"})
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)

    addresses = interfaces(path)["data0"].addresses
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    assert len(v4) == 1 and len(v6) == 1, addresses
    assert set(network_status(pod)["data0"]["ips"]) == {v4[0].split("/")[0], v6[0].split("/")[0]}
    # Neither family's default route went to data0 (the pod had no IPv6 default before).
    assert [r.ifname for r in netlink.default_routes(path)] == ["eth0"]
    assert ipam_ips(data_dir, "ds") == {v4[0].split("/")[0], v6[0].split("/")[0]}

    annotate(kube, namespace, "web", {NETWORKS: None})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert ipam_ips(data_dir, "ds") == set()


def test_a_detach_that_fails_degrades_the_pod_and_is_retried_until_it_works(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.macvlan("mv")
    master = nets.links.names[-1]
    annotate(kube, namespace, "web", {NETWORKS: "mv@macv0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert "macv0" in interfaces(path) and len(nets.ips("mv")) == 1

    # The master goes (the kernel takes the macvlan with it): macvlan's DEL now fails
    # before it releases the address.
    sh("ip", "link", "del", master)
    annotate(kube, namespace, "web", {NETWORKS: None})
    pod = wait_settled(kube, namespace, "web", keys.DEGRADED)
    report = agent_status(pod)
    assert report is not None
    assert attachment(report, "macv0").state == keys.DETACHING
    assert "detach failed" in report.message and "macv0" in report.message
    assert has_event(kube, namespace, "web", "DetachFailed", "Warning")
    assert len(nets.ips("mv")) == 1  # not released, and not forgotten either

    # Once the master is back, a retry succeeds and the address goes back to the pool.
    sh("ip", "link", "add", master, "type", "veth", "peer", "name", master[:-2] + "pp")
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED, timeout=30)
    assert nets.ips("mv") == set()
    assert set(network_status(pod)) == {"eth0"}
    report = agent_status(pod)
    assert report is not None and [a.interface for a in report.attachments] == ["eth0"]


def test_a_swap_whose_old_network_cannot_be_detached_waits_and_leaks_nothing(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.macvlan("mv")
    master = nets.links.names[-1]
    nets.bridge("green")
    annotate(kube, namespace, "web", {NETWORKS: "mv@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    (mv_ip,) = nets.ips("mv")

    sh("ip", "link", "del", master)  # macvlan's DEL fails from now on
    annotate(kube, namespace, "web", {NETWORKS: "green@data0"})
    pod = wait_settled(kube, namespace, "web", keys.DEGRADED)
    report = agent_status(pod)
    assert report is not None
    assert attachment(report, "data0").network == f"{namespace}/mv"
    assert attachment(report, "data0").state == keys.DETACHING
    assert nets.ips("green") == set()  # not attached over the old one
    assert nets.ips("mv") == {mv_ip}  # still held, so it can still be released

    sh("ip", "link", "add", master, "type", "veth", "peer", "name", master[:-2] + "pp")
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED, timeout=30)
    assert nets.ips("mv") == set()
    green = ips_in(nets, "green", interfaces(path)["data0"].addresses)
    assert len(green) == 1 and nets.ips("green") == set(green)
    assert network_status(pod)["data0"]["name"] == f"{namespace}/green"


def test_an_interface_deleted_behind_the_agents_back_is_plugged_again_without_a_leak(
    kube: Kube, namespace: str, nets: Networks
) -> None:
    pod = create_running_pod(kube, namespace, "web")
    path = netns_of(pod)
    nets.bridge("blue")
    annotate(kube, namespace, "web", {NETWORKS: "blue@data0"})
    wait_settled(kube, namespace, "web", keys.CONVERGED)
    assert len(nets.ips("blue")) == 1

    sh("ip", "-n", Path(path).name, "link", "del", "data0")
    # Any event for the pod (or the periodic resync) makes the agent look again.
    annotate(kube, namespace, "web", {"example.com/touched": "1"})

    def plugged() -> bool:
        # The link is there from the start of the ADD, its address a moment later; the status
        # cannot tell (it said Converged all along).
        found = interfaces(path).get("data0")
        return found is not None and bool(v4_addresses(found))

    wait_for(plugged, 30, what="data0 plugged again, with its address")
    pod = wait_settled(kube, namespace, "web", keys.CONVERGED)
    (again,) = nets.ips("blue")  # one reservation: the lost interface's address was released
    assert [a.split("/")[0] for a in v4_addresses(interfaces(path)["data0"])] == [again]
    assert "data0" in network_status(pod)


def test_an_edit_made_before_the_pod_runs_is_applied_once_it_runs(
    cluster: LocalCluster, kube: Kube, namespace: str, nets: Networks
) -> None:
    """The node simulator is paused, so the pod stays Pending (scheduled, no sandbox) while
    its networks are edited; the edit must not be lost."""
    nets.bridge("blue")
    sim = cluster.pid("nodesim")
    assert sim is not None
    os.kill(sim, signal.SIGSTOP)
    try:
        kube.create(pod_path(namespace), pod_manifest("early"))
        wait_for(
            lambda: kube.get(pod_path(namespace, "early"))["spec"].get("nodeName"),
            30,
            what="pod scheduled",
        )
        assert kube.get(pod_path(namespace, "early"))["status"]["phase"] == "Pending"
        annotate(kube, namespace, "early", {NETWORKS: "blue@data0"})
    finally:
        os.kill(sim, signal.SIGCONT)
    pod = wait_running(kube, namespace, "early")
    pod = wait_settled(kube, namespace, "early", keys.CONVERGED)
    assert "data0" in interfaces(netns_of(pod))
    assert "data0" in network_status(pod)
    assert len(nets.ips("blue")) == 1
