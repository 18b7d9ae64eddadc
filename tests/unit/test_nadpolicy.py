"""NAD configs the agent may run: structure always, the cluster's policy when it is on (pure)."""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netshift.nadpolicy import (
    OFF,
    NadPolicy,
    NadPolicyError,
    Problem,
    check_nad,
    parse_policy,
    policy_from_configmap,
)

POLICY = parse_policy(
    {
        "enabled": True,
        "allowedTypes": ["bridge", "macvlan", "tuning"],
        "allowedIpamTypes": ["host-local", "static"],
        "ipamDataDirPrefixes": ["/var/lib/cni/networks"],
        "deniedBridges": ["cni0", "virbr*"],
        "exemptNamespaces": ["platform"],
    }
)


def bridge(**extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "blue",
        "type": "bridge",
        "bridge": "br-blue",
        "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
        **extra,
    }


def fields(config: Any, policy: NadPolicy = OFF, **kw: Any) -> list[str]:
    text = config if isinstance(config, str) else json.dumps(config)
    return [p.field for p in check_nad(text, policy, **kw)]


# --- structure, whatever the policy -------------------------------------------------


def test_a_plain_bridge_conf_and_a_conflist_are_fine() -> None:
    assert check_nad(json.dumps(bridge())) == []
    conflist = {"cniVersion": "1.0.0", "name": "l", "plugins": [bridge(), {"type": "tuning"}]}
    assert check_nad(json.dumps(conflist), POLICY) == []


def test_malformed_json_is_named_as_spec_config() -> None:
    [problem] = check_nad('{"type": "bridge",')
    assert problem.field == "spec.config" and "is not valid JSON" in problem.message
    assert str(problem).startswith("spec.config: is not valid JSON")
    assert fields("[1, 2]") == ["spec.config"]


def test_a_missing_or_path_like_type_is_named_by_its_field() -> None:
    config = bridge()
    del config["type"]
    assert fields(config) == ["spec.config.type"]
    [problem] = check_nad(json.dumps(bridge(type="../../usr/bin/evil")))
    assert problem.field == "spec.config.type"
    assert "not a plain plugin file name" in problem.message and problem.kind == "config"
    assert fields(bridge(ipam={"type": "/opt/ipam"})) == ["spec.config.ipam.type"]


def test_a_conflist_without_plugins_is_denied() -> None:
    assert fields({"cniVersion": "1.0.0", "name": "x", "plugins": []}) == ["spec.config.plugins"]
    assert fields({"name": "x", "plugins": [bridge(), "tuning", {"type": "a/b"}]}) == [
        "spec.config.plugins[1]",
        "spec.config.plugins[2].type",
    ]


def test_an_empty_ipam_object_means_no_ipam() -> None:
    assert check_nad(json.dumps(bridge(ipam={})), POLICY) == []


# --- the policy --------------------------------------------------------------------


def test_the_policy_is_off_by_default_so_anything_well_formed_passes() -> None:
    risky = bridge(bridge="cni0", type="bridge", ipam={"type": "host-local", "dataDir": "/etc"})
    assert check_nad(json.dumps(risky)) == []
    assert policy_from_configmap(None) == OFF
    assert policy_from_configmap({"data": {}}) == OFF
    assert check_nad(json.dumps(risky), parse_policy({"ipamDataDirPrefixes": ["/x"]})) == []


def test_ipam_data_dir_must_be_under_an_allowed_prefix() -> None:
    def data_dir(path: Any) -> list[Problem]:
        return check_nad(json.dumps(bridge(ipam={"type": "host-local", "dataDir": path})), POLICY)

    [problem] = data_dir("/etc")
    assert problem.field == "spec.config.ipam.dataDir" and problem.kind == "policy"
    assert '"/var/lib/cni/networks"' in problem.message
    assert data_dir("/var/lib/cni/networks/blue") == []
    assert data_dir("/var/lib/cni/networks") == []
    assert data_dir("/var/lib/cni/networks/../../../etc")  # ".." does not escape
    assert data_dir("/var/lib/cni/networks-evil")  # a prefix is a directory, not a string
    assert data_dir("relative/dir")
    assert data_dir(17)


def test_plugin_and_ipam_types_must_be_allowed() -> None:
    config = {"name": "l", "plugins": [bridge(), {"type": "vlan", "ipam": {"type": "dhcp"}}]}
    problems = check_nad(json.dumps(config), POLICY)
    assert [p.field for p in problems] == [
        "spec.config.plugins[1].type",
        "spec.config.plugins[1].ipam.type",
    ]
    assert "'vlan' is not allowed" in problems[0].message
    assert '"bridge", "macvlan", "tuning"' in problems[0].message


def test_denied_bridges_match_names_and_patterns_and_the_plugin_default() -> None:
    assert fields(bridge(bridge="virbr0"), POLICY) == ["spec.config.bridge"]
    default = bridge()
    del default["bridge"]
    [problem] = check_nad(json.dumps(default), POLICY)
    assert "'cni0' (the bridge plugin's default)" in problem.message
    assert fields(bridge(bridge="br-blue"), POLICY) == []


def test_exempt_namespaces_get_the_structure_checks_only() -> None:
    risky = bridge(bridge="cni0", ipam={"type": "host-local", "dataDir": "/etc"})
    assert check_nad(json.dumps(risky), POLICY, namespace="platform") == []
    assert len(check_nad(json.dumps(risky), POLICY, namespace="team-a")) == 2
    assert fields(bridge(type="a/b"), POLICY, namespace="platform") == ["spec.config.type"]


def test_a_policy_from_its_configmap() -> None:
    configmap = {"data": {"policy.yaml": "enabled: true\nipamDataDirPrefixes: [/var/lib/cni/]\n"}}
    policy = policy_from_configmap(configmap)
    assert policy.enabled and policy.ipam_data_dir_prefixes == ("/var/lib/cni",)
    assert policy.allowed_types is None and policy.denied_bridges == ()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"enabled": True, "allowedType": ["bridge"]}, "unknown keys allowedType"),
        ({"deniedBridges": "cni0"}, "deniedBridges must be a list"),
        ({"ipamDataDirPrefixes": ["var/lib"]}, "not a normalized absolute path"),
        ({"ipamDataDirPrefixes": ["/var/../etc"]}, "not a normalized absolute path"),
        ({"allowedTypes": ["/bin/sh"]}, "allowedTypes: \"type\" '/bin/sh'"),
        ([1], "must be a mapping"),
    ],
)
def test_a_policy_that_cannot_be_read_says_why(data: Any, says: str) -> None:
    with pytest.raises(NadPolicyError, match=says.replace("[", r"\[")):
        parse_policy(data)


def test_a_configmap_with_broken_yaml_is_an_error_not_an_empty_policy() -> None:
    with pytest.raises(NadPolicyError, match="not valid YAML"):
        policy_from_configmap({"data": {"policy.yaml": "enabled: [true"}})


segments = st.lists(st.sampled_from(["..", ".", "cni", "networks", "etc", "", "var", "lib"]))


@given(segments)
def test_an_accepted_data_dir_always_resolves_under_a_prefix(parts: list[str]) -> None:
    path = "/var/lib/cni/networks/" + "/".join(parts)
    problems = check_nad(json.dumps(bridge(ipam={"type": "host-local", "dataDir": path})), POLICY)
    normal = posixpath.normpath(path)
    inside = normal == "/var/lib/cni/networks" or normal.startswith("/var/lib/cni/networks/")
    assert (problems == []) == inside
