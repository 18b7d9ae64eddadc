"""The multi-network annotation model: grammar, messages, round trips, interface names."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netshift.annotations import (
    MAX_NETWORKS_ELEMENTS,
    AnnotationError,
    Attachment,
    Bandwidth,
    NetworkRef,
    NetworkSelection,
    NetworkStatusEntry,
    PortMapping,
    desired_attachments,
    format_network_status,
    format_networks,
    parse_default_network,
    parse_network_status,
    parse_networks,
    parse_ref,
)
from netshift.keys import DEFAULT_NETWORK_KEY, NETWORK_STATUS_KEY, NETWORKS_KEY

# --- spec examples -------------------------------------------------------------------

FULL_ELEMENT = {
    "name": "sriov-a",
    "namespace": "infra",
    "interface": "data0",
    "ips": ["10.1.2.3/24", "fd00::3"],
    "mac": "02:00:00:00:00:01",
    "default-route": ["10.1.2.1"],
    "portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "192.0.2.1"}
    ],
    "bandwidth": {
        "ingressRate": 1000,
        "ingressBurst": 2000,
        "egressRate": 3000,
        "egressBurst": 4000,
    },
    "cni-args": {"vlan": 10, "labels": {"b": "2", "a": "1"}},
    "infiniband-guid": "c2:11:22:33:44:55:66:77",
}

SPEC_EXAMPLES: list[tuple[str, list[NetworkSelection]]] = [
    ("", []),
    ("net-a", [NetworkSelection("net-a")]),
    ("ns1/net-a", [NetworkSelection("net-a", namespace="ns1")]),
    ("net-a@data0", [NetworkSelection("net-a", interface="data0")]),
    ("ns1/net-a@data0", [NetworkSelection("net-a", namespace="ns1", interface="data0")]),
    (
        "  net-a ,ns1/net-b@x ,\tnet-a ",
        [
            NetworkSelection("net-a"),
            NetworkSelection("net-b", namespace="ns1", interface="x"),
            NetworkSelection("net-a"),
        ],
    ),
    ('[{"name": "net-a"}]', [NetworkSelection("net-a")]),
    ("[]", []),
    (
        '[{"name": "net-a", "namespace": "ns1", "interface": "eth1"}, {"name": "net-a"}]',
        [NetworkSelection("net-a", "ns1", "eth1"), NetworkSelection("net-a")],
    ),
    (
        json.dumps([FULL_ELEMENT]),
        [
            NetworkSelection(
                name="sriov-a",
                namespace="infra",
                interface="data0",
                ips=("10.1.2.3/24", "fd00::3"),
                mac="02:00:00:00:00:01",
                default_route=("10.1.2.1",),
                port_mappings=(PortMapping(8080, 80, "tcp", "192.0.2.1"),),
                bandwidth=Bandwidth(1000, 2000, 3000, 4000),
                cni_args='{"labels":{"a":"1","b":"2"},"vlan":10}',
                infiniband_guid="c2:11:22:33:44:55:66:77",
            )
        ],
    ),
    (
        '[{"name": "a", "ipam-claim-reference": "claim-1.x", "ips": []}]',
        [NetworkSelection("a", ipam_claim_reference="claim-1.x")],
    ),
    # JSON null means "not set", as for Multus' Go types.
    ('[{"name": "a", "mac": null, "interface": null}]', [NetworkSelection("a")]),
]


@pytest.mark.parametrize(("value", "expected"), SPEC_EXAMPLES)
def test_spec_examples_parse(value: str, expected: list[NetworkSelection]) -> None:
    assert parse_networks(value) == expected


@pytest.mark.parametrize(("value", "expected"), SPEC_EXAMPLES)
def test_spec_examples_round_trip_through_format(
    value: str, expected: list[NetworkSelection]
) -> None:
    assert parse_networks(format_networks(parse_networks(value))) == expected


def test_simple_elements_are_written_in_comma_form() -> None:
    sels = [NetworkSelection("a"), NetworkSelection("b", "ns", "x")]
    assert format_networks(sels) == "a, ns/b@x"
    assert format_networks([]) == ""


def test_one_rich_element_makes_the_whole_value_json() -> None:
    text = format_networks([NetworkSelection("a"), NetworkSelection("b", ips=("10.0.0.1",))])
    assert json.loads(text) == [{"name": "a"}, {"name": "b", "ips": ["10.0.0.1"]}]


def test_to_json_writes_only_fields_that_are_set() -> None:
    assert NetworkSelection("a").to_json() == {"name": "a"}
    (full,) = parse_networks(json.dumps([FULL_ELEMENT]))
    assert full.to_json() == FULL_ELEMENT


def test_mac_and_guid_and_protocol_are_normalized() -> None:
    value = json.dumps(
        [
            {
                "name": "a",
                "mac": "0A-BB-CC-DD-EE-FF",
                "infiniband-guid": "C211.2233.4455.6677",
                "portMappings": [{"hostPort": 53, "containerPort": 53, "protocol": "UDP"}],
            }
        ]
    )
    (sel,) = parse_networks(value)
    assert sel.mac == "0a:bb:cc:dd:ee:ff"
    assert sel.infiniband_guid == "c2:11:22:33:44:55:66:77"
    assert sel.port_mappings == (PortMapping(53, 53, "udp"),)


def test_port_mapping_protocol_defaults_to_tcp() -> None:
    (sel,) = parse_networks(
        '[{"name": "a", "portMappings": [{"hostPort": 1, "containerPort": 2}]}]'
    )
    assert sel.port_mappings == (PortMapping(1, 2),)


def test_cni_args_are_kept_canonical_and_readable() -> None:
    (sel,) = parse_networks('[{"name": "a", "cni-args": {"z": [1, {"b": 2, "a": 1}], "a": null}}]')
    assert sel.cni_args == '{"a":null,"z":[1,{"a":1,"b":2}]}'
    assert sel.cni_args_dict() == {"a": None, "z": [1, {"a": 1, "b": 2}]}
    assert NetworkSelection("a").cni_args_dict() == {}


def test_ref_resolves_a_missing_namespace_to_the_pods() -> None:
    assert NetworkSelection("a").ref("app") == NetworkRef("app", "a")
    assert NetworkSelection("a", "infra").ref("app") == NetworkRef("infra", "a")
    assert str(NetworkRef("infra", "a")) == "infra/a"


# --- errors a human can act on ---------------------------------------------------------

# (value, substrings that the message must contain)
ERRORS: list[tuple[str, list[str]]] = [
    (
        '[{"name": "x"}, {"name": "macvlan-a", "interface": "eth 0"}]',
        [
            'k8s.v1.cni.cncf.io/networks: element 1 ("macvlan-a"): field "interface": '
            '"eth 0" contains whitespace; expected a Linux interface name'
        ],
    ),
    ("a,,b", ["element 1:", "is empty", 'expected "name", "namespace/name"']),
    ("a,b,", ["element 2:", "is empty"]),
    (",", ["element 0:", "is empty"]),
    ("Net-A", ['element 0 ("Net-A")', 'field "name"', "uppercase letter", "DNS-1123 label"]),
    ("a/b/c", ['field "namespace"', 'more than one "/"']),
    ("/a", ['field "namespace"', "is empty"]),
    ("a@", ['field "interface"', "is empty", "Linux interface name"]),
    ("a@x@y", ['field "interface"', 'more than one "@"']),
    ("a@eth0/1", ['field "interface"', 'contains "/"']),
    ("a@eth0:1", ['field "interface"', 'contains ":"']),
    ("a@.", ['field "interface"', "is reserved"]),
    ("a@..", ['field "interface"', "is reserved"]),
    ("a@abcdefghijklmnop", ['field "interface"', "is 16 bytes long", "1-15 bytes"]),
    ("a@ééééééééé", ['field "interface"', "is 18 bytes long"]),
    ("a@x\x07", ['field "interface"', "non-printable"]),
    ("a-", ['field "name"', "must start and end with a letter or digit"]),
    ("a" * 64, ['field "name"', "is 64 characters long", "1-63 characters"]),
    ("réseau", ['field "name"', 'contains the character "\\u00e9"']),
    ("a b", ['field "name"', 'contains the character " "']),
    ('{"name": "a"}', ["networks: is a JSON object", "expected a JSON list"]),
    ('"a"', ['is the string "a"', "expected a JSON list"]),
    ("[a]", ["is not valid JSON", "line 1 column 2"]),
    ("[null]", ["element 0: is null", 'expected a JSON object with at least "name"']),
    ("[5]", ["element 0: is the number 5"]),
    ('[["a"]]', ["element 0: is a JSON list"]),
    ("[{}]", ['element 0: field "name": is missing']),
    ('[{"name": null}]', ['field "name": is missing']),
    ('[{"name": 5}]', ['element 0: field "name": is the number 5', "DNS-1123 label"]),
    ('[{"name": {"a": 1}}]', ['field "name": is a JSON object']),
    ('[{"name": "a", "namespace": ""}]', ['field "namespace": is empty']),
    ('[{"name": "a", "interface": 7}]', ['field "interface": is the number 7']),
    ('[{"name": "a", "ips": "10.0.0.1"}]', ['field "ips": is the string', "expected a JSON list"]),
    ('[{"name": "a", "ips": [["10.0.0.1"]]}]', ['field "ips[0]": is a JSON list']),
    ('[{"name": "a", "ips": ["10.0.0.300"]}]', ['field "ips[0]"', "is not an IP address"]),
    ('[{"name": "a", "ips": ["10.0.0.1/33"]}]', ['field "ips[0]"', "is not an IP address"]),
    ('[{"name": "a", "ips": ["10.0.0.1/255.0.0.0"]}]', ["does not end in a prefix length"]),
    ('[{"name": "a", "default-route": ["10.0.0.1/24"]}]', ['"default-route[0]"', "prefix length"]),
    ('[{"name": "a", "default-route": "10.0.0.1"}]', ['field "default-route": is the string']),
    ('[{"name": "a", "mac": "02:00:00:00:00"}]', ['field "mac"', "not a 6-byte MAC"]),
    ('[{"name": "a", "mac": "02:00:00:00:00:0g"}]', ['field "mac"', "not a 6-byte MAC"]),
    ('[{"name": "a", "mac": "02:00-00:00:00:01"}]', ['field "mac"', "not a 6-byte MAC"]),
    ('[{"name": "a", "mac": "01:00:5e:00:00:01"}]', ['field "mac"', "multicast"]),
    ('[{"name": "a", "mac": "00:00:00:00:00:00"}]', ['field "mac"', "all zeros"]),
    ('[{"name": "a", "infiniband-guid": "02:00:00:00:00:01"}]', ["not an 8-byte GUID"]),
    ('[{"name": "a", "portMappings": {}}]', ['field "portMappings": is a JSON object']),
    ('[{"name": "a", "portMappings": [5]}]', ['field "portMappings[0]": is the number 5']),
    (
        '[{"name": "a", "portMappings": [{"containerPort": 1}]}]',
        ['field "portMappings[0].hostPort": is missing', "1 to 65535"],
    ),
    (
        '[{"name": "a", "portMappings": [{"hostPort": 0, "containerPort": 1}]}]',
        ['"portMappings[0].hostPort": 0 is out of range', "an integer from 1 to 65535"],
    ),
    (
        '[{"name": "a", "portMappings": [{"hostPort": 1, "containerPort": 65536}]}]',
        ['"portMappings[0].containerPort": 65536 is out of range'],
    ),
    (
        '[{"name": "a", "portMappings": [{"hostPort": "80", "containerPort": 1}]}]',
        ['"portMappings[0].hostPort": is the string "80"'],
    ),
    (
        '[{"name": "a", "portMappings": [{"hostPort": true, "containerPort": 1}]}]',
        ['"portMappings[0].hostPort": is the boolean true'],
    ),
    (
        '[{"name": "a", "portMappings": [{"hostPort": 1.5, "containerPort": 1}]}]',
        ['"portMappings[0].hostPort": is the number 1.5'],
    ),
    (
        '[{"name": "a", "portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]}]',
        ['"portMappings[0].protocol": "icmp" is not supported', '"tcp", "udp", "sctp"'],
    ),
    (
        '[{"name": "a", "portMappings": [{"hostPort": 1, "containerPort": 1, "host": "x"}]}]',
        ['"portMappings[0].host": is not a known field', '"hostPort"', '"hostIP"'],
    ),
    (
        '[{"name": "a", "bandwidth": {"ingressRate": -1}}]',
        ['"bandwidth.ingressRate": -1 is out of range'],
    ),
    ('[{"name": "a", "bandwidth": {"rate": 1}}]', ['"bandwidth.rate": is not a known field']),
    ('[{"name": "a", "bandwidth": [1]}]', ['"bandwidth": is a JSON list']),
    ('[{"name": "a", "cni-args": ["x"]}]', ['"cni-args": is a JSON list', "a JSON object"]),
    (
        '[{"name": "a", "ipam-claim-reference": "Claim"}]',
        ['"ipam-claim-reference"', "not a valid name"],
    ),
    (
        '[{"name": "a", "ips": ["10.0.0.1"], "ipam-claim-reference": "c"}]',
        ['field "ipam-claim-reference": is set together with "ips"', "not both"],
    ),
    (
        '[{"name": "a", "interfaces": "x"}]',
        [
            'element 0 ("a"): field "interfaces": is not a known field; expected one of "name", '
            '"namespace", "interface", "ips", "mac", "default-route", "portMappings", "bandwidth", '
            '"cni-args", "infiniband-guid", "ipam-claim-reference"'
        ],
    ),
    ('[{"name": "a", "name": "b"}]', ['the key "name" twice']),
    ('[{"name": "a", "bandwidth": {"ingressRate": NaN}}]', ["NaN is not a JSON number"]),
    ('[{"name": "a", "bandwidth": {"ingressRate": 1e999}}]', ["is the number inf"]),
    ("[" + "1" * 5000 + "]", ["a number with too many digits"]),
    ("[" * 5000 + "]" * 5000, ["is nested too deeply"]),
    (
        "a@net1, b@net1",
        ['element 1 ("b"): field "interface": "net1" is already used by element 0 ("a")'],
    ),
    (
        '[{"name": "a", "default-route": ["10.0.0.1"]}, {"name": "b"},'
        ' {"name": "c", "default-route": ["10.0.0.2"]}]',
        [
            'element 2 ("c"): field "default-route": element 0 ("a") already sets default-route',
            "at most one element",
        ],
    ),
]


@pytest.mark.parametrize(("value", "fragments"), ERRORS)
def test_malformed_networks_are_refused_with_a_message_that_says_why(
    value: str, fragments: list[str]
) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_networks(value)
    message = str(caught.value)
    assert message.startswith(NETWORKS_KEY + ": ")
    assert "; expected " in message
    for fragment in fragments:
        assert fragment in message


def test_error_carries_its_parts_for_callers() -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_networks('[{"name": "x"}, {"name": "macvlan-a", "interface": "eth 0"}]')
    err = caught.value
    assert (err.annotation, err.index, err.element, err.field) == (
        NETWORKS_KEY,
        1,
        "macvlan-a",
        "interface",
    )
    assert err.problem == '"eth 0" contains whitespace'
    assert err.expected.startswith("a Linux interface name")
    assert isinstance(err, ValueError)


def test_error_message_matches_the_documented_shape() -> None:
    err = AnnotationError(NETWORKS_KEY, 1, "macvlan-a", "interface", "bad", "good")
    assert (
        str(err)
        == 'k8s.v1.cni.cncf.io/networks: element 1 ("macvlan-a"): field "interface": bad; expected good'
    )
    assert str(AnnotationError(NETWORKS_KEY, problem="is odd")) == NETWORKS_KEY + ": is odd"


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_networks("a" * 1000)
    assert len(str(caught.value)) < 400
    assert "(1000 characters)" in str(caught.value)


def test_value_size_is_capped() -> None:
    with pytest.raises(AnnotationError, match=r"is 70000 bytes long; expected at most 65536 bytes"):
        parse_networks("a" * 70000)


def test_element_count_is_capped_in_both_forms() -> None:
    too_many = MAX_NETWORKS_ELEMENTS + 1
    with pytest.raises(AnnotationError, match=rf"has {too_many} elements; expected at most 64"):
        parse_networks(",".join(["a"] * too_many))
    with pytest.raises(AnnotationError, match=rf"has {too_many} elements"):
        parse_networks(json.dumps([{"name": "a"}] * too_many))
    assert len(parse_networks(",".join(["a"] * MAX_NETWORKS_ELEMENTS))) == MAX_NETWORKS_ELEMENTS


# --- hostile input -------------------------------------------------------------------------

HOSTILE_ACCEPTED: list[tuple[str, list[NetworkSelection]]] = [
    ("", []),
    ("   \t\n ", []),
    # No '[', '{' or '"': the spec says comma form, so these are network names.
    ("null", [NetworkSelection("null")]),
    ("5", [NetworkSelection("5")]),
    ("true", [NetworkSelection("true")]),
    # Linux takes any printable bytes as an interface name.
    ("a@ëth0", [NetworkSelection("a", interface="ëth0")]),
    (
        "a@net1, a@net2, a",
        [
            NetworkSelection("a", None, "net1"),
            NetworkSelection("a", None, "net2"),
            NetworkSelection("a"),
        ],
    ),
]


@pytest.mark.parametrize(("value", "expected"), HOSTILE_ACCEPTED)
def test_odd_but_valid_values(value: str, expected: list[NetworkSelection]) -> None:
    assert parse_networks(value) == expected


HOSTILE_REFUSED = [
    "a," * 40000,
    "сеть/net",
    "ns/сеть",
    '[[{"name": "a"}]]',
    '[{"name": "a", "cni-args": ' + "[" * 3000 + "]" * 3000 + "}]",
    "a@x, b@x",
    '[{"name": "a", "default-route": ["10.0.0.1"]}, {"name": "b", "default-route": ["10.0.0.1"]}]',
    "[null]",
    "null, [",
    "[1, 2]",
    "{}",
    '[{"name": "a"}] trailing',
    '[{"name": "\\u0000"}]',
    '[{"name": "a", "interface": "\\ud800"}]',
    "[true]",
    '"',
]


@pytest.mark.parametrize("value", HOSTILE_REFUSED)
def test_hostile_values_are_refused_cleanly(value: str) -> None:
    with pytest.raises(AnnotationError):
        parse_networks(value)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["name", "ips", "interface", "mac", "x"]) | st.text(max_size=4),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_annotation_error(value: str) -> None:
    with contextlib.suppress(AnnotationError):
        parse_networks(value)


@given(JSON_VALUES)
def test_any_json_parses_or_raises_annotation_error(value: Any) -> None:
    for text in (json.dumps(value), json.dumps([value]), json.dumps([{"name": "a", "ips": value}])):
        with contextlib.suppress(AnnotationError):
            parse_networks(text)


# --- generated valid selections round-trip ----------------------------------------

LABELS = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,12}[a-z0-9])?", fullmatch=True)
INTERFACE_CHARS = st.characters(codec="utf-8").filter(
    lambda c: c.isprintable() and not c.isspace() and c not in "/:"
)
INTERFACES = st.text(INTERFACE_CHARS, min_size=1, max_size=15).filter(
    lambda s: s not in (".", "..") and len(s.encode()) <= 15
)
IPS = st.ip_addresses().map(str)
CIDRS = st.one_of(
    IPS,
    st.ip_addresses(v=4).flatmap(lambda ip: st.integers(0, 32).map(lambda n: f"{ip}/{n}")),
    st.ip_addresses(v=6).flatmap(lambda ip: st.integers(0, 128).map(lambda n: f"{ip}/{n}")),
)


def _hex(data: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in data)


MACS = (
    st.binary(min_size=6, max_size=6).map(lambda b: bytes([b[0] & 0xFE | 0x02]) + b[1:]).map(_hex)
)
GUIDS = st.binary(min_size=8, max_size=8).map(_hex)
PORTS = st.integers(1, 65535)
PORT_MAPPINGS = st.builds(
    PortMapping, PORTS, PORTS, st.sampled_from(["tcp", "udp", "sctp"]), st.none() | IPS
)
RATES = st.none() | st.integers(0, 2**63 - 1)
BANDWIDTHS = st.builds(Bandwidth, RATES, RATES, RATES, RATES)
CNI_ARGS = st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4).map(
    lambda d: json.dumps(d, sort_keys=True, separators=(",", ":"))
)

SELECTIONS = st.builds(
    NetworkSelection,
    name=LABELS,
    namespace=st.none() | LABELS,
    interface=st.none() | INTERFACES,
    ips=st.lists(CIDRS, max_size=3).map(tuple),
    mac=st.none() | MACS,
    default_route=st.lists(IPS, max_size=2).map(tuple),
    port_mappings=st.lists(PORT_MAPPINGS, max_size=2).map(tuple),
    bandwidth=st.none() | BANDWIDTHS,
    cni_args=st.none() | CNI_ARGS,
    infiniband_guid=st.none() | GUIDS,
    ipam_claim_reference=st.none() | LABELS,
)
SIMPLE_SELECTIONS = st.builds(
    NetworkSelection, name=LABELS, namespace=st.none() | LABELS, interface=st.none() | INTERFACES
)


def _make_valid(selections: list[NetworkSelection]) -> list[NetworkSelection]:
    """Apply the cross-element rules: one default-route carrier, unique interfaces."""
    valid = []
    names: set[str] = set()
    route_seen = False
    for sel in selections:
        if sel.interface in names:
            sel = NetworkSelection(**{**sel.__dict__, "interface": None})
        if sel.interface is not None:
            names.add(sel.interface)
        if sel.default_route:
            if route_seen:
                sel = NetworkSelection(**{**sel.__dict__, "default_route": ()})
            route_seen = True
        if sel.ips and sel.ipam_claim_reference:
            sel = NetworkSelection(**{**sel.__dict__, "ipam_claim_reference": None})
        valid.append(sel)
    return valid


VALID_LISTS = st.lists(SELECTIONS | SIMPLE_SELECTIONS, max_size=6).map(_make_valid)


@given(VALID_LISTS)
def test_parse_of_format_gives_back_any_valid_selections(
    selections: list[NetworkSelection],
) -> None:
    assert parse_networks(format_networks(selections)) == selections


COMMA_SAFE_SELECTIONS = st.builds(
    NetworkSelection,
    name=LABELS,
    namespace=st.none() | LABELS,
    interface=st.none()
    | st.from_regex(r"[a-zA-Z0-9_.-]{1,15}", fullmatch=True).filter(lambda s: s not in (".", "..")),
)


@given(st.lists(COMMA_SAFE_SELECTIONS, min_size=1, max_size=6).map(_make_valid))
def test_simple_selections_round_trip_through_the_comma_form(
    selections: list[NetworkSelection],
) -> None:
    text = format_networks(selections)
    assert not text.startswith("[")
    assert parse_networks(text) == selections


@pytest.mark.parametrize("interface", ["a,b", "a@b", "[x", "{x", 'x"'])
def test_interfaces_the_comma_form_cannot_carry_are_written_as_json(interface: str) -> None:
    selections = [NetworkSelection("a", interface=interface)]
    text = format_networks(selections)
    assert text.startswith("[")
    assert parse_networks(text) == selections


@given(VALID_LISTS, st.sampled_from(["", " ", "  ", "\t"]))
def test_format_of_parse_keeps_the_meaning(
    selections: list[NetworkSelection], padding: str
) -> None:
    text = format_networks(selections)
    if not text.startswith("["):
        text = ",".join(padding + item + padding for item in text.split(", ")) if text else text
    else:
        text = json.dumps(json.loads(text), indent=2)
    parsed = parse_networks(text)
    assert parse_networks(format_networks(parsed)) == parsed == selections


# --- references and the default network ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("net-a", NetworkRef("app", "net-a")),
        ("infra/net-a", NetworkRef("infra", "net-a")),
        (" infra/x ", NetworkRef("infra", "x")),
    ],
)
def test_default_network_resolves_a_bare_name_in_the_pod_namespace(
    value: str, expected: NetworkRef
) -> None:
    assert parse_default_network(value, "app") == expected
    assert parse_ref(value, "app") == expected


DNS_LABEL = (
    "a DNS-1123 label (1-63 characters: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit)"
)
A_REF = '"name" or "namespace/name" (each a DNS-1123 label)'


@pytest.mark.parametrize(
    ("value", "problem", "expected"),
    [
        ("", 'field "name": is empty', DNS_LABEL),
        ("a/b/c", '"a/b/c" contains more than one "/"', A_REF),
        ("ns/a@eth1", '"ns/a@eth1" names an interface ("@")', A_REF),
        ("NS/a", 'field "namespace": "NS" contains the uppercase letter "N"', DNS_LABEL),
        ('["a"]', 'field "name": "[\\"a\\"]" contains the character "["', DNS_LABEL),
    ],
)
def test_bad_default_network_names_the_annotation(value: str, problem: str, expected: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_default_network(value, "app")
    assert str(caught.value) == f"{DEFAULT_NETWORK_KEY}: {problem}; expected {expected}"


def test_parse_ref_names_the_source_given() -> None:
    with pytest.raises(AnnotationError, match=r"^spec.defaultNetwork: "):
        parse_ref("a/b/c", "x", annotation="spec.defaultNetwork")


# --- network-status -----------------------------------------------------------------------

STATUS_EXAMPLE = """[{
    "name": "cluster-net",
    "interface": "eth0",
    "ips": ["10.244.1.5"],
    "mac": "0a:58:0a:f4:01:05",
    "mtu": 1450,
    "default": true,
    "dns": {"nameservers": ["10.96.0.10"]},
    "gateway": ["10.244.1.1"]
},{
    "name": "infra/sriov-a",
    "interface": "net1",
    "ips": ["192.168.1.10"],
    "mac": "02:00:00:00:00:01",
    "dns": {},
    "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:18:02.5"}},
    "default-route": ["192.168.1.1"]
}]"""


def test_network_status_parses_known_fields_and_keeps_the_rest() -> None:
    primary, secondary = parse_network_status(STATUS_EXAMPLE)
    assert primary == NetworkStatusEntry(
        name="cluster-net",
        interface="eth0",
        ips=["10.244.1.5"],
        mac="0a:58:0a:f4:01:05",
        mtu=1450,
        default=True,
        dns={"nameservers": ["10.96.0.10"]},
        gateway=["10.244.1.1"],
    )
    assert secondary.default is False
    assert secondary.extra == {
        "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:18:02.5"}},
        "default-route": ["192.168.1.1"],
    }


def test_network_status_writes_unknown_fields_back() -> None:
    text = format_network_status(parse_network_status(STATUS_EXAMPLE))
    assert json.loads(text) == json.loads(
        STATUS_EXAMPLE.replace('"default": true', '"default": true')
    )
    assert parse_network_status(text) == parse_network_status(STATUS_EXAMPLE)


def test_network_status_empty_and_minimal() -> None:
    assert parse_network_status("") == []
    assert parse_network_status("[]") == []
    assert format_network_status([]) == "[]"
    assert parse_network_status('[{"name": "a"}]') == [NetworkStatusEntry("a")]
    assert json.loads(format_network_status([NetworkStatusEntry("a")])) == [{"name": "a"}]


def test_known_fields_win_over_extra_when_writing() -> None:
    entry = NetworkStatusEntry("a", extra={"name": "b", "device-info": {}})
    assert json.loads(format_network_status([entry])) == [{"name": "a", "device-info": {}}]


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ('{"name": "a"}', ["is a JSON object", "expected a JSON list"]),
        ("[1]", ["element 0: is the number 1"]),
        ("[{}]", ['element 0: field "name": is missing']),
        ('[{"name": 1}]', ['field "name": is the number 1']),
        ('[{"name": "a", "ips": "10.0.0.1"}]', ['element 0 ("a"): field "ips": is the string']),
        (
            '[{"name": "a", "default": "yes"}]',
            ['field "default": is the string "yes"', "true or false"],
        ),
        ('[{"name": "a", "mtu": -1}]', ['field "mtu": -1 is out of range']),
        ('[{"name": "a", "dns": []}]', ['field "dns": is a JSON list']),
        ('[{"name": "a", "gateway": [1]}]', ['field "gateway[0]": is the number 1']),
        ("[{", ["is not valid JSON"]),
        ("a", ["is not valid JSON"]),
    ],
)
def test_malformed_network_status_is_refused(value: str, fragments: list[str]) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_network_status(value)
    assert str(caught.value).startswith(NETWORK_STATUS_KEY + ": ")
    for fragment in fragments:
        assert fragment in str(caught.value)


STATUS_KNOWN = {"name", "interface", "ips", "mac", "mtu", "default", "dns", "gateway"}
STATUS_ENTRIES = st.builds(
    NetworkStatusEntry,
    name=st.text(max_size=20),
    interface=st.none() | st.text(max_size=15),
    ips=st.lists(IPS, max_size=3),
    mac=st.none() | MACS,
    mtu=st.none() | st.integers(0, 9000),
    default=st.booleans(),
    dns=st.none() | st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3),
    gateway=st.none() | st.lists(IPS, max_size=2),
    extra=st.dictionaries(
        st.text(max_size=12).filter(lambda key: key not in STATUS_KNOWN), JSON_VALUES, max_size=3
    ),
)


@given(st.lists(STATUS_ENTRIES, max_size=5))
def test_network_status_round_trips(entries: list[NetworkStatusEntry]) -> None:
    assert parse_network_status(format_network_status(entries)) == entries


@given(st.text(max_size=100) | JSON_VALUES.map(json.dumps))
def test_any_network_status_parses_or_raises_annotation_error(value: str) -> None:
    with contextlib.suppress(AnnotationError):
        parse_network_status(value)


# --- interface names ------------------------------------------------------------------------

APP = "app"


def ref(name: str, namespace: str = APP) -> NetworkRef:
    return NetworkRef(namespace, name)


def names(attachments: list[Attachment]) -> list[tuple[str, str, bool]]:
    return [(str(a.ref), a.interface, a.auto_named) for a in attachments]


def test_explicit_interfaces_are_used_as_given() -> None:
    result = desired_attachments(parse_networks("a@data0, infra/b@data1"), APP, [])
    assert names(result) == [("app/a", "data0", False), ("infra/b", "data1", False)]
    assert result[0].selection == NetworkSelection("a", interface="data0")


def test_unnamed_networks_get_the_lowest_free_net_names() -> None:
    result = desired_attachments(parse_networks("a, b@net1, c, d"), APP, [])
    assert names(result) == [
        ("app/a", "net2", True),
        ("app/b", "net1", False),
        ("app/c", "net3", True),
        ("app/d", "net4", True),
    ]


def test_reserved_and_current_names_are_never_chosen() -> None:
    current = [(ref("x"), "net1", False), (ref("y"), "net3", True)]
    result = desired_attachments(
        parse_networks("a, b"), APP, current, reserved=("eth0", "lo", "net2")
    )
    assert names(result) == [("app/a", "net4", True), ("app/b", "net5", True)]


def test_current_auto_named_attachments_keep_their_names_in_order() -> None:
    current = [(ref("a"), "net3", True), (ref("b"), "net1", True), (ref("a"), "net2", True)]
    result = desired_attachments(parse_networks("b, a, a, a"), APP, current)
    assert names(result) == [
        ("app/b", "net1", True),
        ("app/a", "net3", True),
        ("app/a", "net2", True),
        ("app/a", "net4", True),
    ]


def test_removing_one_unnamed_network_does_not_rename_the_others() -> None:
    before = desired_attachments(parse_networks("a, b, c"), APP, [])
    current = [(a.ref, a.interface, a.auto_named) for a in before]
    after = desired_attachments(parse_networks("a, c"), APP, current)
    assert names(after) == [("app/a", "net1", True), ("app/c", "net3", True)]
    # A network added while b is still attached does not take b's name.
    added = desired_attachments(parse_networks("a, c, d"), APP, current)
    assert names(added)[2] == ("app/d", "net4", True)


def test_explicitly_named_attachments_are_not_reused_for_unnamed_elements() -> None:
    current = [(ref("a"), "data0", False)]
    result = desired_attachments(parse_networks("a"), APP, current)
    assert names(result) == [("app/a", "net1", True)]


def test_an_explicit_name_takes_precedence_over_a_current_auto_name() -> None:
    current = [(ref("a"), "net1", True)]
    result = desired_attachments(parse_networks("a, b@net1"), APP, current)
    assert names(result) == [("app/a", "net2", True), ("app/b", "net1", False)]


def test_same_network_in_another_namespace_is_another_network() -> None:
    current = [(ref("a", "infra"), "net1", True)]
    result = desired_attachments(parse_networks("a"), APP, current)
    assert names(result) == [("app/a", "net2", True)]


def test_duplicate_interface_names_raise() -> None:
    dup = [NetworkSelection("a", interface="x"), NetworkSelection("b", interface="x")]
    with pytest.raises(
        AnnotationError, match=r'element 1 \("b"\): field "interface": "x" is already used'
    ):
        desired_attachments(dup, APP, [])


# What is attached has one interface per name (the agent keys its records by interface).
CURRENT = st.lists(
    st.tuples(LABELS, st.integers(1, 9), st.booleans()), max_size=5, unique_by=lambda c: c[1]
)


@given(VALID_LISTS, CURRENT)
def test_desired_attachments_never_repeat_a_name(
    selections: list[NetworkSelection], current_raw: list[tuple[str, int, bool]]
) -> None:
    current = [(ref(name), f"net{n}", auto) for name, n, auto in current_raw]
    result = desired_attachments(selections, APP, current)
    interfaces = [a.interface for a in result]
    assert len(interfaces) == len(set(interfaces))
    assert "eth0" not in [a.interface for a in result if a.auto_named]
    assert [a.selection for a in result] == selections
    for attachment in result:
        assert attachment.ref == attachment.selection.ref(APP)
        assert attachment.auto_named == (attachment.selection.interface is None)


def test_ip_strings_are_kept_as_given() -> None:
    (sel,) = parse_networks('[{"name": "a", "ips": ["fd00:0::1/64"]}]')
    assert sel.ips == ("fd00:0::1/64",)
    assert ipaddress.ip_interface(sel.ips[0]).ip == ipaddress.ip_address("fd00::1")
