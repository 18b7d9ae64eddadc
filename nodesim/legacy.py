"""Records of an earlier node simulator (one `<uid>.json` per sandbox), moved into the record store.

A cluster brought up before the node simulator kept its sandboxes in the
agent's record format (`netshift.records`) must still release every address
on `netshift down`. Remove this module once no such state directory is left.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from netshift.attachments import AttachmentRecord, PodMeta
from netshift.keys import ATTACHED, DEFAULT, SECONDARY
from netshift.records import RecordStore

log = logging.getLogger("netshift.nodesim")


def adopt_old_records(pods_dir: Path, store: RecordStore) -> int:
    """Move sandboxes recorded by an earlier node simulator (one `<uid>.json` each) into `store`.

    A cluster brought up before the records changed format still releases every
    address on `netshift down`. Returns how many sandboxes moved.
    """
    moved = 0
    for path in sorted(pods_dir.glob("*.json")):
        uid = path.stem
        try:
            old = json.loads(path.read_text())
            ns, name, netns = old["namespace"], old["name"], old["netns"]
            store.put_pod_meta(PodMeta(pod_uid=uid, pod_namespace=ns, pod_name=name, netns=netns))
            for att in old["attachments"]:
                default = bool(att["default"])
                store.put(
                    AttachmentRecord(
                        pod_uid=uid,
                        pod_namespace=ns,
                        pod_name=name,
                        network=att["network"],
                        interface=att["interface"],
                        state=ATTACHED,
                        conflist=att["conflist"],
                        result=att["result"],
                        container_id=uid,
                        netns=netns,
                        is_default=default,
                        role=DEFAULT if default else SECONDARY,
                    )
                )
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("sandbox record %s of an earlier node simulator is unreadable: %s", path, err)
            continue
        path.unlink()
        moved += 1
    return moved
