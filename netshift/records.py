"""Crash-safe attachment records on the node.

A record holds what the agent needs to undo an attachment without any outside
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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

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
RECORD_VERSION = 1
RECORD_SUFFIX = ".json"
POD_META = "pod.meta"
TMP_SUFFIX = ".tmp"
# A temporary file of this process younger than this may be a write in flight.
STALE_TMP_SECONDS = 600.0

State = Literal["Attaching", "Attached", "Detaching", "Failed"]
STATES: tuple[State, ...] = ("Attaching", "Attached", "Detaching", "Failed")


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


def _check_uid(uid: str) -> str:
    if (
        not isinstance(uid, str)
        or not uid
        or uid.startswith(".")
        or "/" in uid
        or "\0" in uid
        or len(uid) > 253
    ):
        raise ValueError(f"pod uid {uid!r} cannot name a directory")
    return uid


def _check_ifname(ifname: str) -> str:
    # The kernel's rules (dev_valid_name): 1-15 bytes, not "." or "..", no "/", ":" or space.
    if (
        not isinstance(ifname, str)
        or not 0 < len(ifname.encode()) <= 15
        or ifname in (".", "..")
        or any(c in "/:\0" or c.isspace() for c in ifname)
    ):
        raise ValueError(f"interface name {ifname!r} is not a valid Linux interface name")
    return ifname


_T = TypeVar("_T")


def _typed(data: Mapping[str, Any], key: str, kind: type[_T], default: Any) -> _T:
    value = data.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind in (int, float):
        raise ValueError(f"field {key!r} must be {kind.__name__}, not a boolean")
    if not isinstance(value, kind):
        raise ValueError(f"field {key!r} has type {type(value).__name__}")
    return value


def _required(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {key!r} is missing or not a string")
    return value


def _check_version(data: Mapping[str, Any]) -> None:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version {version!r} is not a positive integer")


@dataclass(frozen=True)
class AttachmentRecord:
    """One attachment of one pod, as the agent last left it.

    Immutable: change it with ``dataclasses.replace`` and store it with
    :meth:`RecordStore.put`, which stamps the times.
    """

    pod_uid: str
    pod_namespace: str
    pod_name: str
    network: str  # "ns/name" of the NetworkAttachmentDefinition
    interface: str
    state: State = "Attaching"
    conflist: dict[str, Any] = field(default_factory=dict)  # the normalized config given to ADD
    result: dict[str, Any] | None = None  # the ADD result
    container_id: str = ""
    netns: str = ""
    selection: dict[str, Any] = field(default_factory=dict)  # the annotation element
    auto_named: bool = False
    is_default: bool = False  # carries the pod's default route now
    created_at: float = 0.0
    updated_at: float = 0.0
    message: str = ""
    attempts: int = 0
    role: str = "secondary"  # secondary | default | previous-default (see agent.plan)
    adopted: bool = False  # attached by someone else (Multus, the runtime); taken over later
    retry_at: float = 0.0  # a Failed attachment is tried again from this time on
    drain_until: float | None = None  # a previous default to be removed at this time
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as read

    def __post_init__(self) -> None:
        _check_uid(self.pod_uid)
        _check_ifname(self.interface)
        if self.state not in STATES:
            raise ValueError(f"state {self.state!r} is not one of {', '.join(STATES)}")

    def to_json(self) -> dict[str, Any]:
        return _stored(self, self.extra)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttachmentRecord:
        """Parse a stored record; ValueError says what is wrong with it."""
        _check_version(data)
        known = {f.name for f in fields(cls)} | {"version"}
        result = data.get("result")
        if result is not None and not isinstance(result, dict):
            raise ValueError("field 'result' must be an object or null")
        return cls(
            pod_uid=_required(data, "pod_uid"),
            pod_namespace=_typed(data, "pod_namespace", str, ""),
            pod_name=_typed(data, "pod_name", str, ""),
            network=_typed(data, "network", str, ""),
            interface=_required(data, "interface"),
            state=cast(State, _typed(data, "state", str, "")),
            conflist=_typed(data, "conflist", dict, {}),
            result=result,
            container_id=_typed(data, "container_id", str, ""),
            netns=_typed(data, "netns", str, ""),
            selection=_typed(data, "selection", dict, {}),
            auto_named=_typed(data, "auto_named", bool, False),
            is_default=_typed(data, "is_default", bool, False),
            created_at=_typed(data, "created_at", float, 0.0),
            updated_at=_typed(data, "updated_at", float, 0.0),
            message=_typed(data, "message", str, ""),
            attempts=_typed(data, "attempts", int, 0),
            role=_typed(data, "role", str, "secondary"),
            adopted=_typed(data, "adopted", bool, False),
            retry_at=_typed(data, "retry_at", float, 0.0),
            drain_until=None
            if data.get("drain_until") is None
            else _typed(data, "drain_until", float, None),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class PodMeta:
    """What the agent keeps about a pod besides its attachments."""

    pod_uid: str
    pod_namespace: str = ""
    pod_name: str = ""
    netns: str = ""
    container_id: str = ""
    # SwitchRecord.to_json() of each default-route switch whose source routes are
    # still installed in the pod (removed once its old interface is detached).
    switches: list[dict[str, Any]] = field(default_factory=list)
    updated_at: float = 0.0
    sandbox_since: float = 0.0  # when the agent first saw sandbox `container_id` (0: unknown)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_uid(self.pod_uid)

    def to_json(self) -> dict[str, Any]:
        return _stored(self, self.extra)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodMeta:
        _check_version(data)
        known = {f.name for f in fields(cls)} | {"version"}
        switches = _typed(data, "switches", list, [])
        if not all(isinstance(s, dict) for s in switches):
            raise ValueError("field 'switches' must be a list of objects")
        return cls(
            pod_uid=_required(data, "pod_uid"),
            pod_namespace=_typed(data, "pod_namespace", str, ""),
            pod_name=_typed(data, "pod_name", str, ""),
            netns=_typed(data, "netns", str, ""),
            container_id=_typed(data, "container_id", str, ""),
            switches=switches,
            updated_at=_typed(data, "updated_at", float, 0.0),
            sandbox_since=_typed(data, "sandbox_since", float, 0.0),
            extra={k: v for k, v in data.items() if k not in known},
        )


def _stored(obj: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A record dataclass as stored: its fields, the fields it did not know (`extra`), a version."""
    data: dict[str, Any] = dict(extra)
    for f in fields(obj):
        if f.name != "extra":
            data[f.name] = getattr(obj, f.name)
    data["version"] = RECORD_VERSION
    return data


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
        return self.root / _check_uid(pod_uid)

    def _record_path(self, pod_uid: str, ifname: str) -> Path:
        return self._pod_dir(pod_uid) / (_check_ifname(ifname) + RECORD_SUFFIX)

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
