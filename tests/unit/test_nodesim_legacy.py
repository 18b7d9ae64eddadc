"""Sandboxes recorded by an earlier node simulator move into the record store (pure: no root)."""

from __future__ import annotations

import json
from pathlib import Path

from netshift.records import RecordStore
from nodesim.legacy import adopt_old_records

CONF = {"cniVersion": "1.0.0", "name": "netshift-cluster", "disableCheck": False, "plugins": []}
RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.244.0.7/24"}]}


def test_sandboxes_of_an_earlier_simulator_move_into_the_record_store(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    old = {
        "namespace": "apps",
        "name": "web",
        "netns": "/var/run/netns/netshift-u-1",
        "attachments": [
            {
                "network": "netshift-cluster",
                "interface": "eth0",
                "conflist": CONF,
                "result": RESULT,
                "default": True,
            },
            {
                "network": "apps/blue",
                "interface": "net1",
                "conflist": {**CONF, "name": "blue"},
                "result": None,
                "default": False,
            },
        ],
    }
    (tmp_path / "u-1.json").write_text(json.dumps(old))
    (tmp_path / "u-2.json").write_text(json.dumps({**old, "name": "db", "attachments": []}))

    assert adopt_old_records(tmp_path, store) == 2

    assert not list(tmp_path.glob("*.json"))
    assert store.pods() == ["u-1", "u-2"]
    meta = store.get_pod_meta("u-2")
    assert meta is not None and (meta.pod_name, meta.netns) == ("db", old["netns"])
    eth0, net1 = store.list_pod("u-1")
    assert (eth0.interface, eth0.state, eth0.is_default, eth0.role) == (
        "eth0",
        "Attached",
        True,
        "default",
    )
    assert eth0.conflist == CONF and eth0.result == RESULT and eth0.container_id == "u-1"
    assert (net1.network, net1.is_default, net1.conflist["name"]) == ("apps/blue", False, "blue")


def test_an_unreadable_old_record_is_left_where_it_is(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    (tmp_path / "u-3.json").write_text("{not json")
    assert adopt_old_records(tmp_path, store) == 0
    assert (tmp_path / "u-3.json").exists() and store.pods() == []
