"""`netshift plan`: what applying or deleting a NetworkProfile would do, before it is done.

Pure tests of controller.profileplan first (no cluster), then the command against
the local cluster, where the plan's pod counts are checked against what the
controller then really rolls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import main
from controller.profileplan import (
    CONFLICT_CREATES,
    CONFLICT_ENDS,
    CREATE,
    DELETE,
    IGNORE,
    LIVE,
    PAUSED,
    UPDATE,
    ProfilePlan,
    plan_apply,
    plan_delete,
)
from controller.progress import DONE, read_progress
from controller.rollout import Snapshot, desired_changes
from localcluster.cluster import LocalCluster
from netshift.keys import (
    DEFAULT_NETWORK_KEY,
    INJECTED_KEY,
    NETWORKS_KEY,
    PROFILE_KEY,
    ROLLOUT_STARTED_KEY,
)
from netshift.kube import Kube, wait_for
from netshift.pod import Pod
from netshift.policy import Profile
from support.builders import PROFILES, create_nad
from support.controller import (
    NOW,
    ControllerProcess,
    StandInAgent,
    annotations_of,
    condition,
    create_pods,
    create_profile,
    delete_profile,
    label_namespace,
    patch_profile,
    patched,
    pod,
    pods,
    profile,
    profile_status,
    reported,
    rollout_profile,
    snapshot,
    wait_running,
)

NADS = {"ns1/net-a", "ns1/net-b", "ns2/net-a", "ns2/net-b", "ns1/side", "ns2/side"}


def on_profile(p: Pod, prof: Profile) -> Pod:
    """The pod as it is once `prof` rolled onto it and the agent reported."""
    return reported(patched(p, desired_changes(p, prof)))


def obj(name: str = "blue", **kw: Any) -> dict[str, Any]:
    kw.setdefault("labels", {"team": "a"})
    return rollout_profile(name, **kw)


def cluster(profiles: list[Profile], pod_list: list[Pod], **kw: Any) -> Snapshot:
    kw.setdefault("nads", NADS)
    return snapshot(profiles, pod_list, **kw)


def row(plan: ProfilePlan, namespace: str) -> Any:
    return next(ns for ns in plan.namespaces if ns.namespace == namespace)


def diff(plan: ProfilePlan, namespace: str) -> Mapping[str, tuple[str | None, str | None]]:
    return {c.key: (c.before, c.after) for c in row(plan, namespace).sample_diff}


# --- a new profile ----------------------------------------------------------------


def test_a_new_live_profile_changes_every_running_pod_of_the_namespaces_it_selects() -> None:
    snap = cluster(
        [],
        [*pods(3, "ns1"), *pods(2, "ns2")],
        namespaces={"ns1": {"team": "a"}, "ns2": {"team": "a"}, "other": {}},
    )
    plan = plan_apply(obj(default="net-b"), snap, NOW)
    assert plan.action == CREATE and plan.safe and plan.errors == ()
    assert [ns.namespace for ns in plan.namespaces] == ["ns1", "ns2"]
    assert plan.governed() == ("ns1", "ns2")
    ns1 = row(plan, "ns1")
    assert (ns1.winner_before, ns1.winner_after) == (None, "blue")
    assert (ns1.running, ns1.changing, ns1.will_roll, ns1.rollout) == (3, 3, 3, LIVE)
    assert ns1.sample == "ns1/p00"
    d = diff(plan, "ns1")
    assert d[DEFAULT_NETWORK_KEY] == (None, "ns1/net-b")
    assert d[PROFILE_KEY] == (None, "blue")
    assert INJECTED_KEY in d
    # What a pod created afterwards gets, from the webhook's function.
    assert {c.key: c.after for c in ns1.new_pod}[DEFAULT_NETWORK_KEY] == "ns1/net-b"
    assert plan.to_json()["pods"] == {"changing": 5, "willRoll": 5}


def test_the_sample_diff_is_exactly_what_the_controller_would_write() -> None:
    prof = profile(default="net-b", networks=[{"name": "side", "interface": "side0"}])
    p = pod("ns1", "p00", {NETWORKS_KEY: "ns1/net-a@extra"})
    plan = plan_apply(
        obj(default="net-b", networks=[{"name": "side", "interface": "side0"}]),
        cluster([], [p]),
        NOW,
    )
    expected = desired_changes(p, prof)
    assert {c.key: c.after for c in row(plan, "ns1").sample_diff} == expected
    assert diff(plan, "ns1")[NETWORKS_KEY][0] == "ns1/net-a@extra"


def test_existing_pods_ignore_changes_only_new_pods() -> None:
    plan = plan_apply(obj(existingPods="Ignore"), cluster([], pods(4)), NOW)
    ns1 = row(plan, "ns1")
    assert (ns1.changing, ns1.will_roll, ns1.rollout) == (4, 0, IGNORE)
    assert plan.safe


def test_a_paused_profile_counts_the_pods_it_will_roll_on_resume() -> None:
    ns1 = row(plan_apply(obj(paused=True), cluster([], pods(4)), NOW), "ns1")
    assert (ns1.changing, ns1.will_roll, ns1.rollout) == (4, 4, PAUSED)


def test_opted_out_and_not_running_pods_are_not_counted() -> None:
    from netshift.keys import INJECT_LABEL

    pod_list = [
        pod("ns1", "a"),
        pod("ns1", "b", labels={INJECT_LABEL: "disabled"}),
        pod("ns1", "c", phase="Pending"),
    ]
    ns1 = row(plan_apply(obj(), cluster([], pod_list), NOW), "ns1")
    assert (ns1.running, ns1.changing) == (1, 1)


def test_system_namespaces_are_never_planned() -> None:
    snap = cluster([], [pod("kube-system", "dns")], namespaces={"kube-system": {"team": "a"}})
    assert plan_apply(obj(), snap, NOW).namespaces == ()


# --- missing networks, invalid profiles ------------------------------------------------


def test_a_missing_nad_makes_the_plan_unsafe_and_names_it() -> None:
    plan = plan_apply(
        obj(default="net-b", networks=[{"name": "nowhere"}]), cluster([], pods(1)), NOW
    )
    assert not plan.safe
    assert plan.missing_networks == ("ns1/nowhere", "ns2/nowhere")
    assert row(plan, "ns2").missing_networks == ("ns2/nowhere",)  # no pods there: still checked
    assert plan.to_json()["missingNetworks"] == ["ns1/nowhere", "ns2/nowhere"]


def test_an_invalid_profile_gives_the_policy_error_text() -> None:
    bad = obj(maxConcurrent=0)
    plan = plan_apply(bad, cluster([], pods(1)), NOW)
    assert not plan.safe and plan.namespaces == ()
    assert plan.errors == (
        'NetworkProfile "blue": spec.rollout.maxConcurrent: 0 is too small; '
        "expected an integer of at least 1",
    )


# --- edits -----------------------------------------------------------------------


def test_an_edit_of_the_default_network_switches_the_pods_on_it() -> None:
    old = profile(default="net-a")
    snap = cluster([old], [on_profile(p, old) for p in pods(3)])
    plan = plan_apply(obj(default="net-b"), snap, NOW)
    assert plan.action == UPDATE and plan.safe
    ns1 = row(plan, "ns1")
    assert (ns1.winner_before, ns1.winner_after, ns1.changing, ns1.will_roll) == (
        "blue",
        "blue",
        3,
        3,
    )
    assert diff(plan, "ns1")[DEFAULT_NETWORK_KEY] == ("ns1/net-a", "ns1/net-b")
    assert PROFILE_KEY not in diff(plan, "ns1")  # the profile stays the same


def test_applying_the_profile_as_it_is_changes_nothing() -> None:
    old = profile(default="net-b")
    snap = cluster([old], [on_profile(p, old) for p in pods(3)])
    plan = plan_apply(obj(default="net-b"), snap, NOW)
    assert [ns.changing for ns in plan.namespaces] == [0, 0] and plan.safe


# --- conflicts --------------------------------------------------------------------


def test_a_profile_that_loses_to_a_higher_priority_one_changes_no_pod() -> None:
    high = profile("zeta", priority=10, default="net-a")
    snap = cluster([high], [on_profile(p, high) for p in pods(3)])
    plan = plan_apply(obj("blue", priority=1), snap, NOW)
    assert plan.safe
    ns1 = row(plan, "ns1")
    assert (ns1.winner_before, ns1.winner_after) == ("zeta", "zeta")
    assert ns1.conflict == CONFLICT_CREATES
    assert ns1.conflict_message == 'loses to "zeta" (priority 10 > 1)'
    assert (ns1.changing, ns1.will_roll) == (0, 0)
    assert plan.governed() == ()


def test_winning_over_a_lower_priority_profile_takes_its_pods() -> None:
    low = profile("alpha", priority=0, default="net-a")
    snap = cluster([low], [on_profile(p, low) for p in pods(2)])
    plan = plan_apply(obj("blue", priority=5, default="net-b"), snap, NOW)
    ns1 = row(plan, "ns1")
    assert (ns1.winner_before, ns1.winner_after, ns1.changing) == ("alpha", "blue", 2)
    assert ns1.conflict_message == 'wins over "alpha" (priority 5 > 0)'
    assert diff(plan, "ns1")[PROFILE_KEY] == ("alpha", "blue")


def test_ties_go_to_the_first_name_as_policy_resolves_them() -> None:
    plan = plan_apply(obj("blue"), cluster([profile("azure")], []), NOW)
    ns1 = row(plan, "ns1")
    assert ns1.winner_after == "azure" and ns1.contenders == ("azure", "blue")
    assert ns1.conflict_message == 'loses to "azure" (same priority 0, ties go to the first name)'


def test_an_edit_that_stops_selecting_the_contested_namespace_ends_the_conflict() -> None:
    other = profile("zeta", priority=9, labels={"team": "a"})
    mine = profile("blue", labels={"team": "a"})
    snap = cluster([mine, other], [], namespaces={"ns1": {"team": "a"}, "ns2": {"team": "b"}})
    plan = plan_apply(obj("blue", labels={"team": "b"}), snap, NOW)
    assert row(plan, "ns1").conflict == CONFLICT_ENDS and not row(plan, "ns1").selected
    assert row(plan, "ns2").conflict == "" and row(plan, "ns2").winner_after == "blue"


# --- deleting -------------------------------------------------------------------


def test_deleting_a_profile_hands_its_pods_back() -> None:
    mine = profile("blue", default="net-b")
    snap = cluster([mine], [on_profile(p, mine) for p in pods(2)])
    plan = plan_delete("blue", snap, NOW)
    assert plan.action == DELETE and plan.safe and plan.profile is None
    ns1 = row(plan, "ns1")
    assert (ns1.winner_before, ns1.winner_after) == ("blue", None)
    assert (ns1.changing, ns1.will_roll, ns1.rollout) == (2, 2, LIVE)
    assert diff(plan, "ns1")[DEFAULT_NETWORK_KEY] == ("ns1/net-b", None)
    assert diff(plan, "ns1")[PROFILE_KEY] == ("blue", None)


def test_deleting_hands_the_namespace_to_the_next_profile() -> None:
    mine = profile("blue", priority=5, default="net-b")
    low = profile("alpha", default="net-a")
    snap = cluster([low, mine], [on_profile(p, mine) for p in pods(2)])
    plan = plan_delete("blue", snap, NOW)
    ns1 = row(plan, "ns1")
    assert (ns1.winner_before, ns1.winner_after, ns1.rollout_by) == ("blue", "alpha", "alpha")
    assert ns1.conflict == CONFLICT_ENDS
    assert diff(plan, "ns1")[DEFAULT_NETWORK_KEY] == ("ns1/net-b", "ns1/net-a")


def test_deleting_a_profile_that_does_not_exist_is_an_error() -> None:
    plan = plan_delete("nope", cluster([], []), NOW)
    assert not plan.safe and plan.errors == ('NetworkProfile "nope" does not exist',)


# --- oldDefault Remove: what reaches the pods by their reported IPs afterwards -----------------


def test_a_remove_onto_a_network_that_routes_the_pod_ip_says_what_reaches_the_pods() -> None:
    plugins = {n: "ptp" for n in NADS}
    snap = cluster([], pods(2), nad_plugins=plugins)
    plan = plan_apply(obj(default="net-b", oldDefault="Remove"), snap, NOW)
    ns1 = row(plan, "ns1")
    assert plan.safe and ns1.remove_problem == ""
    assert "answer through ns1/net-b (ptp)" in ns1.after_remove
    assert "reserved" in ns1.after_remove


def test_a_remove_onto_a_network_that_cannot_carry_the_pod_ip_is_not_safe() -> None:
    plugins = {**{n: "bridge" for n in NADS}, "ns1/net-b": "macvlan"}
    snap = cluster([], pods(2), nad_plugins=plugins)
    plan = plan_apply(obj(default="net-b", oldDefault="Remove"), snap, NOW)
    assert not plan.safe
    assert plan.remove_problems == (
        "ns1: Remove onto ns1/net-b is refused: its network's plugin 'macvlan' cannot carry "
        "the pod IP Kubernetes reports: the node cannot reach a macvlan pod through the parent "
        "link (carriers: bridge, flannel, ptp); the old default would stay",
    )
    assert plan.to_json()["removeProblems"] == list(plan.remove_problems)
    # Keep changes nothing on the old network: safe onto the same NAD.
    assert plan_apply(obj(default="net-b"), snap, NOW).safe


def test_the_json_form_is_plain_data() -> None:
    plan = plan_apply(obj(), cluster([], pods(1)), NOW)
    data = json.loads(json.dumps(plan.to_json()))
    assert data["name"] == "blue" and data["safe"] is True
    assert data["rollout"] == {
        "existingPods": "Live",
        "maxConcurrent": 3,
        "paused": False,
        "maxFailures": 0,
    }
    assert data["namespaces"][0]["pods"] == {
        "running": 1,
        "changing": 1,
        "willRoll": 1,
        "unreadable": 0,
    }


# --- against the local cluster ------------------------------------------------------
# The controller runs as a process, as in production; the stand-in agent
# (tests/support/controller.py) reports on the pods it patches.


def run_plan(capsys: pytest.CaptureFixture[str], kubeconfig: str, *args: str) -> tuple[int, str]:
    """Run `netshift plan ARGS`; (exit code, stdout + stderr). The output is shown under -s."""
    code = main(["plan", *args, f"--kubeconfig={kubeconfig}"])
    out = capsys.readouterr()
    if "json" not in args:
        with capsys.disabled():
            print(f"\n$ netshift plan {' '.join(args)}  # exit {code}\n{out.out}{out.err}")
    return code, out.out + out.err


def plan_json(
    capsys: pytest.CaptureFixture[str], kubeconfig: str, *args: str
) -> tuple[int, dict[str, Any]]:
    code = main(["plan", *args, "-o", "json", f"--kubeconfig={kubeconfig}"])
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, result


def stamps(kube: Kube, namespace: str) -> dict[str, str | None]:
    """Each running pod's rollout-started stamp: a new stamp is one pod the controller rolled."""
    return {n: a.get(ROLLOUT_STARTED_KEY) for n, a in annotations_of(kube, namespace).items()}


def rolled_since(kube: Kube, namespace: str, before: Mapping[str, str | None]) -> set[str]:
    return {n for n, s in stamps(kube, namespace).items() if s != before.get(n)}


def wait_rolled_out(kube: Kube, name: str, pods: int, timeout: float = 120) -> None:
    """Complete for the current generation, over `pods` pods (a status may lag a namespace move)."""

    def done() -> bool:
        progress = read_progress(kube.get(f"{PROFILES}/{name}"))
        return progress.state == DONE and progress.converged == pods

    wait_for(done, timeout, interval=0.3, what=f"NetworkProfile {name} complete")


def write(tmp_path: Path, name: str, **kw: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(rollout_profile(name, **kw)))
    return path


def test_plan_on_the_local_cluster_predicts_what_the_controller_rolls(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kubeconfig = str(cluster.kubeconfig)
    ns = namespace
    labels = {"plan": ns}
    label_namespace(kube, ns, labels)
    for nad in ("net-a", "net-b"):
        create_nad(kube, ns, nad)
    n = 8
    create_pods(kube, ns, n)
    wait_running(kube, ns, n)
    blue, low = f"blue-{ns}", f"low-{ns}"
    controller = ControllerProcess(cluster, tmp_path, "plan", ns)
    stand_in = StandInAgent(kube, [ns], delay=0.2).start()
    try:
        # 1. A new profile: every running pod would change; exit 0.
        manifest = write(tmp_path, blue, labels=labels, default="net-a", priority=10)
        code, table = run_plan(capsys, kubeconfig, "-f", str(manifest))
        assert code == 0 and "safe to apply" in table
        code, plan = plan_json(capsys, kubeconfig, "-f", str(manifest))
        assert code == 0 and plan["action"] == "create" and plan["safe"]
        assert plan["governedNamespaces"] == [ns]
        assert plan["pods"] == {"changing": n, "willRoll": n}
        before = stamps(kube, ns)
        create_profile(kube, blue, labels=labels, default="net-a", priority=10)
        wait_rolled_out(kube, blue, n)
        assert len(rolled_since(kube, ns, before)) == plan["pods"]["willRoll"]

        # 2. An edit that changes the default network: exit 0, the exact diff of a pod.
        manifest = write(tmp_path, blue, labels=labels, default="net-b", priority=10)
        code, plan = plan_json(capsys, kubeconfig, "-f", str(manifest))
        assert code == 0 and plan["action"] == "update"
        row = plan["namespaces"][0]
        assert row["pods"] == {"running": n, "changing": n, "willRoll": n, "unreadable": 0}
        sample = {c["key"]: (c["before"], c["after"]) for c in row["sampleDiff"]}
        assert sample[DEFAULT_NETWORK_KEY] == (f"{ns}/net-a", f"{ns}/net-b")
        before = stamps(kube, ns)
        pod_before = annotations_of(kube, ns)[row["samplePod"].split("/")[1]]
        patch_profile(kube, blue, {"defaultNetwork": "net-b"})
        wait_rolled_out(kube, blue, n)
        assert len(rolled_since(kube, ns, before)) == plan["pods"]["willRoll"]
        pod_after = annotations_of(kube, ns)[row["samplePod"].split("/")[1]]
        for key, (old, new) in sample.items():
            assert (pod_before.get(key), pod_after.get(key)) == (old, new), key

        # 3. A profile that loses to the higher-priority one: exit 0, a conflict, no pod changes.
        manifest = write(tmp_path, low, labels=labels, default="net-a", priority=1)
        code, table = run_plan(capsys, kubeconfig, "-f", str(manifest))
        assert code == 0 and f'loses to "{blue}" (priority 10 > 1)' in table
        code, plan = plan_json(capsys, kubeconfig, "-f", str(manifest))
        assert code == 0 and plan["namespaces"][0]["conflict"] == "creates"
        assert plan["pods"] == {"changing": 0, "willRoll": 0}
        before = stamps(kube, ns)
        create_profile(kube, low, labels=labels, default="net-a", priority=1)
        wait_for(
            lambda: condition(profile_status(kube, low), "Conflict").get("status") == "True",
            60,
            what="the losing profile reports its conflict",
        )
        assert rolled_since(kube, ns, before) == set()

        # 4. An edit referring to a NAD that does not exist: non-zero, the NAD named.
        manifest = write(
            tmp_path,
            blue,
            labels=labels,
            default="net-b",
            priority=10,
            networks=[{"name": "nowhere"}],
        )
        code, table = run_plan(capsys, kubeconfig, "-f", str(manifest))
        assert code == 1 and f"{ns}/nowhere" in table and "NOT SAFE" in table
        code, plan = plan_json(capsys, kubeconfig, "-f", str(manifest))
        assert code == 1 and plan["missingNetworks"] == [f"{ns}/nowhere"]

        # 5. Deleting the winner hands the namespace to the loser: its pods would all change.
        code, table = run_plan(capsys, kubeconfig, "--delete", blue)
        assert code == 0
        code, plan = plan_json(capsys, kubeconfig, "--delete", blue)
        assert plan["namespaces"][0]["winnerAfter"] == low
        before = stamps(kube, ns)
        delete_profile(kube, blue)
        wait_rolled_out(kube, low, n)
        assert len(rolled_since(kube, ns, before)) == plan["pods"]["willRoll"] == n

        # An invalid profile: the policy's message, non-zero.
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(rollout_profile("bad", labels=labels, maxConcurrent=0)))
        code, out = run_plan(capsys, kubeconfig, "-f", str(bad))
        assert code == 1 and "spec.rollout.maxConcurrent: 0 is too small" in out
    finally:
        stand_in.stop()
        controller.stop()
        for name in (blue, low):
            delete_profile(kube, name)
    assert not stand_in.errors


def nad_config(name: str, *, default_route: bool) -> str:
    ipam: dict[str, Any] = {"type": "host-local", "ranges": [[{"subnet": "10.250.9.0/24"}]]}
    if default_route:
        ipam["routes"] = [{"dst": "0.0.0.0/0"}]
    plugin = {"type": "bridge", "bridge": "nstplan", "isGateway": False, "ipam": ipam}
    return json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]})


def create_raw_nad(kube: Kube, namespace: str, name: str, config: str) -> None:
    from netshift.kube import nad_path

    kube.create(
        nad_path(namespace),
        {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name},
            "spec": {"config": config},
        },
    )


@pytest.mark.cluster
def test_plan_refuses_a_default_network_without_a_default_route_and_shows_per_node_networks(
    cluster: LocalCluster,
    kube: Kube,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kubeconfig = str(cluster.kubeconfig)
    ns = namespace
    labels = {"plan": ns}
    label_namespace(kube, ns, labels)
    create_raw_nad(kube, ns, "storage", nad_config("storage", default_route=False))
    create_raw_nad(kube, ns, "nodenet", "")  # defined per node
    create_pods(kube, ns, 2)
    wait_running(kube, ns, 2)
    name = f"gwless-{ns}"

    # The gateway-less `storage` as the default: not safe, exit 1, the reason given.
    manifest = write(tmp_path, name, labels=labels, default="storage")
    code, table = run_plan(capsys, kubeconfig, "-f", str(manifest))
    assert code == 1, table
    assert (
        f"NOT SAFE to apply: {ns}/storage is not a default network (its spec.config gives no "
        "default route: no plugin gives one: no bridge with isDefaultGateway, no 0.0.0.0/0 or "
        "::/0 in ipam.routes); the agent would refuse the switch and keep the old default"
    ) in table
    code, plan = plan_json(capsys, kubeconfig, "-f", str(manifest))
    assert code == 1 and not plan["safe"] and plan["missingNetworks"] == []
    (net,) = plan["networks"]
    assert (net["network"], net["usedAs"], net["definedBy"], net["defaultRoute"]) == (
        f"{ns}/storage",
        "default",
        "spec.config",
        "no",
    )
    # As a secondary network it is fine.
    manifest = write(tmp_path, name, labels=labels, default=None, networks=[{"name": "storage"}])
    code, table = run_plan(capsys, kubeconfig, "-f", str(manifest))
    assert code == 0 and "safe to apply" in table

    # A per-node network: what the config cannot tell without the node's file ...
    manifest = write(tmp_path, name, labels=labels, default="nodenet")
    code, plan = plan_json(capsys, kubeconfig, "-f", str(manifest))
    assert code == 0, plan
    (net,) = plan["networks"]
    assert (net["definedBy"], net["defaultRoute"]) == ("per node", "unknown")
    assert "no node's conf dir is readable from here" in net["why"]
    # ... and with the node's conf dir: its file shown and judged.
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    node_dir = f"--node-conf-dir={cluster.nodes[0].name}={conf_dir}"
    code, table = run_plan(capsys, kubeconfig, "-f", str(manifest), node_dir)
    assert code == 1 and f"no conf file 'nodenet' on node {cluster.nodes[0].name}" in table
    (conf_dir / "30-nodenet.conflist").write_text(nad_config("nodenet", default_route=True))
    code, table = run_plan(capsys, kubeconfig, "-f", str(manifest), node_dir)
    assert code == 0, table
    assert f"per node ({cluster.nodes[0].name}: {conf_dir}/30-nodenet.conflist)" in table
    assert f"{ns}/nodenet on node {cluster.nodes[0].name}, {conf_dir}/30-nodenet.conflist:" in table
    assert "yes: node" in table and '"routes": [{"dst": "0.0.0.0/0"}]' in table
