"""The attachment records' data: what the agent keeps per attachment and per pod (pure).

:class:`AttachmentRecord` and :class:`PodMeta` with their JSON form and the
checks that keep a file name safe to build from them. Reading and writing them
on the node, crash-safely, is :mod:`netshift.records`; this module does no
I/O, so the pure modules (the agent's outcomes and report, the CNI invocation
built from a record) can name the record without depending on the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, cast

__all__ = [
    "RECORD_VERSION",
    "STATES",
    "AttachmentRecord",
    "PodMeta",
    "State",
    "check_ifname",
    "check_uid",
]

RECORD_VERSION = 1

State = Literal["Attaching", "Attached", "Detaching", "Failed"]
STATES: tuple[State, ...] = ("Attaching", "Attached", "Detaching", "Failed")


def check_uid(uid: str) -> str:
    """The pod UID, if it can name a directory of the store; else ValueError."""
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


def check_ifname(ifname: str) -> str:
    """The interface name, if Linux accepts it (it names a record file); else ValueError."""
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
        check_uid(self.pod_uid)
        check_ifname(self.interface)
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
        check_uid(self.pod_uid)

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
