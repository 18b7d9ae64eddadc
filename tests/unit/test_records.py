"""netshift/records.py: the crash-safe attachment record store, on a real filesystem."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from netshift import records
from netshift.records import AttachmentRecord, CorruptRecord, PodMeta, RecordStore

UID = "0b6f4a0e-5d3c-4f7e-9a51-2c1d6e8f9a10"
OTHER_UID = "7c2e9b14-1f0a-4c53-8d6e-3b4a5c6d7e8f"


def record(uid: str = UID, ifname: str = "net1", **changes: object) -> AttachmentRecord:
    base = AttachmentRecord(
        pod_uid=uid,
        pod_namespace="team-a",
        pod_name="web-0",
        network="team-a/blue",
        interface=ifname,
        state="Attaching",
        conflist={
            "cniVersion": "1.0.0",
            "name": "blue",
            "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}],
        },
        container_id="c0ffee",
        netns="/proc/4242/ns/net",
        selection={"name": "blue", "interface": ifname},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    return RecordStore(tmp_path / "records")


def test_put_then_get_returns_every_field(store: RecordStore) -> None:
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.98.1.5/24"}]}
    rec = record(state="Attached", result=result, auto_named=True, is_default=True, attempts=2)
    rec = replace(rec, message="added by netshift")

    stored = store.put(rec)

    assert store.get(UID, "net1") == stored
    assert stored.created_at > 0 and stored.updated_at == stored.created_at
    assert replace(stored, created_at=0.0, updated_at=0.0) == rec


def test_record_lives_at_uid_slash_ifname_json_with_a_version(store: RecordStore) -> None:
    store.put(record())
    path = store.root / UID / "net1.json"
    data = json.loads(path.read_text())
    assert data["version"] == records.RECORD_VERSION
    assert data["pod_uid"] == UID and data["interface"] == "net1"
    assert path.stat().st_mode & 0o777 == 0o600


def test_update_keeps_created_at_and_moves_updated_at(store: RecordStore) -> None:
    first = store.put(record())
    time.sleep(0.01)
    second = store.put(replace(first, state="Attached"))
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    got = store.get(UID, "net1")
    assert got is not None and got.state == "Attached"


def test_get_of_an_unknown_attachment_is_none(store: RecordStore) -> None:
    assert store.get(UID, "net1") is None


def test_unknown_keys_from_a_newer_agent_survive_a_rewrite(store: RecordStore) -> None:
    path = store.root / UID / "net1.json"
    path.parent.mkdir(parents=True)
    newer = record().to_json() | {"version": 2, "ipam_claim": {"name": "c1"}}
    path.write_text(json.dumps(newer))

    got = store.get(UID, "net1")
    assert got is not None
    assert got.extra == {"ipam_claim": {"name": "c1"}}
    store.put(replace(got, state="Attached"))

    data = json.loads(path.read_text())
    assert data["ipam_claim"] == {"name": "c1"}
    assert data["state"] == "Attached"


def test_listings_are_sorted_by_pod_and_interface(store: RecordStore) -> None:
    for uid, ifname in ((OTHER_UID, "net2"), (UID, "net2"), (OTHER_UID, "eth0"), (UID, "net1")):
        store.put(record(uid, ifname))
    assert [r.interface for r in store.list_pod(UID)] == ["net1", "net2"]
    assert store.pods() == sorted([UID, OTHER_UID])
    assert [(r.pod_uid, r.interface) for r in store.list_all()] == [
        (UID, "net1"),
        (UID, "net2"),
        (OTHER_UID, "eth0"),
        (OTHER_UID, "net2"),
    ]
    assert store.list_pod("no-such-pod") == []


def test_delete_removes_one_record(store: RecordStore) -> None:
    store.put(record(ifname="net1"))
    store.put(record(ifname="net2"))
    assert store.delete(UID, "net1") is True
    assert store.get(UID, "net1") is None
    assert [r.interface for r in store.list_pod(UID)] == ["net2"]
    assert store.delete(UID, "net1") is False


def test_delete_pod_waits_until_every_record_is_gone(store: RecordStore) -> None:
    store.put(record(ifname="net1"))
    store.put_pod_meta(PodMeta(pod_uid=UID, pod_namespace="team-a", pod_name="web-0"))

    assert store.delete_pod(UID) is False  # a record left means a DEL still to do
    assert store.get(UID, "net1") is not None and store.get_pod_meta(UID) is not None

    store.delete(UID, "net1")
    assert store.delete_pod(UID) is True
    assert not (store.root / UID).exists()
    assert store.pods() == []
    assert store.delete_pod(UID) is True  # already gone


def test_pod_meta_round_trip_with_a_switch_record(store: RecordStore) -> None:
    switch = {
        "table": 100,
        "old_ifname": "eth0",
        "new_ifname": "net1",
        "rules": [{"src": "10.98.1.2/32", "table": 100, "priority": 1000}],
        "routes": [],
        "defaults": [],
    }
    meta = PodMeta(
        pod_uid=UID,
        pod_namespace="team-a",
        pod_name="web-0",
        netns="/proc/1/ns/net",
        switches=[switch],
    )

    stored = store.put_pod_meta(meta)

    assert store.get_pod_meta(UID) == stored
    assert stored.switches == [switch]
    assert (store.root / UID / "pod.meta").is_file()
    assert store.list_pod(UID) == []  # meta is not an attachment
    assert store.get_pod_meta(OTHER_UID) is None


def test_pod_meta_file_cannot_clash_with_an_interface_name(store: RecordStore) -> None:
    store.put(record(ifname="pod.meta"))  # a valid interface name
    store.put_pod_meta(PodMeta(pod_uid=UID, pod_name="web-0"))
    assert [r.interface for r in store.list_pod(UID)] == ["pod.meta"]
    meta = store.get_pod_meta(UID)
    assert meta is not None and meta.pod_name == "web-0"


@pytest.mark.parametrize("ifname", ["", "../x", "a/b", "eth 0", "eth:1", ".", "x" * 16])
def test_invalid_interface_names_are_refused(store: RecordStore, ifname: str) -> None:
    with pytest.raises(ValueError, match="interface name"):
        record(ifname=ifname)
    with pytest.raises(ValueError):
        store.get(UID, ifname)


@pytest.mark.parametrize("uid", ["", "..", ".hidden", "a/b"])
def test_invalid_pod_uids_are_refused(store: RecordStore, uid: str) -> None:
    with pytest.raises(ValueError, match="pod uid"):
        store.list_pod(uid)


def test_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="Attaching, Attached, Detaching, Failed"):
        record(state="Pending")


# --- crashes and damage ---------------------------------------------------------------


def write_damage(store: RecordStore) -> tuple[Path, Path]:
    """A truncated record and a temporary file as a process killed mid-write leaves them."""
    pod_dir = store.root / UID
    truncated = pod_dir / "net2.json"
    truncated.write_bytes(json.dumps(record(ifname="net2").to_json()).encode()[:57])
    stale = pod_dir / ".net3.json.999999.deadbeef.tmp"
    stale.write_text('{"pod_uid": ')
    return truncated, stale


def test_damaged_files_never_hide_the_good_records(
    store: RecordStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.put(record(ifname="net1"))
    store.put(record(OTHER_UID, "net1"))
    truncated, stale = write_damage(store)

    with caplog.at_level(logging.ERROR, logger="netshift.records"):
        listed = [(r.pod_uid, r.interface) for r in store.list_all()]
        store.list_all()

    assert listed == [(UID, "net1"), (OTHER_UID, "net1")]
    assert not stale.exists()  # left by another (dead) process: cleaned up
    [bad] = store.corrupt()
    assert (bad.path, bad.pod_uid, bad.interface) == (truncated, UID, "net2")
    assert "not valid JSON" in bad.reason
    assert [r.getMessage() for r in caplog.records if "net2.json" in r.getMessage()] == [
        f"unreadable attachment record {truncated}: {bad.reason}"
    ]  # reported once, not on every scan
    with pytest.raises(CorruptRecord, match=r"net2\.json"):
        store.get(UID, "net2")


def test_a_damaged_record_can_be_deleted_and_then_the_pod(store: RecordStore) -> None:
    (store.root / UID).mkdir()
    truncated, _ = write_damage(store)
    assert store.delete_pod(UID) is False
    assert store.delete(UID, "net2") is True
    assert not truncated.exists()
    assert store.delete_pod(UID) is True


GOOD = {"version": 1, "pod_uid": UID, "interface": "net1", "state": "Attached"}


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        ({**GOOD, "version": None}, "version"),
        ({**GOOD, "state": "Gone"}, "state"),
        ({**GOOD, "attempts": "3"}, "attempts"),
        ({**GOOD, "is_default": 1}, "is_default"),
        ({**GOOD, "result": [1]}, "result"),
        ({**GOOD, "interface": "eth0"}, f"not {UID}/net1"),
    ],
)
def test_malformed_records_are_reported_as_corrupt(
    store: RecordStore, content: bytes | dict[str, object], reason: str
) -> None:
    path = store.root / UID / "net1.json"
    path.parent.mkdir()
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    assert store.list_pod(UID) == []
    [bad] = store.corrupt()
    assert reason in bad.reason
    with pytest.raises(CorruptRecord):
        store.get(UID, "net1")


def test_a_fresh_temporary_file_of_this_process_is_left_alone(store: RecordStore) -> None:
    store.put(record())
    in_flight = store.root / UID / f".net2.json.{os.getpid()}.cafe0001.tmp"
    in_flight.write_text("{")
    store.list_all()
    assert in_flight.exists()


def test_a_failed_write_keeps_the_previous_record(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put(record(state="Attached"))

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        store.put(record(state="Detaching"))
    monkeypatch.undo()

    got = store.get(UID, "net1")
    assert got is not None and got.state == "Attached"
    assert sorted(p.name for p in (store.root / UID).iterdir()) == ["net1.json"]


def test_a_value_that_is_not_json_fails_before_touching_the_disk(store: RecordStore) -> None:
    store.put(record())
    with pytest.raises(ValueError):
        store.put(record(conflist={"mtu": float("nan")}))
    got = store.get(UID, "net1")
    assert got is not None and got.conflist == record().conflist


def test_a_writer_killed_at_a_random_moment_leaves_only_whole_records(tmp_path: Path) -> None:
    root = tmp_path / "records"
    writer = textwrap.dedent(
        f"""
        import sys
        from dataclasses import replace
        from netshift.records import AttachmentRecord, RecordStore
        store = RecordStore({str(root)!r})
        base = AttachmentRecord(pod_uid="p", pod_namespace="ns", pod_name="n",
                                network="ns/blue", interface="net1",
                                conflist={{"pad": "x" * 200_000}})
        n = 0
        while True:
            for ifname in ("net1", "net2", "net3"):
                store.put(replace(base, interface=ifname, attempts=n))
            n += 1
            if n == 3:
                print("ready", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    store = RecordStore(root)
    assert [r.interface for r in store.list_pod("p")] == ["net1", "net2", "net3"]
    assert store.corrupt() == []
    assert [p.name for p in (root / "p").iterdir() if p.name.endswith(".tmp")] == []


# --- concurrency ----------------------------------------------------------------------


def test_concurrent_writers_to_different_pods(store: RecordStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        uid = f"pod-{n:02d}"
        try:
            for round_ in range(10):
                for ifname in ("net1", "net2", "net3"):
                    rec = store.get(uid, ifname) or record(uid, ifname)
                    store.put(replace(rec, attempts=round_, state="Attached"))
                    store.list_all()  # readers see whole files only
            store.put_pod_meta(PodMeta(pod_uid=uid, pod_name=f"web-{n}"))
            store.delete(uid, "net3")
        except BaseException as err:
            errors.append(err)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    assert errors == []
    assert store.corrupt() == []
    everything = store.list_all()
    assert len(everything) == 12 * 2
    assert {(r.attempts, r.state) for r in everything} == {(9, "Attached")}
    assert store.pods() == [f"pod-{n:02d}" for n in range(12)]
    assert all(store.get_pod_meta(uid) is not None for uid in store.pods())
    assert not [p for p in store.root.rglob("*.tmp")]
