"""The crash-safe store of the attachment records on the node.

The records themselves (:class:`AttachmentRecord`, :class:`PodMeta`) are data,
defined in :mod:`netshift.attachments` and re-exported here; this module reads
and writes them. A record holds what the agent needs to undo an attachment without any outside
help: the exact CNI config used for ADD, its result, the sandbox and netns. It
is written *before* the CNI ADD (state ``Attaching``) and removed only after a
successful DEL, so a crash, a changed or deleted NAD, or a vanished pod never
leaks an IPAM address.

Layout under the store directory (default ``/var/lib/netshift/records``)::

    <dir>/<pod_uid>/<ifname>.json    one AttachmentRecord per attachment
    <dir>/<pod_uid>/pod.meta         PodMeta (JSON): namespace, name, netns, sandbox,
                                     and the default-route switches whose source
                                     routes are still installed; its name does not
                                     end in .json, so no interface name can clash
    <dir>/<pod_uid>/.<file>.<pid>.<hex>.tmp   a write in progress, or left by a crash

Every write goes to a temporary file in the same directory, which is fsynced
and renamed over the target (atomic): a file holds the old or the new content,
never a mix. A write that creates a new name (above all the ``Attaching`` record,
written before the ADD it guards) is followed by an fsync of the directory, so
that the entry is durable before the caller goes on. Replacing an existing file
skips that second fsync: were the rename lost in a crash, the file would hold its
previous version, and every version of a record is a state the agent could have
crashed in (the record is still there, with the config the ADD used), so nothing
is leaked or forgotten; an ext4 journal commits the rename with the next fsync
anyway. Deletions fsync the directory as before. Temporary files left by an
earlier process are deleted when a pod directory is scanned. A file that still
cannot be parsed (disk damage, hand edits) is logged, listed by
:meth:`RecordStore.corrupt` and skipped by the listings; :meth:`RecordStore.get`
raises :class:`CorruptRecord` for it, because treating it as absent could lead
to a second ADD.

Files carry a ``version``; unknown keys (written by a newer agent) are kept in
``extra`` and written back unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# The data lives in netshift.attachments (pure); the store's API speaks it.
from netshift.attachments import (
    RECORD_VERSION,
    STATES,
    AttachmentRecord,
    PodMeta,
    State,
    check_ifname,
    check_uid,
)

__all__ = [
    "DEFAULT_DIR",
    "RECORD_VERSION",
    "STATES",
    "AttachmentRecord",
    "CorruptFile",
    "CorruptRecord",
    "PodMeta",
    "RecordStore",
    "State",
]

log = logging.getLogger(__name__)

DEFAULT_DIR = "/var/lib/netshift/records"
RECORD_SUFFIX = ".json"
POD_META = "pod.meta"
TMP_SUFFIX = ".tmp"
# A temporary file of this process younger than this may be a write in flight.
STALE_TMP_SECONDS = 600.0


class CorruptRecord(ValueError):
    """A record file exists but cannot be read as a record."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class CorruptFile:
    path: Path
    pod_uid: str
    interface: str  # "" for the pod meta file
    reason: str


def _encode(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_stale_tmp(path: Path, now: float) -> bool:
    # ".<file>.<pid>.<hex>.tmp": another pid is a crashed earlier process.
    parts = path.name[: -len(TMP_SUFFIX)].rsplit(".", 2)
    own = len(parts) == 3 and parts[1] == str(os.getpid())
    if not own:
        return True
    try:
        return now - path.stat().st_mtime > STALE_TMP_SECONDS
    except FileNotFoundError:
        return False


class RecordStore:
    """Attachment records and pod metadata in a directory tree; see the module doc.

    Safe for concurrent use by threads working on different pods; writes to one
    pod should come from one thread at a time (the agent serializes per pod).
    """

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_DIR) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._reported: set[tuple[Path, float]] = set()
        self._lock = threading.Lock()

    # --- paths ----------------------------------------------------------------------

    def _pod_dir(self, pod_uid: str) -> Path:
        return self.root / check_uid(pod_uid)

    def _record_path(self, pod_uid: str, ifname: str) -> Path:
        return self._pod_dir(pod_uid) / (check_ifname(ifname) + RECORD_SUFFIX)

    # --- writing --------------------------------------------------------------------

    def _ensure_pod_dir(self, pod_uid: str) -> Path:
        pod_dir = self._pod_dir(pod_uid)
        try:
            pod_dir.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            return pod_dir
        _fsync_dir(self.root)  # make the new directory entry itself durable
        return pod_dir

    def _write(self, pod_uid: str, name: str, data: Mapping[str, Any]) -> None:
        payload = _encode(data)  # fails before anything touches the disk
        for attempt in range(3):
            pod_dir = self._ensure_pod_dir(pod_uid)
            target = pod_dir / name
            tmp = pod_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue  # delete_pod removed the directory just now; make it again
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
                replacing = target.exists()
                os.replace(tmp, target)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            if not replacing:
                _fsync_dir(pod_dir)  # a new name: durable before the caller acts on it
            return

    def put(self, record: AttachmentRecord) -> AttachmentRecord:
        """Store `record` (replacing the one for its pod and interface); return it as stored."""
        now = time.time()
        stored = replace(record, created_at=record.created_at or now, updated_at=now)
        self._write(stored.pod_uid, stored.interface + RECORD_SUFFIX, stored.to_json())
        return stored

    def put_pod_meta(self, meta: PodMeta) -> PodMeta:
        stored = replace(meta, updated_at=time.time())
        self._write(stored.pod_uid, POD_META, stored.to_json())
        return stored

    # --- reading --------------------------------------------------------------------

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        """The file's JSON object; FileNotFoundError, or CorruptRecord when unreadable."""
        raw = path.read_bytes()
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CorruptRecord(path, f"not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise CorruptRecord(path, "not a JSON object")
        return data

    def _read_record(self, path: Path, pod_uid: str) -> AttachmentRecord:
        data = self._load(path)
        try:
            record = AttachmentRecord.from_json(data)
        except ValueError as err:
            raise CorruptRecord(path, str(err)) from None
        ifname = path.name[: -len(RECORD_SUFFIX)]
        if (record.pod_uid, record.interface) != (pod_uid, ifname):
            raise CorruptRecord(
                path, f"holds {record.pod_uid}/{record.interface}, not {pod_uid}/{ifname}"
            )
        return record

    def get(self, pod_uid: str, ifname: str) -> AttachmentRecord | None:
        """The record, None if there is none; CorruptRecord if its file is unreadable."""
        try:
            return self._read_record(self._record_path(pod_uid, ifname), pod_uid)
        except FileNotFoundError:
            return None

    def get_pod_meta(self, pod_uid: str) -> PodMeta | None:
        path = self._pod_dir(pod_uid) / POD_META
        try:
            data = self._load(path)
        except FileNotFoundError:
            return None
        try:
            meta = PodMeta.from_json(data)
        except ValueError as err:
            raise CorruptRecord(path, str(err)) from None
        if meta.pod_uid != pod_uid:
            raise CorruptRecord(path, f"holds pod {meta.pod_uid}, not {pod_uid}")
        return meta

    def _scan(self, pod_uid: str) -> Iterator[tuple[Path, AttachmentRecord | CorruptRecord]]:
        """Each record file of the pod, parsed or with its error; stale temp files go."""
        pod_dir = self._pod_dir(pod_uid)
        try:
            entries = sorted(os.scandir(pod_dir), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time()
        for entry in entries:
            path = Path(entry.path)
            if entry.name.endswith(TMP_SUFFIX):
                if _is_stale_tmp(path, now):
                    log.info("removing temporary file left by a crash: %s", path)
                    with suppress(FileNotFoundError):
                        path.unlink()
                continue
            if not entry.name.endswith(RECORD_SUFFIX) or not entry.is_file():
                continue
            try:
                yield path, self._read_record(path, pod_uid)
            except FileNotFoundError:
                continue  # deleted while we looked
            except CorruptRecord as err:
                yield path, err

    def _report(self, err: CorruptRecord) -> None:
        try:
            key = (err.path, err.path.stat().st_mtime)
        except FileNotFoundError:
            return
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        log.error("unreadable attachment record %s: %s", err.path, err.reason)

    def list_pod(self, pod_uid: str) -> list[AttachmentRecord]:
        """The pod's readable records, by interface name; unreadable ones are logged."""
        found: list[AttachmentRecord] = []
        for _, item in self._scan(pod_uid):
            if isinstance(item, CorruptRecord):
                self._report(item)
            else:
                found.append(item)
        return found

    def pods(self) -> list[str]:
        """UIDs of the pods that have a directory (records or metadata)."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))

    def list_all(self) -> list[AttachmentRecord]:
        """Every readable record, by pod and interface; unreadable ones are logged."""
        return [record for uid in self.pods() for record in self.list_pod(uid)]

    def corrupt(self) -> list[CorruptFile]:
        """Every record or pod meta file that exists but cannot be read."""
        found: list[CorruptFile] = []
        for uid in self.pods():
            for path, item in self._scan(uid):
                if isinstance(item, CorruptRecord):
                    ifname = path.name[: -len(RECORD_SUFFIX)]
                    found.append(CorruptFile(path, uid, ifname, item.reason))
            try:
                self.get_pod_meta(uid)
            except CorruptRecord as err:
                found.append(CorruptFile(err.path, uid, "", err.reason))
        return found

    # --- deleting -------------------------------------------------------------------

    def delete(self, pod_uid: str, ifname: str) -> bool:
        """Remove one record (readable or not); False when there was none."""
        path = self._record_path(pod_uid, ifname)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def delete_pod(self, pod_uid: str) -> bool:
        """Remove the pod's directory with its metadata, once it holds no record.

        Returns False, and removes nothing, while any attachment record (readable
        or not) remains: a record goes only with :meth:`delete`, after its DEL.
        True when the directory is gone (or never existed).
        """
        pod_dir = self._pod_dir(pod_uid)
        if any(True for _ in self._scan(pod_uid)):
            return False
        with suppress(FileNotFoundError):
            (pod_dir / POD_META).unlink()
        try:
            pod_dir.rmdir()
        except FileNotFoundError:
            return True
        except OSError as err:  # a write started meanwhile, or foreign files
            log.warning("pod directory %s not removed: %s", pod_dir, err)
            return False
        _fsync_dir(self.root)
        return True
