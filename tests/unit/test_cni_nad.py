"""A NAD becomes a CNI invocation: its conflist, and one attachment's runtime parameters (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netshift.annotations import NetworkRef, parse_networks
from netshift.cni.config import load_conflist
from netshift.cni.nad import (
    NAD_NODE_CONF,
    NadError,
    attachment_runtime,
    nad_conflist,
    recorded_invocation,
    recorded_selection,
    resolve_nad,
)
from netshift.cni.nodeconf import NodeConf, NodeConfError
from netshift.records import AttachmentRecord

REF = NetworkRef("apps", "blue")
BRIDGE = {"cniVersion": "1.0.0", "type": "bridge", "bridge": "br-blue", "ipam": {}}


def nad(config: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "apps", "name": "blue"}, "spec": {"config": config}}


def test_a_single_plugin_conf_becomes_a_list_named_after_the_nad() -> None:
    conflist = nad_conflist(nad(json.dumps(BRIDGE)), REF)
    assert conflist.name == "blue"
    assert conflist.types == ("bridge",)
    assert conflist.cni_version == "1.0.0"


def test_a_conflist_keeps_its_own_name() -> None:
    config = {"cniVersion": "0.4.0", "name": "own", "plugins": [BRIDGE, {"type": "tuning"}]}
    conflist = nad_conflist(nad(json.dumps(config)), REF)
    assert (conflist.name, conflist.types) == ("own", ("bridge", "tuning"))


def test_a_missing_nad_is_named_with_what_to_do() -> None:
    with pytest.raises(
        NadError, match=r"NetworkAttachmentDefinition apps/blue does not exist; create"
    ):
        nad_conflist(None, REF)


@pytest.mark.parametrize("obj", [nad(""), nad(None), {"metadata": {}}, {"spec": None}])
def test_an_empty_config_is_the_nodes_conf_file_of_the_nads_name(obj: dict[str, Any]) -> None:
    asked: list[str] = []

    def node_conf(name: str) -> NodeConf:
        asked.append(name)
        text = json.dumps({**BRIDGE, "name": name})
        return NodeConf("/etc/cni/multus/net.d/10-blue.conf", text, load_conflist(text))

    found = resolve_nad(obj, REF, node_conf)
    assert asked == ["blue"]
    assert (found.conflist.name, found.conflist.types) == ("blue", ("bridge",))
    assert found.node_file == "/etc/cni/multus/net.d/10-blue.conf"
    assert json.loads(found.text)["name"] == "blue"  # what the NAD policy judges
    assert nad_conflist(obj, REF, node_conf) == found.conflist


def test_without_a_node_lookup_an_empty_config_is_refused_saying_it_is_defined_per_node() -> None:
    with pytest.raises(
        NadError, match=r"apps/blue has no spec.config: it is defined per node"
    ) as err:
        nad_conflist(nad(""), REF)
    assert err.value.ref == REF and err.value.kind == NAD_NODE_CONF
    assert "this component reads no node conf files" in str(err.value)


def test_a_missing_node_conf_file_is_a_node_conf_error_naming_the_nad_and_the_node() -> None:
    def node_conf(name: str) -> NodeConf:
        raise NodeConfError(f"no conf file {name!r} on node n1 (/etc/cni/multus/net.d): ...")

    with pytest.raises(NadError) as err:
        resolve_nad(nad(""), REF, node_conf)
    assert err.value.kind == NAD_NODE_CONF
    assert str(err.value).startswith(
        "NetworkAttachmentDefinition apps/blue has no spec.config (defined per node), and "
        "no conf file 'blue' on node n1"
    )


def test_a_spec_config_is_used_as_written_and_never_looks_at_the_node() -> None:
    def node_conf(name: str) -> NodeConf:
        raise AssertionError("a NAD with spec.config must not read node files")

    found = resolve_nad(nad(json.dumps(BRIDGE)), REF, node_conf)
    assert (found.node_file, found.text) == ("", json.dumps(BRIDGE))


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"type": "bridge"}), '"cniVersion" is missing'),
        (json.dumps({**BRIDGE, "type": "/usr/bin/evil"}), "not a plain plugin file name"),
    ],
)
def test_a_broken_config_names_the_nad_and_the_problem(config: str, why: str) -> None:
    with pytest.raises(NadError, match="apps/blue has a broken config") as err:
        nad_conflist(nad(config), REF)
    assert why in str(err.value)


def test_the_runtime_carries_the_pod_identity_in_cni_args() -> None:
    rt = attachment_runtime(
        namespace="apps", name="web", uid="u-1", netns="/var/run/netns/x", ifname="net1"
    )
    assert (rt.container_id, rt.netns, rt.ifname) == ("u-1", "/var/run/netns/x", "net1")
    assert list(rt.args) == [
        ("K8S_POD_NAMESPACE", "apps"),
        ("K8S_POD_NAME", "web"),
        ("K8S_POD_INFRA_CONTAINER_ID", "u-1"),
        ("K8S_POD_UID", "u-1"),
    ]
    assert rt.capability_args == {} and rt.cni_args is None


def test_the_selection_adds_its_capability_args_and_cni_args() -> None:
    (sel,) = parse_networks(
        json.dumps(
            [
                {
                    "name": "blue",
                    "interface": "net1",
                    "ips": ["10.1.0.5/24"],
                    "mac": "02:00:00:00:00:05",
                    "cni-args": {"foo": "bar"},
                }
            ]
        )
    )
    rt = attachment_runtime(
        namespace="apps", name="web", uid="u-1", netns="n", ifname="net1", selection=sel
    )
    assert rt.capability_args == {"ips": ["10.1.0.5/24"], "mac": "02:00:00:00:00:05"}
    assert rt.cni_args == {"foo": "bar"}


def test_a_given_container_id_is_also_the_infra_container() -> None:
    rt = attachment_runtime(
        namespace="a", name="b", uid="u-1", netns="n", ifname="eth0", container_id="sandbox-9"
    )
    assert rt.container_id == "sandbox-9"
    assert ("K8S_POD_INFRA_CONTAINER_ID", "sandbox-9") in rt.args
    assert ("K8S_POD_UID", "u-1") in rt.args


def record(**fields: Any) -> AttachmentRecord:
    base: dict[str, Any] = {
        "pod_uid": "u-1",
        "pod_namespace": "apps",
        "pod_name": "web",
        "network": "apps/blue",
        "interface": "net1",
    }
    return AttachmentRecord(**{**base, **fields})


def test_a_del_uses_the_recorded_config_and_selection_not_the_nad_of_today() -> None:
    recorded = load_conflist(json.dumps(BRIDGE), fallback_name="blue")
    (sel,) = parse_networks('[{"name": "blue", "interface": "net1", "ips": ["10.1.0.5/24"]}]')
    rec = record(conflist=recorded.to_dict(), selection=sel.to_json())
    invocation = recorded_invocation(rec, "")
    assert invocation is not None
    conflist, rt = invocation
    assert conflist == recorded
    assert (rt.container_id, rt.netns, rt.ifname) == ("u-1", "", "net1")
    assert rt.capability_args == {"ips": ["10.1.0.5/24"]}
    assert ("K8S_POD_NAME", "web") in rt.args


def test_a_record_without_config_has_nothing_to_delete() -> None:
    assert recorded_invocation(record(), "/var/run/netns/x") is None


def test_an_unreadable_recorded_selection_deletes_without_capability_args() -> None:
    assert recorded_selection({}) is None
    assert recorded_selection({"name": "blue", "mac": "not a mac"}) is None
