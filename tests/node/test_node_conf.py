"""A node's conf dir, read for a NAD without spec.config: real files, real plugins, a real netns.

The lookup's rules are unit-tested (tests/unit/test_cni_nodeconf.py); here the
shell reads a real directory (sub-directories, symlinks, files it cannot read),
and the conflist it finds runs with the real bridge and host-local plugins.
Addresses are in 10.99.0.0/16, no bridge is a gateway the host uses, ipMasq off.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from netshift.cni.confdir import NodeConfDir
from netshift.cni.config import RuntimeConf, load_conflist
from netshift.cni.executor import CniExecutor
from netshift.cni.nodeconf import NodeConfError
from netshift.cni.results import result_default_routes, result_ips
from support.builders import unique
from support.netns import host_link_cleanup, host_local_allocations, links_in, netns, netns_path
from support.require import CNI_DIR, needs_node_host


def conflist(name: str, bridge: str, subnet: str, data_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": str(data_dir),
                },
            }
        ],
    }


def subnet() -> str:
    return f"10.99.{secrets.randbelow(200) + 20}.0/24"


@needs_node_host
def test_the_node_file_is_found_by_its_name_and_runs_and_its_del_uses_the_add_config(
    tmp_path: Path,
) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    store, other_store = tmp_path / "ipam", tmp_path / "ipam-rewritten"
    bridge = unique("nsnc")
    # What the lookup must skip: another network first, a directory and a stray file.
    (conf_dir / "10-other.conflist").write_text(
        json.dumps(conflist("other", unique("nsnx"), subnet(), tmp_path / "x"))
    )
    (conf_dir / "15-dir.conf").mkdir()
    (conf_dir / "README").write_text("not a conf file")
    path = conf_dir / "20-whatever-the-file-is-called.conflist"
    path.write_text(json.dumps(conflist("nodenet", bridge, subnet(), store)))

    found = NodeConfDir(str(conf_dir), "n1").lookup("nodenet")
    assert found.path == str(path) and found.conflist.name == "nodenet"
    recorded = found.conflist.to_dict()  # what the agent writes into the attachment record

    cni = CniExecutor([CNI_DIR])
    with netns("nsnc") as ns, host_link_cleanup(bridge):
        rt = RuntimeConf("c-" + secrets.token_hex(4), netns_path(ns), "net1")
        result = cni.add(found.conflist, rt)
        (address,) = result_ips(result, "net1")
        assert links_in(ns)["net1"].addresses == [address]
        assert result_default_routes(result, "net1") == {4: result["ips"][0]["gateway"]}
        assert host_local_allocations(str(store)) == [address.split("/")[0]]

        # The node's file is rewritten (another subnet and store) before the DEL.
        path.write_text(json.dumps(conflist("nodenet", bridge, subnet(), other_store)))
        assert NodeConfDir(str(conf_dir), "n1").lookup("nodenet").conflist.to_dict() != recorded
        cni.delete(load_conflist(recorded), rt, result)
        assert host_local_allocations(str(store)) == []
        assert host_local_allocations(str(other_store)) == []
        assert "net1" not in links_in(ns)


@needs_node_host
def test_a_symlink_to_a_directory_is_a_file_that_cannot_be_read_and_ends_the_lookup(
    tmp_path: Path,
) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", conf_dir / "10-link.conf")
    (conf_dir / "20-nodenet.conflist").write_text(
        json.dumps(conflist("nodenet", "nsncx", subnet(), tmp_path / "s"))
    )
    with pytest.raises(NodeConfError, match=r"10-link.conf on node n1 .* cannot be read"):
        NodeConfDir(str(conf_dir), "n1").lookup("nodenet")


@needs_node_host
def test_a_file_that_is_not_utf8_cannot_be_read_and_a_missing_dir_has_no_networks(
    tmp_path: Path,
) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-bad.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(NodeConfError, match=r"10-bad.json on node n1 .* cannot be read"):
        NodeConfDir(str(conf_dir), "n1").lookup("nodenet")
    with pytest.raises(NodeConfError, match=r"no conf file 'nodenet' on node n1 .*there at all"):
        NodeConfDir(str(tmp_path / "nowhere"), "n1").lookup("nodenet")
