"""What the agent does when a NetworkAttachmentDefinition is added, changed or deleted (pure).

`pods_naming` says which pods of the node to reconcile at once (those whose
annotations name the NAD, as a secondary network or as their default, and those
the agent holds an attachment of it for); `plan_pod` with the NAD among the
changed networks tries a failed attachment of it again without waiting for its
backoff, and only that one.
"""

from __future__ import annotations

import json

import pytest

from agent.plan import Current, Seen, Wish, networks_named, plan_pod, pods_naming, selection_key
from netshift import keys
from netshift.annotations import NetworkRef, NetworkSelection
from netshift.keys import ATTACHED, DEFAULT, FAILED, INCOMING_DEFAULT, SECONDARY

NS = "team"
NOW = 1_000_000.0
CLUSTER = "netshift-cluster"
BLUE = NetworkRef(NS, "blue")


def wish(networks: str = "", default: str | None = None, namespace: str = NS) -> Wish:
    annotations = {keys.NETWORKS_KEY: networks} if networks else {}
    if default is not None:
        annotations[keys.DEFAULT_NETWORK_KEY] = default
    return Wish(namespace, annotations, CLUSTER)


# -- which pods a NAD event concerns ---------------------------------------------------------

CONCERNS = {
    "named in the comma form": (wish("blue"), (), True),
    "named with an interface": (wish("blue@data0"), (), True),
    "named among others": (wish("red, blue"), (), True),
    "named in the JSON form": (wish(json.dumps([{"name": "blue"}])), (), True),
    "named with its namespace": (wish("team/blue", namespace="other"), (), True),
    "named as the default network": (wish(default="blue"), (), True),
    "named as the default with its namespace": (wish(default="team/blue"), (), True),
    "held only (no longer named)": (wish("red"), (BLUE,), True),
    "gone, held": (None, (BLUE,), True),
    "another network": (wish("red", default="green"), (NetworkRef(NS, "red"),), False),
    "the same name in another namespace": (wish("blue", namespace="other"), (), False),
    "a bare default resolves in the pod's namespace": (
        wish(default="blue", namespace="x"),
        (),
        False,
    ),
    "no networks at all": (wish(), (), False),
    "gone, nothing held": (None, (), False),
    "unreadable networks": (wish("[not json"), (), False),
    "unreadable networks, default named": (wish("[not json", default="blue"), (), True),
    "unreadable default, network named": (wish("blue", default="a/b/c"), (), True),
}


@pytest.mark.parametrize(("pod_wish", "held", "concerned"), CONCERNS.values(), ids=CONCERNS)
def test_a_nad_event_concerns_the_pods_that_name_or_hold_it(
    pod_wish: Wish | None, held: tuple[NetworkRef, ...], concerned: bool
) -> None:
    assert (BLUE in networks_named(pod_wish, held)) is concerned
    wishes = {} if pod_wish is None else {"uid-1": pod_wish}
    assert pods_naming(BLUE, wishes, {"uid-1": held}) == (["uid-1"] if concerned else [])


def test_pods_naming_picks_the_concerned_pods_of_the_node_and_of_the_records() -> None:
    wishes = {
        "a": wish("blue"),
        "b": wish("red"),
        "c": wish(default="blue"),
        "d": wish("red"),
    }
    held = {"d": {BLUE}, "gone": {BLUE}, "gone-red": {NetworkRef(NS, "red")}}
    assert pods_naming(BLUE, wishes, held) == ["a", "c", "d", "gone"]
    assert pods_naming(NetworkRef(NS, "green"), wishes, held) == []


# -- a failed attachment of a changed NAD is tried again at once ------------------------------

ETH0 = Current(NetworkRef("", CLUSTER), "eth0", ATTACHED, DEFAULT)


def failed_secondary(name: str, interface: str) -> Current:
    sel = NetworkSelection(name=name, interface=interface)
    return Current(
        NetworkRef(NS, name), interface, FAILED, SECONDARY, key=selection_key(sel),
        attempts=6, retry_at=NOW + 250, message="NetworkAttachmentDefinition team/blue not found",
    )  # fmt: skip


def test_a_failed_secondary_of_a_changed_nad_is_attached_without_waiting() -> None:
    failed = failed_secondary("blue", "data0")
    seen = Seen([ETH0, failed], links=["eth0"])
    waiting = plan_pod(wish("blue@data0"), seen, NOW)
    assert waiting.attach == [] and waiting.waiting == [failed] and waiting.retry_in == 250
    p = plan_pod(wish("blue@data0"), seen, NOW, changed={BLUE})
    assert [a.want.interface for a in p.attach] == ["data0"] and p.waiting == []
    # Its attempts count on: a NAD still wrong backs off further.
    assert (p.attach[0].attempt, p.attach[0].retry_in) == (7, 64.0)


def test_only_the_attachments_of_the_changed_nad_skip_their_backoff() -> None:
    blue, red = failed_secondary("blue", "data0"), failed_secondary("red", "data1")
    p = plan_pod(
        wish("blue@data0, red@data1"), Seen([ETH0, blue, red], links=["eth0"]), NOW, {BLUE}
    )
    assert [a.want.interface for a in p.attach] == ["data0"]
    assert p.waiting == [red] and p.retry_in == 250


def test_a_failed_incoming_default_of_a_changed_nad_is_switched_to_without_waiting() -> None:
    failed = Current(BLUE, "net1", FAILED, INCOMING_DEFAULT, attempts=3, retry_at=NOW + 60)
    seen = Seen([ETH0, failed], links=["eth0"])
    assert plan_pod(wish(default="blue"), seen, NOW).switch is None
    p = plan_pod(wish(default="blue"), seen, NOW, changed={BLUE})
    assert p.switch is not None and p.switch.interface == "net1" and p.switch.attach is not None
    assert p.switch.attach.attempt == 4
    other = plan_pod(wish(default="blue"), seen, NOW, changed={NetworkRef(NS, "red")})
    assert other.switch is None and other.waiting == [failed]
