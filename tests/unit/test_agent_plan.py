"""What the agent decides for a pod: the planner's table, one test per decision (pure: no root, no cluster).

Each test gives `plan_pod` a wish (the pod's annotations) and what is there
(the agent's records as `Current`, the pod's network-status, the links in its
netns) and reads the plan: adopt, forget, detach, attach, switch, drain, wait.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.plan import (
    MAX_BACKOFF,
    SETTLE_SECONDS,
    SOURCE_TABLE_BASE,
    UNSETTLED_RECHECK,
    Current,
    EarlierSwitch,
    Plan,
    Retry,
    Seen,
    Wish,
    backoff,
    next_requeue,
    plan_pod,
    selection_key,
)
from netshift import keys
from netshift.annotations import NetworkRef, NetworkSelection, NetworkStatusEntry
from netshift.keys import (
    ATTACHED,
    ATTACHING,
    DEFAULT,
    DETACHING,
    FAILED,
    INCOMING_DEFAULT,
    PREVIOUS_DEFAULT,
    RETIRED_DEFAULT,
    SECONDARY,
)

NS = "team"
NOW = 1_000_000.0
CLUSTER = "netshift-cluster"


def ref(name: str) -> NetworkRef:
    return NetworkRef(NS, name)


def key(name: str, interface: str | None = None, **extra: object) -> str:
    return selection_key(NetworkSelection(name=name, interface=interface, **extra))  # type: ignore[arg-type]


def secondary(name: str, interface: str, state: str = ATTACHED, **fields: object) -> Current:
    auto = interface.startswith("net")
    fields.setdefault("key", key(name, None if auto else interface))
    return Current(ref(name), interface, state, SECONDARY, auto, **fields)  # type: ignore[arg-type]


ETH0 = Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, DEFAULT)


def plan(
    networks: str = "",
    current: Sequence[Current] = (ETH0,),
    *,
    default: str | None = None,
    policy: Mapping[str, object] | None = None,
    status: Sequence[NetworkStatusEntry] = (),
    links: Sequence[str] | None = None,
    switches: Sequence[EarlierSwitch] = (),
    cluster: str | None = CLUSTER,
    now: float = NOW,
    pod_ips: Sequence[str] = (),
) -> Plan:
    annotations = {keys.NETWORKS_KEY: networks} if networks else {}
    if default is not None:
        annotations[keys.DEFAULT_NETWORK_KEY] = default
    if policy is not None:
        annotations[keys.SWITCH_POLICY_KEY] = json.dumps(policy)
    if links is None:
        links = [c.interface for c in current] + [e.interface or "" for e in status]
    seen = Seen(current, status, links, switches, pod_ips=frozenset(pod_ips))
    return plan_pod(Wish(NS, annotations, cluster), seen, now)


def attached_names(p: Plan) -> list[str]:
    return [a.want.interface for a in p.attach]


def detached_names(p: Plan) -> list[str]:
    return [d.current.interface for d in p.detach]


# -- secondary networks --------------------------------------------------------------------


def test_a_wanted_network_that_is_not_there_is_attached() -> None:
    p = plan("blue@data0")
    assert attached_names(p) == ["data0"] and p.detach == [] and p.switch is None
    assert p.attach[0].want.ref == ref("blue") and p.attach[0].attempt == 1


def test_an_unnamed_network_gets_the_lowest_free_netn() -> None:
    p = plan("red, blue", [ETH0, secondary("green", "net1")])
    assert attached_names(p) == ["net2", "net3"] and detached_names(p) == ["net1"]


def test_an_attached_network_that_is_still_wanted_is_left_alone() -> None:
    p = plan("blue@data0", [ETH0, secondary("blue", "data0")])
    assert p.attach == [] and p.detach == [] and p.retry_in is None


def test_a_network_no_longer_wanted_is_detached() -> None:
    p = plan("", [ETH0, secondary("blue", "data0")])
    assert detached_names(p) == ["data0"] and p.detach[0].why == "unwanted" and p.attach == []


def test_swap_behind_one_name_detaches_first() -> None:
    p = plan("green@data0", [ETH0, secondary("blue", "data0")])
    assert detached_names(p) == ["data0"] and p.detach[0].why == "replaced"
    assert attached_names(p) == ["data0"] and p.attach[0].want.ref == ref("green")


def test_other_ips_behind_one_name_replug_it() -> None:
    p = plan(
        json.dumps([{"name": "blue", "interface": "data0", "ips": ["10.1.0.9/24"]}]),
        [ETH0, secondary("blue", "data0")],
    )
    assert detached_names(p) == ["data0"] and attached_names(p) == ["data0"]


def test_an_attach_cut_short_by_a_crash_is_detached_and_attached_again() -> None:
    p = plan("blue@data0", [ETH0, secondary("blue", "data0", ATTACHING)])
    assert detached_names(p) == ["data0"] and attached_names(p) == ["data0"]


def test_removing_an_unnamed_network_leaves_the_other_its_automatic_name() -> None:
    p = plan("blue", [ETH0, secondary("red", "net1"), secondary("blue", "net2")])
    assert detached_names(p) == ["net1"] and p.attach == []


def test_failed_secondary_waits_for_its_backoff() -> None:
    failed = secondary("bad", "bad0", FAILED, attempts=2, retry_at=NOW + 2)
    p = plan("bad@bad0", [ETH0, failed])
    assert p.attach == [] and p.detach == [] and p.waiting == [failed] and p.retry_in == 2


def test_failed_secondary_is_retried_when_due_and_its_attempts_count_on() -> None:
    failed = secondary("bad", "bad0", FAILED, attempts=2, retry_at=NOW)
    p = plan("bad@bad0", [ETH0, failed])
    assert attached_names(p) == ["bad0"]
    assert (p.attach[0].attempt, p.attach[0].retry_in) == (3, 4.0)


def test_a_failed_attachment_replaced_by_another_network_is_attached_at_once() -> None:
    failed = secondary("bad", "data0", FAILED, attempts=3, retry_at=NOW + 60)
    p = plan("blue@data0", [ETH0, failed])
    assert detached_names(p) == ["data0"] and attached_names(p) == ["data0"]


def test_a_detach_that_failed_is_retried_with_the_next_attempt() -> None:
    stuck = secondary("blue", "data0", DETACHING, attempts=2, message="detach failed: boom")
    p = plan("", [ETH0, stuck])
    assert detached_names(p) == ["data0"] and (p.detach[0].attempt, p.detach[0].retry_in) == (3, 4)


def test_backoff_doubles_from_one_second_up_to_a_cap() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 16]
    assert backoff(30) == MAX_BACKOFF


def test_the_retry_policy_sets_the_base_and_the_cap_of_the_backoff() -> None:
    retry = Retry(base=10, cap=60)
    assert [retry.after(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert retry.after(1000) == 60
    failed = secondary("bad", "bad0", FAILED, attempts=2, retry_at=NOW)
    wish = Wish(NS, {keys.NETWORKS_KEY: "bad@bad0"}, CLUSTER)
    p = plan_pod(wish, Seen([ETH0, failed], links=["eth0"]), NOW, retry=retry)
    assert (p.attach[0].attempt, p.attach[0].retry_in) == (3, 40)
    stuck = secondary("blue", "data0", DETACHING, attempts=1, message="detach failed: boom")
    p = plan_pod(
        Wish(NS, {}, CLUSTER), Seen([ETH0, stuck], links=["eth0", "data0"]), NOW, retry=retry
    )
    assert (p.detach[0].attempt, p.detach[0].retry_in) == (2, 20)
    for base, cap in ((0, 10), (-1, 10), (20, 10)):
        with pytest.raises(ValueError, match="the base must be above 0 and at most the maximum"):
            Retry(base, cap)


def test_a_malformed_annotation_plans_nothing_but_bookkeeping() -> None:
    vanished = secondary("blue", "data0")
    p = plan("bad@@", [ETH0, vanished, secondary("red", "data1")], links=["eth0", "data1"])
    assert p.problem and p.attach == [] and p.switch is None
    assert [(d.current.interface, d.why) for d in p.detach] == [("data0", "vanished")]
    assert next_requeue(p, [], NOW) is None


# -- what others attached at creation, and what vanished -------------------------------------


def test_creation_time_attachments_are_adopted_with_their_roles() -> None:
    status = [
        NetworkStatusEntry(name=CLUSTER, interface="eth0", default=True),
        NetworkStatusEntry(name=f"{NS}/blue", interface="net1"),
        NetworkStatusEntry(name=f"{NS}/red", interface="data0"),
    ]
    p = plan("blue, red@data0", [], status=status)
    assert [(a.interface, a.default, a.auto_named) for a in p.adopt] == [
        ("eth0", True, False),
        ("net1", False, True),
        ("data0", False, False),
    ]
    assert p.attach == [] and p.detach == [] and p.switch is None  # not re-plugged


def test_a_network_status_entry_without_its_link_is_forgotten() -> None:
    status = [NetworkStatusEntry(name=f"{NS}/blue", interface="net1")]
    p = plan("", [ETH0], status=status, links=["eth0"])
    assert p.forget == ["net1"] and p.adopt == []


def test_a_vanished_attachment_is_released_and_plugged_again() -> None:
    p = plan("blue@data0", [ETH0, secondary("blue", "data0")], links=["eth0"])
    assert [(d.current.interface, d.why) for d in p.detach] == [("data0", "vanished")]
    assert attached_names(p) == ["data0"]


def test_a_vanished_attachment_no_longer_wanted_is_only_released() -> None:
    p = plan("", [ETH0, secondary("blue", "data0")], links=["eth0"])
    assert [(d.current.interface, d.why) for d in p.detach] == [("data0", "vanished")]
    assert p.attach == []


# -- the default network -----------------------------------------------------------------------


def test_no_default_wish_and_no_known_cluster_network_leaves_the_default_alone() -> None:
    p = plan("", [Current(ref("old"), "eth0", ATTACHED, DEFAULT)], cluster=None)
    assert p.switch is None and p.detach == []


def test_the_default_already_there_is_not_switched() -> None:
    assert plan("").switch is None
    assert (
        plan("", [Current(ref("fast"), "eth0", ATTACHED, DEFAULT)], default="fast").switch is None
    )


def test_a_new_default_is_attached_on_the_next_free_name_then_switched() -> None:
    p = plan("blue", default="fast")
    assert attached_names(p) == ["net1"]
    sw = p.switch
    assert sw is not None and sw.target == ref("fast") and sw.interface == "net2"
    assert sw.attach is not None and sw.attach.role == INCOMING_DEFAULT and sw.attach.attempt == 1
    assert sw.old == ETH0 and sw.table == SOURCE_TABLE_BASE and sw.drain_until is None


def test_switching_back_reuses_a_kept_previous_default() -> None:
    old = Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, PREVIOUS_DEFAULT)
    now = Current(ref("fast"), "net1", ATTACHED, DEFAULT)
    p = plan("", [old, now], switches=[EarlierSwitch("eth0", 1000, ("10.0.0.1",))])
    sw = p.switch
    assert sw is not None and sw.interface == "eth0" and sw.attach is None and sw.old == now
    assert sw.fallback_gateways == ("10.0.0.1",)  # eth0's result may name no gateway
    assert sw.table == 1001  # net1 gets a table of its own


def test_a_new_add_for_the_default_gets_no_fallback_its_result_alone_gives_the_routes() -> None:
    # net1 carried a default before (an old switch record names it); the ADD is new now.
    p = plan("", default="fast", switches=[EarlierSwitch("net1", 1000, ("10.0.0.1",))])
    sw = p.switch
    assert sw is not None and sw.interface == "net1" and sw.attach is not None
    assert sw.fallback_gateways == ()


def test_a_switch_cut_short_after_its_attach_reuses_the_incoming_default() -> None:
    incoming = Current(ref("fast"), "net1", ATTACHED, INCOMING_DEFAULT)
    p = plan("", [ETH0, incoming], default="fast")
    assert p.switch is not None and p.switch.interface == "net1" and p.switch.attach is None
    assert p.detach == []


def test_failed_incoming_default_waits_for_its_backoff() -> None:
    failed = Current(ref("broken"), "net1", FAILED, INCOMING_DEFAULT, attempts=3, retry_at=NOW + 60)
    p = plan("", [ETH0, failed], default="broken")
    assert p.switch is None and p.detach == [] and p.attach == []
    assert p.waiting == [failed] and p.retry_in == 60


def test_failed_incoming_default_is_retried_on_its_own_name_when_due() -> None:
    failed = Current(ref("broken"), "net1", FAILED, INCOMING_DEFAULT, attempts=3, retry_at=NOW)
    p = plan("", [ETH0, failed], default="broken")
    sw = p.switch
    assert sw is not None and sw.interface == "net1" and p.detach == []
    assert sw.attach is not None and (sw.attach.attempt, sw.attach.retry_in) == (4, 8.0)


def test_an_incoming_default_no_longer_wanted_is_detached() -> None:
    failed = Current(ref("broken"), "net1", FAILED, INCOMING_DEFAULT, attempts=3, retry_at=NOW + 60)
    p = plan("", [ETH0, failed])
    assert p.switch is None and detached_names(p) == ["net1"]


def test_an_incoming_default_of_another_network_is_detached_and_the_new_one_attached() -> None:
    incoming = Current(ref("fast"), "net1", ATTACHED, INCOMING_DEFAULT)
    p = plan("", [ETH0, incoming], default="faster")
    assert detached_names(p) == ["net1"]
    assert p.switch is not None and p.switch.interface == "net2" and p.switch.attach is not None


def test_the_same_old_interface_keeps_its_source_table() -> None:
    p = plan(
        "", default="fast", switches=[EarlierSwitch("net3", 1000), EarlierSwitch("eth0", 1001)]
    )
    assert p.switch is not None and p.switch.table == 1001


def test_a_new_old_interface_gets_the_lowest_unused_table() -> None:
    p = plan(
        "", default="fast", switches=[EarlierSwitch("net3", 1000), EarlierSwitch("net4", 1002)]
    )
    assert p.switch is not None and p.switch.table == 1001


def test_remove_policy_drains_the_old_default_after_drain_seconds() -> None:
    p = plan("", default="fast", policy={"oldDefault": "Remove", "drainSeconds": 30})
    assert p.switch is not None and p.switch.drain_until == NOW + 30
    assert p.switch.policy.old_default == "Remove"


def test_keep_policy_keeps_the_old_default() -> None:
    p = plan("", default="fast", policy={"oldDefault": "Keep"})
    assert p.switch is not None and p.switch.drain_until is None


def test_a_draining_old_default_waits_for_its_drain() -> None:
    old = Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, PREVIOUS_DEFAULT, drain_until=NOW + 5)
    p = plan("", [old, Current(ref("fast"), "net1", ATTACHED, DEFAULT)], default="fast")
    assert p.drain == [] and p.retry_in == 5


def test_an_old_default_whose_drain_is_over_is_removed() -> None:
    old = Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, PREVIOUS_DEFAULT, drain_until=NOW)
    p = plan("", [old, Current(ref("fast"), "net1", ATTACHED, DEFAULT)], default="fast")
    assert [(d.current.interface, d.why) for d in p.drain] == [("eth0", "drained")]


def test_a_draining_old_default_switched_back_to_is_reused_not_removed() -> None:
    old = Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, PREVIOUS_DEFAULT, drain_until=NOW)
    p = plan("", [old, Current(ref("fast"), "net1", ATTACHED, DEFAULT)])
    assert p.drain == [] and p.switch is not None and p.switch.interface == "eth0"


# -- Remove of an old default whose addresses Kubernetes reports (netshift.podip) ----------------

POD_IP = "10.244.0.7"
OLD = Current(
    NetworkRef("", CLUSTER), "eth0", ATTACHED, PREVIOUS_DEFAULT, drain_until=NOW, ips=(POD_IP,)
)


def new_default(plugin: str = "ptp", ips: tuple[str, ...] = ("10.250.0.3",)) -> Current:
    return Current(ref("fast"), "net1", ATTACHED, DEFAULT, ips=ips, plugin=plugin)


def test_a_drained_old_default_holding_the_reported_pod_ip_is_retired_not_released() -> None:
    for plugin in ("ptp", "bridge"):
        p = plan("", [OLD, new_default(plugin)], default="fast", pod_ips=[POD_IP])
        assert p.drain == [] and p.refuse == [] and p.detach == []
        assert [(r.current.interface, r.onto, r.addresses) for r in p.retire] == [
            ("eth0", "net1", (POD_IP,))
        ]


def test_a_drained_old_default_whose_addresses_are_not_reported_is_released_at_once() -> None:
    p = plan("", [OLD, new_default()], default="fast", pod_ips=["10.250.9.9"])
    assert [(d.current.interface, d.why) for d in p.drain] == [("eth0", "drained")]
    assert p.retire == [] and p.refuse == []


def test_a_remove_onto_a_network_that_cannot_carry_the_pod_ip_keeps_the_old_default() -> None:
    for plugin in ("macvlan", "ipvlan", "calico", "somethingnew"):
        p = plan("", [OLD, new_default(plugin)], default="fast", pod_ips=[POD_IP])
        assert p.drain == [] and p.retire == [] and p.detach == []
        (refused,) = p.refuse
        assert refused.current.interface == "eth0" and repr(plugin) in refused.why, refused.why


def test_a_remove_onto_a_network_without_the_pod_ips_family_is_refused() -> None:
    old = replace(OLD, ips=(POD_IP, "fd00::7"))
    p = plan("", [old, new_default()], default="fast", pod_ips=[POD_IP, "fd00::7"])
    (refused,) = p.refuse
    assert "no IPv6 address" in refused.why and "fd00::7" in refused.why


def test_a_remove_onto_a_network_the_node_does_not_route_to_is_refused() -> None:
    old, new = OLD, new_default("bridge")
    links = ["eth0", "net1"]
    seen = Seen([old, new], links=links, pod_ips={POD_IP}, node_reaches=set())
    p = plan_pod(Wish(NS, {keys.DEFAULT_NETWORK_KEY: f"{NS}/fast"}, CLUSTER), seen, NOW)
    (refused,) = p.refuse
    assert "no route to the pod's address 10.250.0.3" in refused.why and p.retire == []
    seen = replace(seen, node_reaches={"10.250.0.3"})
    p = plan_pod(Wish(NS, {keys.DEFAULT_NETWORK_KEY: f"{NS}/fast"}, CLUSTER), seen, NOW)
    assert [r.current.interface for r in p.retire] == ["eth0"] and p.refuse == []


def test_a_remove_waits_while_the_nodes_link_to_the_new_default_cannot_solicit() -> None:
    old = replace(OLD, ips=(POD_IP, "fd00::7"))
    new = replace(new_default("bridge"), ips=("10.250.0.3", "fd00:1::3"))
    both = {"10.250.0.3", "fd00:1::3"}
    seen = Seen([old, new], links=["eth0", "net1"], pod_ips={POD_IP, "fd00::7"}, node_reaches=both)
    wish = Wish(NS, {keys.DEFAULT_NETWORK_KEY: f"{NS}/fast"}, CLUSTER)
    p = plan_pod(wish, replace(seen, node_soliciting={"fd00:1::3"}), NOW)
    assert p.retire == [] and p.drain == [] and p.refuse == [] and p.detach == []
    assert p.retry_in is not None and p.retry_in < 1
    p = plan_pod(wish, seen, NOW)
    assert [(r.current.interface, sorted(r.addresses)) for r in p.retire] == [
        ("eth0", sorted([POD_IP, "fd00::7"]))
    ]


def test_a_retirement_that_failed_backs_off() -> None:
    retired = replace(OLD, role=RETIRED_DEFAULT, drain_until=None, retry_at=NOW + 4)
    p = plan("", [retired, new_default()], default="fast", pod_ips=[POD_IP])
    assert p.retire == [] and p.retry_in == 4


def test_a_retired_default_is_never_taken_for_vanished_nor_re_plugged() -> None:
    retired = replace(OLD, role=RETIRED_DEFAULT, drain_until=None)
    p = plan("", [retired, new_default()], default="fast", links=["net1"], pod_ips=[POD_IP])
    assert p.detach == [] and p.attach == [] and p.drain == [] and p.switch is None
    assert p.retire == []
    assert [(c.current.interface, c.onto, c.addresses) for c in p.carry] == [
        ("eth0", "net1", (POD_IP,))
    ]


def test_a_retirement_cut_short_while_its_interface_is_there_is_finished() -> None:
    retired = replace(OLD, role=RETIRED_DEFAULT, drain_until=None)
    p = plan("", [retired, new_default()], default="fast", pod_ips=[POD_IP])
    assert [(r.current.interface, r.onto) for r in p.retire] == [("eth0", "net1")]
    assert p.carry == [] and p.retry_in is not None


def test_a_retired_defaults_address_stays_on_its_carrier_until_that_goes() -> None:
    retired = replace(OLD, role=RETIRED_DEFAULT, drain_until=None, carried_on="net1")
    # A switch away from net1: net1 keeps carrying it (with its own source rules).
    p = plan("", [retired, new_default()], default="other", links=["net1"], pod_ips=[POD_IP])
    assert p.switch is not None and p.switch.interface == "net2"
    assert [(c.onto, c.moving) for c in p.carry] == [("net1", False)]
    # net1 drained later: the address moves to the default first.
    draining = replace(new_default(), role=PREVIOUS_DEFAULT, drain_until=NOW)
    now_default = Current(ref("other"), "net2", ATTACHED, DEFAULT, ips=("10.9.0.2",), plugin="ptp")
    links = ["net1", "net2"]
    p = plan("", [retired, draining, now_default], default="other", links=links, pod_ips=[POD_IP])
    assert [d.current.interface for d in p.drain] == ["net1"]
    assert [(c.onto, c.moving) for c in p.carry] == [("net2", True)]


def test_a_retired_default_of_a_replaced_sandbox_is_released() -> None:
    retired = replace(OLD, role=RETIRED_DEFAULT, drain_until=None, sandbox="old", netns="/x")
    seen = Seen([retired], links=["eth0"], sandbox="new", netns="/y", pod_ips={"10.244.0.9"})
    p = plan_pod(Wish(NS, {}, CLUSTER), seen, NOW)
    assert [(d.current.interface, d.why) for d in p.release] == [("eth0", "recreated")]


# -- when to look again --------------------------------------------------------------------------


def test_the_pod_is_looked_at_again_when_the_soonest_retry_or_drain_is_due() -> None:
    after = [
        secondary("bad", "bad0", FAILED, retry_at=NOW + 4),
        secondary("blue", "data0", DETACHING, message="detach failed", retry_at=NOW + 3),
        Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, PREVIOUS_DEFAULT, drain_until=NOW + 7),
    ]
    assert next_requeue(Plan(), after, NOW) == 3
    assert next_requeue(Plan(retry_in=1), after, NOW) == 1
    assert next_requeue(Plan(), [secondary("bad", "bad0", FAILED, retry_at=NOW - 9)], NOW) == 0.5
    assert next_requeue(Plan(), [ETH0], NOW) is None


# -- properties over many wishes and states -------------------------------------------------------

NAMES = ["red", "blue", "green"]
IFNAMES = ["data0", "data1", "net1", "net2", "net3"]


@st.composite
def wishes(draw: st.DrawFn) -> str:
    picked = draw(
        st.lists(
            st.tuples(st.sampled_from(NAMES), st.sampled_from([None, "data0", "data1"])),
            max_size=4,
        )
    )
    return ", ".join(f"{n}@{i}" if i else n for n, i in picked)


@st.composite
def currents(draw: st.DrawFn) -> list[Current]:
    names = draw(st.lists(st.sampled_from(IFNAMES), unique=True, max_size=4))
    out = [ETH0]
    for interface in names:
        state = draw(st.sampled_from([ATTACHED, ATTACHED, FAILED, ATTACHING, DETACHING]))
        retry_at = NOW + draw(st.sampled_from([-1.0, 0.0, 5.0]))
        out.append(secondary(draw(st.sampled_from(NAMES)), interface, state, retry_at=retry_at))
    return out


@settings(max_examples=300, deadline=None)
@given(wishes(), currents(), st.sets(st.sampled_from(IFNAMES)))
def test_the_plan_never_attaches_a_name_twice_nor_a_reserved_one(
    networks: str, current: list[Current], gone: set[str]
) -> None:
    links = ["eth0"] + [c.interface for c in current if c.interface not in gone]
    p = plan(networks, current, links=links)
    names = attached_names(p) + ([p.switch.interface] if p.switch and p.switch.attach else [])
    assert len(names) == len(set(names))
    assert not {"eth0", "lo"} & set(names)
    assert all(a.attempt >= 1 and a.retry_in == backoff(a.attempt) for a in p.attach)
    assert len(detached_names(p)) == len(set(detached_names(p)))  # one DEL per attachment


@settings(max_examples=300, deadline=None)
@given(wishes(), currents())
def test_the_plan_never_detaches_what_is_wanted_and_attached(
    networks: str, current: list[Current]
) -> None:
    p = plan(networks, current)
    if p.problem:
        return
    again = {a.want.interface: a.want for a in p.attach}
    for d in p.detach:
        c = d.current
        if c.state != ATTACHED or c.interface not in again:
            continue
        want = again[c.interface]  # replaced: by another network or other options
        assert want.ref != c.ref or c.key != selection_key(want.selection)


@settings(max_examples=300, deadline=None)
@given(wishes())
def test_once_its_attaches_are_done_the_plan_for_the_same_wish_is_empty(networks: str) -> None:
    first = plan(networks)
    if first.problem:
        return
    done = [ETH0] + [
        Current(
            a.want.ref,
            a.want.interface,
            ATTACHED,
            SECONDARY,
            a.want.auto_named,
            selection_key(a.want.selection),
        )
        for a in first.attach
    ]
    second = plan(networks, done)
    assert second.attach == [] and second.detach == [] and second.switch is None


@st.composite
def default_sides(draw: st.DrawFn) -> list[Current]:
    """A default, and maybe incoming or previous defaults in any state, with their timers."""
    default = Current(ref(draw(st.sampled_from(NAMES))), "eth0", ATTACHED, DEFAULT)
    out = [default]
    for interface in draw(st.lists(st.sampled_from(["net1", "net2", "net3"]), unique=True)):
        role = draw(st.sampled_from([INCOMING_DEFAULT, PREVIOUS_DEFAULT]))
        out.append(
            Current(
                ref(draw(st.sampled_from(NAMES))),
                interface,
                draw(st.sampled_from([ATTACHED, FAILED, ATTACHING])),
                role,
                attempts=draw(st.integers(0, 5)),
                retry_at=NOW + draw(st.sampled_from([-1.0, 0.0, 30.0])),
                drain_until=draw(st.sampled_from([None, NOW - 1, NOW + 5])),
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(default_sides(), st.sampled_from(NAMES))
def test_a_switch_never_detaches_its_target_and_a_failed_default_keeps_its_name(
    current: list[Current], target: str
) -> None:
    p = plan("", current, default=target)
    detached = set(detached_names(p)) | {d.current.interface for d in p.drain}
    failed = [
        c
        for c in current
        if c.role == INCOMING_DEFAULT and c.ref == ref(target) and c.state == FAILED
    ]
    if p.switch is not None:
        assert p.switch.interface not in detached
        assert p.switch.interface not in {c.interface for c in current if c.role == DEFAULT}
        if failed and not any(
            c.ref == ref(target) and c.state == ATTACHED and c.role != DEFAULT for c in current
        ):
            assert p.switch.interface == failed[0].interface
            assert p.switch.attach is not None
            assert p.switch.attach.attempt == failed[0].attempts + 1
    for c in failed:
        if c.interface in {w.interface for w in p.waiting}:
            assert p.switch is None and c.interface not in detached and p.retry_in is not None


# -- a recreated sandbox ---------------------------------------------------------------------

SB_A, NS_A = "a" * 64, "/var/run/netns/cni-a"
SB_B, NS_B = "b" * 64, "/var/run/netns/cni-b"


def in_sandbox(c: Current, sandbox: str, netns: str) -> Current:
    return replace(c, sandbox=sandbox, netns=netns)


def plan_in(
    sandbox: str,
    netns: str,
    networks: str,
    current: Sequence[Current],
    status: Sequence[NetworkStatusEntry] = (),
    links: Sequence[str] = (),
    switches: Sequence[EarlierSwitch] = (),
    default: str | None = None,
) -> Plan:
    annotations = {keys.NETWORKS_KEY: networks} if networks else {}
    if default is not None:
        annotations[keys.DEFAULT_NETWORK_KEY] = default
    seen = Seen(current, status, links, switches, sandbox=sandbox, netns=netns)
    return plan_pod(Wish(NS, annotations, CLUSTER), seen, NOW)


def entry(network: str, interface: str, ip: str, default: bool = False) -> NetworkStatusEntry:
    return NetworkStatusEntry(name=network, interface=interface, ips=[ip], default=default)


def test_what_the_old_sandbox_held_is_released_and_the_new_one_is_rebuilt() -> None:
    """Multus re-created eth0 and net1 in B (its network-status names them); data0 was netshift's."""
    old = [
        in_sandbox(replace_adopted(ETH0), SB_A, NS_A),
        in_sandbox(secondary("red", "net1"), SB_A, NS_A),
        in_sandbox(secondary("blue", "data0"), SB_A, NS_A),
    ]
    status = [
        entry(CLUSTER, "eth0", "10.0.0.9", default=True),
        entry(f"{NS}/red", "net1", "10.1.0.9"),
        entry(f"{NS}/blue", "data0", "10.2.0.5"),  # netshift's entry for A: stale
    ]
    p = plan_in(SB_B, NS_B, "red, blue@data0", old, status, links=["lo", "eth0", "net1"])
    assert p.recreated
    assert [(d.current.interface, d.why) for d in p.release] == [
        ("eth0", "recreated"),
        ("net1", "recreated"),
        ("data0", "recreated"),
    ]
    assert [(a.interface, a.default) for a in p.adopt] == [("eth0", True), ("net1", False)]
    assert p.forget == ["data0"]  # not in B: its entry goes, and it is plugged again
    assert attached_names(p) == ["data0"] and p.detach == [] and p.switch is None


def replace_adopted(c: Current) -> Current:
    return replace(c, adopted=True)


def test_a_recreated_sandbox_voids_the_old_switch_records() -> None:
    """After a switch to net1 in A, B comes with eth0 only: the switch is planned anew."""
    old = [
        in_sandbox(
            Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, PREVIOUS_DEFAULT, adopted=True),
            SB_A,
            NS_A,
        ),
        in_sandbox(Current(ref("green"), "net1", ATTACHED, DEFAULT), SB_A, NS_A),
    ]
    switches = [EarlierSwitch("eth0", SOURCE_TABLE_BASE + 3, ("10.0.0.1",))]
    status = [entry(CLUSTER, "eth0", "10.0.0.9", default=True)]
    p = plan_in(SB_B, NS_B, "", old, status, ["lo", "eth0"], switches, default="green")
    assert [d.current.interface for d in p.release] == ["eth0", "net1"]
    assert p.switch is not None and p.switch.interface == "net1" and p.switch.attach is not None
    assert p.switch.table == SOURCE_TABLE_BASE  # the old tables went with A's netns


def test_records_of_the_same_sandbox_are_not_released() -> None:
    held = [in_sandbox(ETH0, SB_B, NS_B), in_sandbox(secondary("blue", "data0"), SB_B, NS_B)]
    p = plan_in(SB_B, NS_B, "blue@data0", held, links=["eth0", "data0"])
    assert p.release == [] and not p.recreated and p.attach == [] and p.detach == []


def test_records_of_an_older_agent_name_the_pod_uid_and_the_same_netns() -> None:
    """Written with the pod UID as container id: same netns, so the same sandbox; an adopted
    one takes the sandbox's id (its DEL must hit the runtime's reservation)."""
    uid = "6f1c5b7e-2d3a-4c8b-9e0f-1a2b3c4d5e6f"
    held = [
        in_sandbox(replace_adopted(ETH0), uid, NS_B),
        in_sandbox(secondary("blue", "data0"), uid, NS_B),
    ]
    p = plan_in(SB_B, NS_B, "blue@data0", held, links=["eth0", "data0"])
    assert p.release == [] and p.rebind == ["eth0"] and p.attach == []


def test_a_replaced_sandbox_whose_release_is_pending_is_retried() -> None:
    """A DEL in the old sandbox that failed before is tried again (attempts count on)."""
    stuck = in_sandbox(
        secondary("blue", "data0", DETACHING, attempts=2, message="detach failed: x"), SB_A, NS_A
    )
    p = plan_in(SB_B, NS_B, "blue@data0", [in_sandbox(ETH0, SB_B, NS_B), stuck], links=["eth0"])
    assert [(d.current.interface, d.attempt) for d in p.release] == [("data0", 3)]
    assert attached_names(p) == ["data0"]  # planned; the executor holds it while the DEL fails


def test_an_unknown_sandbox_changes_nothing() -> None:
    """Resolvers that cannot name a sandbox (""): the records are taken as they are."""
    held = [in_sandbox(ETH0, SB_A, NS_A)]
    p = plan_in("", NS_B, "", held, links=["eth0"])
    assert p.release == [] and not p.recreated


def test_another_path_of_the_same_namespace_is_the_same_sandbox() -> None:
    """Another resolver's path for the namespace (observe stats both): not a new sandbox."""
    held = [in_sandbox(ETH0, "6f1c5b7e-2d3a-4c8b-9e0f-1a2b3c4d5e6f", "/proc/42/ns/net")]
    seen = Seen(held, (), ["eth0"], sandbox=SB_B, netns=NS_B, netns_aliases=["/proc/42/ns/net"])
    assert plan_pod(Wish(NS, {}, CLUSTER), seen, NOW).release == []
    moved = Seen(held, (), ["eth0"], sandbox=SB_B, netns=NS_B)
    assert [d.why for d in plan_pod(Wish(NS, {}, CLUSTER), moved, NOW).release] == ["recreated"]


def test_entries_with_other_addresses_than_the_live_link_wait_for_the_runtime() -> None:
    """Just after a sandbox appeared, network-status may still be the old sandbox's: what it
    names is neither adopted nor plugged (a wanted data0 would clash with Multus's) until the
    runtime's entries arrive, or until SETTLE_SECONDS passed."""
    old = [in_sandbox(replace_adopted(ETH0), SB_A, NS_A)]
    status = [entry(CLUSTER, "eth0", "10.0.0.9", default=True)]
    live = {"eth0": ["10.0.0.7"], "data0": ["10.2.0.8"]}

    def seen(since: float | None, addresses: dict[str, list[str]]) -> Seen:
        return Seen(old, status, list(addresses), (), SB_B, NS_B, (), addresses, since)

    wish = Wish(NS, {keys.NETWORKS_KEY: "blue@data0"}, CLUSTER)
    p = plan_pod(wish, seen(None, live), NOW)
    assert [d.why for d in p.release] == ["recreated"]  # released at once
    assert p.unsettled == ["eth0"] and p.adopt == [] and p.attach == [] and p.forget == []
    assert p.retry_in == UNSETTLED_RECHECK
    # The runtime's entry arrived: adopted.
    fresh = Seen(
        [], [entry(CLUSTER, "eth0", "10.0.0.7", True)], list(live), (), SB_B, NS_B, (), live, NOW
    )
    p = plan_pod(wish, fresh, NOW)
    assert [a.interface for a in p.adopt] == ["eth0"] and p.unsettled == []
    # Nobody rewrote it: after SETTLE_SECONDS the interface is adopted by its name.
    p = plan_pod(wish, seen(NOW - SETTLE_SECONDS, live), NOW)
    assert [a.interface for a in p.adopt] == ["eth0"] and p.unsettled == []
