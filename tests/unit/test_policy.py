"""NetworkProfile: reading profiles, choosing one per namespace, bringing pods to it."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netshift.annotations import AnnotationError, NetworkSelection, format_networks, parse_networks
from netshift.keys import DEFAULT_NETWORK_KEY, INJECTED_KEY, NETWORKS_KEY, PROFILE_KEY
from netshift.policy import (
    LabelSelector,
    Profile,
    ProfileError,
    Requirement,
    Resolution,
    Rollout,
    apply_profile,
    enforced_violations,
    profile_from_object,
    resolve,
    selected_label,
)

NS = "app"

# --- reading NetworkProfile objects ------------------------------------------------------

FULL_OBJECT: dict[str, Any] = {
    "apiVersion": "netshift.io/v1alpha1",
    "kind": "NetworkProfile",
    "metadata": {"name": "corp", "generation": 4, "uid": "x"},
    "spec": {
        "namespaceSelector": {
            "matchLabels": {"team": "payments", "netshift.io/tier": "gold"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "canary"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        },
        "defaultNetwork": "infra/corp-net",
        "networks": [
            {"name": "storage", "interface": "stor0", "ips": ["10.9.0.0/16"]},
            {"name": "mgmt", "namespace": "infra"},
        ],
        "mode": "Enforce",
        "priority": 10,
        "rollout": {
            "existingPods": "Live",
            "maxConcurrent": 5,
            "paused": True,
            "maxFailures": 2,
            "oldDefault": "Remove",
            "drainSeconds": 30,
        },
    },
    "status": {"namespaceCount": 3},
}


def test_profile_from_object_reads_every_field() -> None:
    profile = profile_from_object(FULL_OBJECT)
    assert profile == Profile(
        name="corp",
        namespace_selector=LabelSelector(
            match_labels=(("netshift.io/tier", "gold"), ("team", "payments")),
            match_expressions=(
                Requirement("env", "In", ("canary", "prod")),
                Requirement("legacy", "DoesNotExist"),
            ),
        ),
        default_network="infra/corp-net",
        networks=(
            NetworkSelection("storage", interface="stor0", ips=("10.9.0.0/16",)),
            NetworkSelection("mgmt", namespace="infra"),
        ),
        mode="Enforce",
        priority=10,
        rollout=Rollout("Live", 5, True, 2, "Remove", 30),
        generation=4,
    )


def test_profile_defaults() -> None:
    profile = profile_from_object({"metadata": {"name": "p"}, "spec": {"namespaceSelector": {}}})
    assert profile == Profile("p", LabelSelector())
    assert (profile.mode, profile.priority, profile.rollout, profile.generation) == (
        "Default",
        0,
        Rollout("Ignore", 1, False, 0, "Keep", 0),
        0,
    )
    assert profile.default_network is None and profile.networks == ()


def test_json_null_means_not_set() -> None:
    obj = {
        "metadata": {"name": "p", "generation": None},
        "spec": {
            "namespaceSelector": {"matchLabels": None, "matchExpressions": None},
            "defaultNetwork": None,
            "networks": None,
            "mode": None,
            "priority": None,
            "rollout": {"maxConcurrent": None},
        },
    }
    assert profile_from_object(obj) == Profile("p", LabelSelector())


def test_a_missing_namespace_selector_selects_nothing() -> None:
    profile = profile_from_object({"metadata": {"name": "p"}, "spec": {}})
    assert profile.namespace_selector.match_nothing
    assert not profile.namespace_selector.matches({})
    assert not profile.namespace_selector.matches({"a": "b"})


def test_an_empty_namespace_selector_selects_everything() -> None:
    profile = profile_from_object({"metadata": {"name": "p"}, "spec": {"namespaceSelector": {}}})
    assert profile.namespace_selector.matches({})
    assert profile.namespace_selector.matches({"a": "b"})


def _with(path: str, value: Any) -> dict[str, Any]:
    """FULL_OBJECT with one field set (value ...) or removed (value is Ellipsis)."""
    obj = copy.deepcopy(FULL_OBJECT)
    *parents, last = path.split(".")
    target: Any = obj
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return obj


PROFILE_ERRORS: list[tuple[Any, list[str]]] = [
    ([], ["NetworkProfile: object: is a JSON list", "expected an object"]),
    (_with("metadata", ...), ["NetworkProfile: metadata: is null"]),
    (_with("metadata.name", ...), ["NetworkProfile: metadata.name: is missing"]),
    (_with("metadata.name", 5), ["metadata.name: is the number 5"]),
    (_with("metadata.generation", "1"), ['"corp": metadata.generation: is the string "1"']),
    (
        _with("apiVersion", "netshift.io/v1"),
        ['apiVersion: is the string "netshift.io/v1"', '"netshift.io/v1alpha1"'],
    ),
    (_with("kind", "Pod"), ['kind: is the string "Pod"', '"NetworkProfile"']),
    (_with("spec", ...), ["spec: is missing"]),
    (_with("spec", "x"), ['spec: is the string "x"', "an object"]),
    (
        _with("spec.nets", []),
        ["spec.nets: is not a known field", '"namespaceSelector"', '"rollout"'],
    ),
    (_with("spec.namespaceSelector", []), ["spec.namespaceSelector: is a JSON list"]),
    (
        _with("spec.namespaceSelector.labels", {}),
        ["spec.namespaceSelector.labels: is not a known field"],
    ),
    (
        _with("spec.namespaceSelector.matchLabels", {"a": 1}),
        ["spec.namespaceSelector.matchLabels.a: is the number 1"],
    ),
    (_with("spec.namespaceSelector.matchLabels", {"a b": "1"}), ["matchLabels.a b", "label key"]),
    (
        _with("spec.namespaceSelector.matchLabels", {"Foo.io/a": "1"}),
        ["prefix that is not a DNS subdomain"],
    ),
    (_with("spec.namespaceSelector.matchLabels", {"a/": "1"}), ['"a/" has no name']),
    (
        _with("spec.namespaceSelector.matchLabels", {"a": "-x"}),
        ["matchLabels.a", "must start and end", "label value"],
    ),
    (_with("spec.namespaceSelector.matchLabels", {"a": "x" * 64}), ["longer than 63 characters"]),
    (
        _with("spec.namespaceSelector.matchExpressions", {}),
        ["matchExpressions: is a JSON object", "list of requirements"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0", "env"),
        ["matchExpressions[0]: is the string"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0.key", ...),
        ["matchExpressions[0].key: is missing"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0.operator", "in"),
        [
            'matchExpressions[0].operator: "in" is not supported',
            '"In", "NotIn", "Exists", "DoesNotExist"',
        ],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0.operator", ...),
        ["matchExpressions[0].operator: is missing"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0.values", []),
        ["matchExpressions[0].values: is empty for operator In"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0.values", "prod"),
        ["matchExpressions[0].values: is the string"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0.values", [1]),
        ["matchExpressions[0].values[0]: is the number 1"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.1.values", ["x"]),
        ["matchExpressions[1].values: is not empty for operator DoesNotExist"],
    ),
    (
        _with("spec.namespaceSelector.matchExpressions.0.extra", 1),
        ["matchExpressions[0].extra: is not a known field"],
    ),
    (_with("spec.defaultNetwork", 5), ["spec.defaultNetwork: is the number 5"]),
    (
        _with("spec.defaultNetwork", "a/b/c"),
        ['spec.defaultNetwork: "a/b/c" contains more than one "/"'],
    ),
    (_with("spec.defaultNetwork", "Corp"), ["spec.defaultNetwork", "uppercase", "DNS-1123 label"]),
    (_with("spec.defaultNetwork", ""), ["spec.defaultNetwork: is empty"]),
    (_with("spec.networks", "storage"), ['spec.networks: is the string "storage"']),
    (
        _with("spec.networks.0.interface", "eth 0"),
        [
            'spec.networks[0].interface (network "storage"): "eth 0" contains whitespace',
            "Linux interface name",
        ],
    ),
    (_with("spec.networks.1", 5), ["spec.networks[1]: is the number 5"]),
    (
        _with("spec.networks.1.vlan", 5),
        ['spec.networks[1].vlan (network "mgmt"): is not a known field'],
    ),
    (
        _with("spec.networks.1.interface", "stor0"),
        ['spec.networks[1].interface (network "mgmt"): "stor0" is already used by element 0'],
    ),
    (_with("spec.networks", [{"name": "a"}] * 65), ["spec.networks: has 65 elements"]),
    (
        _with("spec.mode", "Strict"),
        ['spec.mode: "Strict" is not supported', '"Default", "Enforce"'],
    ),
    (_with("spec.priority", 1.5), ["spec.priority: is the number 1.5", "an integer"]),
    (_with("spec.priority", True), ["spec.priority: is the boolean true"]),
    (_with("spec.rollout", []), ["spec.rollout: is a JSON list"]),
    (
        _with("spec.rollout.existingPods", "Always"),
        ['spec.rollout.existingPods: "Always" is not supported', '"Ignore", "Live"'],
    ),
    (
        _with("spec.rollout.maxConcurrent", 0),
        ["spec.rollout.maxConcurrent: 0 is too small", "at least 1"],
    ),
    (_with("spec.rollout.paused", "yes"), ["spec.rollout.paused: is the string", "true or false"]),
    (
        _with("spec.rollout.maxFailures", -1),
        ["spec.rollout.maxFailures: -1 is too small", "at least 0"],
    ),
    (
        _with("spec.rollout.oldDefault", "Drop"),
        ['spec.rollout.oldDefault: "Drop" is not supported', '"Keep", "Remove"'],
    ),
    (_with("spec.rollout.drainSeconds", -5), ["spec.rollout.drainSeconds: -5 is too small"]),
    (
        _with("spec.rollout.surge", 1),
        ["spec.rollout.surge: is not a known field", '"drainSeconds"'],
    ),
    # netshift's own label follows from the selectors; it cannot be one of them.
    (
        _with("spec.namespaceSelector.matchLabels", {"netshift.io/selected": "true"}),
        ['matchLabels.netshift.io/selected: "netshift.io/selected" is netshift\'s own label'],
    ),
    (
        _with(
            "spec.namespaceSelector.matchExpressions",
            [{"key": "netshift.io/selected", "operator": "DoesNotExist"}],
        ),
        ["matchExpressions[0].key:", "is netshift's own label"],
    ),
]


@pytest.mark.parametrize(("obj", "fragments"), PROFILE_ERRORS)
def test_bad_profiles_are_refused_naming_the_field(obj: Any, fragments: list[str]) -> None:
    with pytest.raises(ProfileError) as caught:
        profile_from_object(obj)
    message = str(caught.value)
    assert message.startswith("NetworkProfile")
    for fragment in fragments:
        assert fragment in message


def test_profile_error_carries_profile_and_field() -> None:
    with pytest.raises(ProfileError) as caught:
        profile_from_object(_with("spec.rollout.maxConcurrent", 0))
    assert (caught.value.profile, caught.value.field) == ("corp", "spec.rollout.maxConcurrent")
    assert str(caught.value) == (
        'NetworkProfile "corp": spec.rollout.maxConcurrent: 0 is too small; '
        "expected an integer of at least 1"
    )


def test_items_without_api_version_and_kind_are_read() -> None:
    obj = copy.deepcopy(FULL_OBJECT)
    del obj["apiVersion"], obj["kind"]
    assert profile_from_object(obj) == profile_from_object(FULL_OBJECT)


# --- label selectors -------------------------------------------------------------------------

SELECTOR_CASES: list[tuple[dict[str, Any], dict[str, str], bool]] = [
    ({}, {}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchLabels": {"a": "1"}}, {}, False),
    ({"matchLabels": {"a": ""}}, {"a": ""}, True),
    (
        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
        {"a": "2"},
        True,
    ),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    # Kubernetes: a missing label is "not in" any set.
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": []}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    (
        {
            "matchLabels": {"kubernetes.io/metadata.name": "shop"},
            "matchExpressions": [{"key": "env", "operator": "Exists"}],
        },
        {"kubernetes.io/metadata.name": "shop"},
        False,
    ),
]


@pytest.mark.parametrize(("selector", "labels", "expected"), SELECTOR_CASES)
def test_namespace_selector_matching(
    selector: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    profile = profile_from_object(
        {"metadata": {"name": "p"}, "spec": {"namespaceSelector": selector}}
    )
    assert profile.namespace_selector.matches(labels) is expected


# --- resolution --------------------------------------------------------------------------------


def _profile(
    name: str, priority: int = 0, labels: Mapping[str, str] | None = None, **kw: Any
) -> Profile:
    selector = LabelSelector(tuple(sorted((labels or {}).items())))
    return Profile(name, selector, priority=priority, **kw)


def test_resolve_picks_the_highest_priority() -> None:
    low, high = _profile("a-low", 1), _profile("z-high", 5)
    assert resolve({}, [low, high]) == Resolution(high, (low,))


def test_resolve_breaks_ties_by_name() -> None:
    b, a, c = _profile("b"), _profile("a"), _profile("c")
    assert resolve({}, [b, c, a]) == Resolution(a, (b, c))


def test_resolve_ignores_profiles_that_do_not_select_the_namespace() -> None:
    shop, other = (
        _profile("shop", labels={"team": "shop"}),
        _profile("other", 9, labels={"team": "x"}),
    )
    nothing = Profile("nothing", LabelSelector(match_nothing=True), priority=99)
    assert resolve({"team": "shop"}, [other, shop, nothing]) == Resolution(shop, ())
    assert resolve({}, [other, shop, nothing]) == Resolution(None, ())
    assert resolve({}, []) == Resolution(None, ())


def test_resolve_orders_losers_by_priority_then_name() -> None:
    profiles = [_profile("d", 1), _profile("c", 3), _profile("b", 1), _profile("a", 3)]
    result = resolve({}, iter(profiles))
    assert result.winner is not None and result.winner.name == "a"
    assert [p.name for p in result.losers] == ["c", "b", "d"]


def test_resolve_explains_why_the_winner_beats_each_loser() -> None:
    a, c, b = _profile("a", 3), _profile("c", 3), _profile("b", 1)
    result = resolve({}, [b, c, a])
    assert [p.name for p in result.ranked] == ["a", "c", "b"]
    assert result.why(c) == "same priority 3, ties go to the first name"
    assert result.why(b) == "priority 3 > 1"
    assert resolve({}, []).ranked == ()


def test_the_selected_label_is_set_exactly_where_some_profile_selects() -> None:
    shop = _profile("shop", labels={"team": "shop"})
    low = _profile("low", -5, labels={"team": "shop"})
    assert selected_label("web", {"team": "shop"}, [shop]) == "true"
    assert selected_label("web", {"team": "shop"}, [low]) == "true"  # a loser is a profile too
    assert selected_label("web", {"team": "other"}, [shop]) is None
    assert selected_label("web", {"team": "shop"}, []) is None
    # netshift's own namespaces and kube-system never carry it, even under a catch-all.
    everything = _profile("all")
    assert selected_label("kube-system", {}, [everything]) is None
    assert selected_label("netshift-system", {}, [everything]) is None
    assert selected_label("mine", {}, [everything], excluded=("mine",)) is None


# --- apply_profile -----------------------------------------------------------------------------


def step(annotations: Mapping[str, str], profile: Profile | None) -> dict[str, str]:
    """The pod's annotations after applying the changes apply_profile asks for."""
    result = dict(annotations)
    for key, value in apply_profile(annotations, NS, profile).items():
        if value is None:
            del result[key]
        else:
            result[key] = value
    return result


def profile(
    name: str = "corp",
    default_network: str | None = None,
    networks: str = "",
    mode: str = "Default",
) -> Profile:
    return Profile(
        name,
        LabelSelector(),
        default_network=default_network,
        networks=tuple(parse_networks(networks)),
        mode=mode,
    )


def record(annotations: Mapping[str, str]) -> Any:
    return json.loads(annotations[INJECTED_KEY])


def test_a_new_pod_gets_the_profiles_networks_and_default() -> None:
    changes = apply_profile(
        {"team": "x"}, NS, profile(default_network="corp-net", networks="storage@stor0, infra/mgmt")
    )
    assert changes == {
        NETWORKS_KEY: "app/storage@stor0, infra/mgmt",
        DEFAULT_NETWORK_KEY: "app/corp-net",
        INJECTED_KEY: json.dumps(
            {
                "profile": "corp",
                "defaultNetwork": "app/corp-net",
                "networks": [
                    {"name": "storage", "namespace": "app", "interface": "stor0"},
                    {"name": "mgmt", "namespace": "infra"},
                ],
            },
            separators=(",", ":"),
        ),
        PROFILE_KEY: "corp",
    }


def test_rich_profile_elements_are_written_in_json_form() -> None:
    rich = profile(
        networks='[{"name": "storage", "ips": ["10.0.0.5/24"], "mac": "02:00:00:00:00:05"}]'
    )
    after = step({}, rich)
    assert json.loads(after[NETWORKS_KEY]) == [
        {"name": "storage", "namespace": "app", "ips": ["10.0.0.5/24"], "mac": "02:00:00:00:00:05"}
    ]


def test_default_mode_keeps_the_pods_own_default_network() -> None:
    after = step({DEFAULT_NETWORK_KEY: "mine"}, profile(default_network="corp-net"))
    assert after[DEFAULT_NETWORK_KEY] == "mine"
    assert record(after)["defaultNetwork"] is None


def test_enforce_mode_replaces_the_pods_default_network() -> None:
    after = step(
        {DEFAULT_NETWORK_KEY: "mine"}, profile(default_network="infra/corp", mode="Enforce")
    )
    assert after[DEFAULT_NETWORK_KEY] == "infra/corp"
    assert record(after)["defaultNetwork"] == "infra/corp"


def test_default_mode_pod_elements_win_over_the_same_identity() -> None:
    pod = {NETWORKS_KEY: '[{"name": "storage", "interface": "stor0", "ips": ["10.0.0.9/24"]}]'}
    after = step(pod, profile(networks="storage@stor0, mgmt"))
    assert parse_networks(after[NETWORKS_KEY]) == [
        NetworkSelection("mgmt", "app"),
        NetworkSelection("storage", interface="stor0", ips=("10.0.0.9/24",)),
    ]
    assert record(after)["networks"] == [{"name": "mgmt", "namespace": "app"}]


def test_enforce_mode_profile_elements_replace_the_same_identity() -> None:
    pod = {
        NETWORKS_KEY: '[{"name": "storage", "interface": "stor0", "ips": ["10.0.0.9/24"]}, {"name": "own"}]'
    }
    after = step(pod, profile(networks="storage@stor0", mode="Enforce"))
    assert after[NETWORKS_KEY] == "app/storage@stor0, own"


@pytest.mark.parametrize(
    ("pod", "prof", "in_default_mode", "in_enforce_mode"),
    [
        ("storage", "storage@stor0", 1, 1),  # the pod's unnamed element is the profile's
        ("storage@stor0", "storage", 1, 1),  # the profile's unnamed element is the pod's
        ("storage", "storage", 1, 1),
        ("app/storage", "storage", 1, 1),  # the same network written two ways
        ("storage@a", "storage@b", 2, 2),  # two interfaces: two attachments
        ("infra/storage", "storage", 2, 2),  # another namespace: another network
        ("storage@x", "storage, storage@x", 2, 2),  # the exact pair is made first
        # Default pairs one to one; Enforce owns every attachment of what it names.
        ("storage, storage@x", "storage@x", 2, 1),
        ("storage@a, storage@b", "storage", 2, 1),
    ],
)
def test_merging_never_duplicates_an_attachment(
    pod: str, prof: str, in_default_mode: int, in_enforce_mode: int
) -> None:
    for mode, count in (("Default", in_default_mode), ("Enforce", in_enforce_mode)):
        after = step({NETWORKS_KEY: pod}, profile(networks=prof, mode=mode))
        merged = parse_networks(after[NETWORKS_KEY])
        assert len(merged) == count, mode


def test_interface_name_clash_default_mode_drops_the_profile_element() -> None:
    after = step({NETWORKS_KEY: "own@data0"}, profile(networks="corp@data0"))
    assert after[NETWORKS_KEY] == "own@data0"
    assert record(after)["networks"] == []


def test_interface_name_clash_enforce_mode_drops_the_pod_element() -> None:
    after = step({NETWORKS_KEY: "own@data0, keep"}, profile(networks="corp@data0", mode="Enforce"))
    assert after[NETWORKS_KEY] == "app/corp@data0, keep"


ROUTE_POD = '[{"name": "own", "default-route": ["10.0.0.1"]}]'
ROUTE_PROFILE = '[{"name": "corp", "default-route": ["10.1.0.1"]}]'


def test_default_route_clash_default_mode_keeps_the_pods_route() -> None:
    after = step({NETWORKS_KEY: ROUTE_POD}, profile(networks=ROUTE_PROFILE))
    assert parse_networks(after[NETWORKS_KEY]) == [
        NetworkSelection("corp", "app"),
        NetworkSelection("own", default_route=("10.0.0.1",)),
    ]


def test_default_route_clash_enforce_mode_keeps_the_profiles_route() -> None:
    after = step({NETWORKS_KEY: ROUTE_POD}, profile(networks=ROUTE_PROFILE, mode="Enforce"))
    assert parse_networks(after[NETWORKS_KEY]) == [
        NetworkSelection("corp", "app", default_route=("10.1.0.1",)),
        NetworkSelection("own"),
    ]


def test_removing_the_profile_takes_back_exactly_what_it_added() -> None:
    pod = {NETWORKS_KEY: "own", DEFAULT_NETWORK_KEY: "x/y", "keep": "me"}
    with_profile = step(
        pod, profile(default_network="corp-net", networks="storage", mode="Enforce")
    )
    assert with_profile[DEFAULT_NETWORK_KEY] == "app/corp-net"
    changes = apply_profile(with_profile, NS, None)
    assert changes == {
        NETWORKS_KEY: "own",
        DEFAULT_NETWORK_KEY: None,
        INJECTED_KEY: None,
        PROFILE_KEY: None,
    }


def test_what_the_user_changed_after_injection_is_theirs() -> None:
    injected = step({}, profile(default_network="corp-net", networks="storage"))
    edited = {
        **injected,
        NETWORKS_KEY: '[{"name": "storage", "namespace": "app", "ips": ["10.0.0.7"]}]',
        DEFAULT_NETWORK_KEY: "app/other",
    }
    assert step(edited, None) == {
        NETWORKS_KEY: '[{"name": "storage", "namespace": "app", "ips": ["10.0.0.7"]}]',
        DEFAULT_NETWORK_KEY: "app/other",
    }


def test_switching_profiles_replaces_the_contribution() -> None:
    a = profile("a", default_network="net-a", networks="side-a")
    b = profile("b", default_network="net-b", networks="side-b")
    after = step(step({NETWORKS_KEY: "own"}, a), b)
    assert after[NETWORKS_KEY] == "app/side-b, own"
    assert after[DEFAULT_NETWORK_KEY] == "app/net-b"
    assert after[PROFILE_KEY] == "b"


def test_nothing_to_do_returns_no_changes() -> None:
    assert apply_profile({}, NS, None) == {}
    assert apply_profile({NETWORKS_KEY: "a ,  b", DEFAULT_NETWORK_KEY: "x"}, NS, None) == {}
    converged = step({NETWORKS_KEY: "own"}, profile(networks="corp"))
    assert apply_profile(converged, NS, profile(networks="corp")) == {}


def test_an_unchanged_list_is_not_rewritten_in_canonical_form() -> None:
    changes = apply_profile({NETWORKS_KEY: " a ,b "}, NS, profile(networks="a"))
    assert NETWORKS_KEY not in changes
    assert changes[PROFILE_KEY] == "corp"


def test_an_empty_networks_list_deletes_the_key() -> None:
    assert apply_profile({NETWORKS_KEY: ""}, NS, None) == {NETWORKS_KEY: None}
    injected = step({}, profile(networks="corp"))
    assert apply_profile(injected, NS, None) == {
        NETWORKS_KEY: None,
        INJECTED_KEY: None,
        PROFILE_KEY: None,
    }


def test_a_malformed_networks_annotation_raises() -> None:
    with pytest.raises(AnnotationError, match="element 1"):
        apply_profile({NETWORKS_KEY: "a,,b"}, NS, profile(networks="corp"))


@pytest.mark.parametrize(
    "damaged", ["{", "[]", '{"networks": "x"}', '{"profile": 5}', '{"networks": [{"name": "A"}]}']
)
def test_a_damaged_record_claims_nothing(damaged: str) -> None:
    pod = {NETWORKS_KEY: "own", INJECTED_KEY: damaged, PROFILE_KEY: "old"}
    after = step(pod, profile(networks="corp"))
    assert after[NETWORKS_KEY] == "app/corp, own"
    assert record(after)["profile"] == "corp"


def test_a_result_too_large_to_read_back_raises() -> None:
    pod = {NETWORKS_KEY: ", ".join(f"own-{i}" for i in range(40))}
    big = profile(networks=", ".join(f"corp-{i}" for i in range(40)))
    with pytest.raises(AnnotationError, match="elements"):
        apply_profile(pod, NS, big)


# --- apply_profile properties ------------------------------------------------------------------


def _valid(selections: list[NetworkSelection]) -> list[NetworkSelection]:
    """One default-route carrier and unique interface names, as the grammar demands."""
    result: list[NetworkSelection] = []
    for sel in selections:
        if sel.interface and sel.interface in {s.interface for s in result}:
            sel = replace(sel, interface=None)
        if sel.default_route and any(s.default_route for s in result):
            sel = replace(sel, default_route=())
        result.append(sel)
    return result


def _elements(names: list[str], interfaces: list[str]) -> st.SearchStrategy[list[NetworkSelection]]:
    # Few names and interfaces, so that pod and profile elements often meet.
    element = st.builds(
        NetworkSelection,
        name=st.sampled_from(names),
        namespace=st.sampled_from([None, NS, "infra"]),
        interface=st.none() | st.sampled_from(interfaces),
        ips=st.sampled_from([(), ("10.0.0.5/24",)]),
        default_route=st.sampled_from([(), (), ("10.0.0.1",)]),
    )
    return st.lists(element, max_size=4).map(_valid)


def _profiles(
    names: list[str], interfaces: list[str], modes: list[str]
) -> st.SearchStrategy[Profile]:
    return st.builds(
        Profile,
        name=st.sampled_from(["a", "b", "c"]),
        namespace_selector=st.just(LabelSelector()),
        default_network=st.none() | st.sampled_from(["d1", "infra/d2", "app/d1", "u"]),
        networks=_elements(names, interfaces).map(tuple),
        mode=st.sampled_from(modes),
    )


def _pods(
    names: list[str], interfaces: list[str], defaults: list[str]
) -> st.SearchStrategy[dict[str, str]]:
    def build(elements: list[NetworkSelection], default: str | None) -> dict[str, str]:
        pod = {"unrelated": "x"}
        if elements:
            pod[NETWORKS_KEY] = format_networks(elements)
        if default is not None:
            pod[DEFAULT_NETWORK_KEY] = default
        return pod

    default = st.none() | st.sampled_from(defaults) if defaults else st.none()
    return st.builds(build, _elements(names, interfaces), default)


NAMES = ["a", "b", "c"]
INTERFACES = ["x", "y", "net1"]
ANY_PODS = _pods(NAMES, INTERFACES, ["u", "app/d1", "infra/d2"])
ANY_PROFILES = _profiles(NAMES, INTERFACES, ["Default", "Enforce"])
DEFAULT_PROFILES = _profiles(NAMES, INTERFACES, ["Default"])


def _meaning(annotations: Mapping[str, str]) -> dict[str, Any]:
    """Annotations with the networks list parsed, so that equal lists compare equal."""
    result: dict[str, Any] = dict(annotations)
    if NETWORKS_KEY in result:
        result[NETWORKS_KEY] = parse_networks(result[NETWORKS_KEY])
    return result


@given(ANY_PODS, ANY_PROFILES)
def test_apply_profile_is_idempotent(pod: dict[str, str], prof: Profile) -> None:
    changes = apply_profile(pod, NS, prof)
    for key, value in changes.items():
        assert pod.get(key) != value and (value is not None or key in pod), "not a real change"
    after = step(pod, prof)
    assert apply_profile(after, NS, prof) == {}
    assert enforced_violations(after, NS, prof) == []


@given(ANY_PODS, ANY_PROFILES, DEFAULT_PROFILES)
def test_switching_a_to_b_to_a_gives_back_a(pod: dict[str, str], a: Profile, b: Profile) -> None:
    with_a = step(pod, a)
    assert _meaning(step(step(with_a, b), a)) == _meaning(with_a)


@given(
    _pods(["u1", "u2"], ["ux", "uy"], []),
    ANY_PROFILES,
    _profiles(NAMES, INTERFACES, ["Enforce"]),
)
def test_an_enforce_profile_between_leaves_no_trace_on_unrelated_elements(
    pod: dict[str, str], a: Profile, b: Profile
) -> None:
    # Enforce overrides what it conflicts with; with nothing in common, A -> B -> A is A.
    elements = parse_networks(pod.get(NETWORKS_KEY, ""))
    pod = {**pod, NETWORKS_KEY: format_networks([replace(s, default_route=()) for s in elements])}
    with_a = step(pod, a)
    assert _meaning(step(step(with_a, b), a)) == _meaning(with_a)


@given(ANY_PODS, DEFAULT_PROFILES, DEFAULT_PROFILES)
def test_a_users_own_elements_survive_default_profile_switches(
    pod: dict[str, str], a: Profile, b: Profile
) -> None:
    own = parse_networks(pod.get(NETWORKS_KEY, ""))
    after = step(step(pod, a), b)
    remaining = parse_networks(after.get(NETWORKS_KEY, ""))
    for element in own:
        assert element in remaining
        remaining.remove(element)
    if DEFAULT_NETWORK_KEY in pod:
        assert after[DEFAULT_NETWORK_KEY] == pod[DEFAULT_NETWORK_KEY]
    # And taking the profile away restores the pod exactly.
    assert _meaning(step(after, None)) == _meaning(pod)


# --- enforced_violations -----------------------------------------------------------------------

ENFORCED = profile(default_network="corp-net", networks="storage@stor0, infra/mgmt", mode="Enforce")


def test_default_mode_enforces_nothing() -> None:
    assert enforced_violations({}, NS, replace(ENFORCED, mode="Default")) == []


def test_an_empty_pod_violates_every_enforced_item() -> None:
    assert enforced_violations({}, NS, ENFORCED) == [
        'v1.multus-cni.io/default-network: is missing; NetworkProfile "corp" (mode Enforce) '
        'requires "app/corp-net"',
        'k8s.v1.cni.cncf.io/networks: network "app/storage" on interface "stor0" is missing; '
        'NetworkProfile "corp" (mode Enforce) requires the element '
        '{"name": "storage", "namespace": "app", "interface": "stor0"}',
        'k8s.v1.cni.cncf.io/networks: network "infra/mgmt" is missing; NetworkProfile "corp" '
        '(mode Enforce) requires the element {"name": "mgmt", "namespace": "infra"}',
    ]


def test_a_converged_pod_has_no_violations() -> None:
    pod = step({NETWORKS_KEY: "own"}, ENFORCED)
    assert enforced_violations(pod, NS, ENFORCED) == []
    # Written relative to the pod's namespace is the same thing.
    same = {NETWORKS_KEY: "storage@stor0, infra/mgmt, own", DEFAULT_NETWORK_KEY: "corp-net"}
    assert enforced_violations(same, NS, ENFORCED) == []


def test_removing_an_enforced_network_is_a_violation() -> None:
    pod = step({}, ENFORCED)
    pod[NETWORKS_KEY] = "infra/mgmt"
    (message,) = enforced_violations(pod, NS, ENFORCED)
    assert message.startswith(
        'k8s.v1.cni.cncf.io/networks: network "app/storage" on interface "stor0" is missing'
    )


def test_another_attachment_of_an_enforced_network_is_a_violation() -> None:
    pod = step({}, ENFORCED)
    pod[NETWORKS_KEY] += ", storage"
    (message,) = enforced_violations(pod, NS, ENFORCED)
    assert message.startswith(
        'k8s.v1.cni.cncf.io/networks: element 2 (network "app/storage") is another attachment '
        'of an enforced network; NetworkProfile "corp" (mode Enforce) allows only the element'
    )
    assert "app/storage@stor0" in step(pod, ENFORCED)[NETWORKS_KEY]
    assert enforced_violations(step(pod, ENFORCED), NS, ENFORCED) == []


def test_enforced_elements_may_come_in_any_order() -> None:
    pod = {NETWORKS_KEY: "own, infra/mgmt, storage@stor0", DEFAULT_NETWORK_KEY: "app/corp-net"}
    assert enforced_violations(pod, NS, ENFORCED) == []


def test_changing_an_enforced_element_is_a_violation() -> None:
    pod = step({}, ENFORCED)
    pod[NETWORKS_KEY] = (
        '[{"name": "storage", "interface": "stor0", "ips": ["10.0.0.1"]}, {"name": "mgmt", "namespace": "infra"}]'
    )
    (message,) = enforced_violations(pod, NS, ENFORCED)
    assert (
        'element 0 (network "app/storage" on interface "stor0") differs from the enforced one'
        in message
    )
    assert '"interface": "stor0"}' in message


@pytest.mark.parametrize("value", ["other", "infra/corp-net", "Not/Valid"])
def test_another_default_network_is_a_violation(value: str) -> None:
    pod = step({}, ENFORCED)
    pod[DEFAULT_NETWORK_KEY] = value
    (message,) = enforced_violations(pod, NS, ENFORCED)
    assert message == (
        f'v1.multus-cni.io/default-network: is {json.dumps(value)}; NetworkProfile "corp" '
        '(mode Enforce) requires "app/corp-net"'
    )


def test_violations_on_a_malformed_networks_annotation_raise() -> None:
    with pytest.raises(AnnotationError):
        enforced_violations({NETWORKS_KEY: "a,,"}, NS, ENFORCED)
