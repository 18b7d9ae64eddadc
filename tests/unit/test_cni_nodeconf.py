"""A NAD without spec.config: the node's conf file of that name, found as Multus finds it (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netshift.cni.nodeconf import NodeConfError, conf_file_names, find_node_conf


def conflist(name: str, **plugin: Any) -> str:
    return json.dumps(
        {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "bridge", **plugin}]}
    )


def conf(name: str, **fields: Any) -> str:
    return json.dumps({"cniVersion": "1.0.0", "name": name, "type": "bridge", **fields})


def test_only_conf_json_and_conflist_files_count_in_lexical_order() -> None:
    names = ["b.conflist", "a.conf", "c.json", "00-x.CONF", "notes.txt", "d.conflist.bak", "x"]
    assert conf_file_names(names) == ["a.conf", "b.conflist", "c.json"]


def test_the_name_inside_the_file_matches_not_the_file_name() -> None:
    files = [
        ("/d/10-nodenet.conflist", conflist("other")),
        ("/d/20-anything.conflist", conflist("nodenet", bridge="br-node")),
    ]
    found = find_node_conf("nodenet", files)
    assert found.path == "/d/20-anything.conflist"
    assert found.conflist.name == "nodenet"
    assert found.conflist.plugins[0]["bridge"] == "br-node"
    assert found.text == files[1][1]  # as written: what the NAD policy judges


def test_the_first_match_wins_and_nothing_after_it_is_read() -> None:
    def files() -> Any:
        yield "/d/10-a.conf", conf("nodenet", bridge="first")
        raise AssertionError("a file after the match was read")

    assert find_node_conf("nodenet", files()).conflist.plugins[0]["bridge"] == "first"


def test_a_single_plugin_conf_becomes_a_list() -> None:
    found = find_node_conf("nodenet", [("/d/a.json", conf("nodenet"))])
    assert found.conflist.types == ("bridge",)


def test_no_file_of_that_name_says_which_node_and_dir() -> None:
    with pytest.raises(NodeConfError) as err:
        find_node_conf(
            "nodenet", [("/d/a.conf", conf("other"))], node="n1", conf_dir="/etc/cni/multus/net.d"
        )
    assert str(err.value) == (
        "no conf file 'nodenet' on node n1 (/etc/cni/multus/net.d): no .conf, .json or "
        '.conflist file has "name": "nodenet" (1 conf file(s) there)'
    )


def test_an_empty_or_missing_dir_has_no_network() -> None:
    with pytest.raises(NodeConfError, match=r"no conf file 'x' on node n1 .*no conf file there"):
        find_node_conf("x", [], node="n1", conf_dir="/nowhere")


@pytest.mark.parametrize(
    ("path", "content", "why"),
    [
        ("/d/00.conf", "{not json", "is not valid JSON"),
        ("/d/00.conf", "[1]", "is not a JSON object"),
        ("/d/00.conf", json.dumps({"name": "zzz", "cniVersion": "1.0.0"}), 'has no "type"'),
        ("/d/00.conflist", json.dumps({"cniVersion": "1.0.0", "plugins": []}), 'no "name"'),
        ("/d/00.conflist", json.dumps({"name": "zzz", "plugins": []}), 'no "plugins" list'),
        ("/d/00.conflist", json.dumps({"name": "zzz", "plugins": [{}]}), 'plugin 0 without "type"'),
    ],
)
def test_a_broken_file_before_the_match_ends_the_lookup_as_in_multus(
    path: str, content: str, why: str
) -> None:
    files = [(path, content), ("/d/99.conflist", conflist("nodenet"))]
    with pytest.raises(NodeConfError, match=why) as err:
        find_node_conf("nodenet", files, node="n1")
    assert str(err.value).startswith(f"conf file {path} on node n1")
    assert str(err.value).endswith("Multus stops at it too")


def test_a_file_that_cannot_be_read_ends_the_lookup() -> None:
    files = [("/d/00.conf", PermissionError(13, "Permission denied"))]
    with pytest.raises(NodeConfError, match=r"conf file /d/00.conf on .* cannot be read"):
        find_node_conf("nodenet", files)


def test_a_broken_file_after_the_match_does_not_matter() -> None:
    files = [("/d/10.conflist", conflist("nodenet")), ("/d/20.conf", "{not json")]
    assert find_node_conf("nodenet", files).path == "/d/10.conflist"


def test_the_matching_file_must_be_a_config_netshift_can_run() -> None:
    text = json.dumps({"name": "nodenet", "plugins": [{"type": "bridge"}]})  # no cniVersion
    with pytest.raises(NodeConfError, match=r'conf file /d/a.conflist on .*: .*"cniVersion"'):
        find_node_conf("nodenet", [("/d/a.conflist", text)])
    text = conflist("nodenet", type="../../bin/sh")
    with pytest.raises(NodeConfError, match="not a plain plugin file name"):
        find_node_conf("nodenet", [("/d/a.conflist", text)])
