"""A minimal CRI client: the two RuntimeService calls the agent needs, over the runtime's socket.

``ListPodSandbox`` (filtered by a label and the READY state) and
``PodSandboxStatus`` (verbose), on one long-lived gRPC channel. The few
protobuf messages involved (k8s.io/cri-api, ``runtime.v1``) are encoded and
decoded here on the wire: a handful of string, varint, map and sub-message
fields, so neither generated stubs nor the protobuf runtime are needed. Field
numbers are those of cri-api's ``api.proto`` (stable across v1 releases); fields
this module does not know are skipped, as protobuf requires.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NAMESPACE_NODE",
    "SANDBOX_READY",
    "CriClient",
    "CriError",
    "SandboxInfo",
    "SandboxStatus",
    "decode_list_pod_sandbox_response",
    "decode_pod_sandbox_status_response",
    "encode_list_pod_sandbox_request",
    "encode_pod_sandbox_status_request",
]

_SERVICE = "/runtime.v1.RuntimeService/"
SANDBOX_READY = 0
NAMESPACE_NODE = 2  # NamespaceMode NODE: the sandbox shares the host's namespace


class CriError(Exception):
    """A CRI call failed; ``code`` is the gRPC status code's name (e.g. UNAVAILABLE)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


# -- protobuf wire format (the subset used here) -----------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(payload)) + payload


def _str_field(number: int, text: str) -> bytes:
    return _len_field(number, text.encode()) if text else b""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CriError("truncated protobuf message (varint)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CriError("malformed protobuf varint")


def _fields(data: bytes) -> dict[int, list[int | bytes]]:
    """Field number -> its values in order (varints as int, length-delimited as bytes)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise CriError("truncated protobuf message (length-delimited field)")
            value, pos = data[pos : pos + size], pos + size
        elif wire == _I64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == _I32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise CriError(f"unsupported protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _one_bytes(f: Mapping[int, list[int | bytes]], number: int) -> bytes:
    values = [v for v in f.get(number, ()) if isinstance(v, bytes)]
    return values[-1] if values else b""


def _one_str(f: Mapping[int, list[int | bytes]], number: int) -> str:
    return _one_bytes(f, number).decode(errors="replace")


def _one_int(f: Mapping[int, list[int | bytes]], number: int) -> int:
    values = [v for v in f.get(number, ()) if isinstance(v, int)]
    value = values[-1] if values else 0
    return value - (1 << 64) if value >= 1 << 63 else value


def _map(f: Mapping[int, list[int | bytes]], number: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in f.get(number, ()):
        if isinstance(entry, bytes):
            e = _fields(entry)
            out[_one_str(e, 1)] = _one_str(e, 2)
    return out


# -- the messages ------------------------------------------------------------------------------


def encode_list_pod_sandbox_request(labels: Mapping[str, str], ready_only: bool = True) -> bytes:
    """ListPodSandboxRequest{filter: PodSandboxFilter{state?: {state: READY}, label_selector}}."""
    flt = b""
    if ready_only:
        # PodSandboxStateValue{state: SANDBOX_READY}: READY is 0, so the value is an empty
        # message; its presence is what filters.
        flt += _len_field(2, b"")
    for key, value in sorted(labels.items()):
        flt += _len_field(3, _str_field(1, key) + _str_field(2, value))
    return _len_field(1, flt)


@dataclass(frozen=True)
class SandboxInfo:
    """One item of ListPodSandboxResponse."""

    id: str
    uid: str
    name: str
    namespace: str
    attempt: int
    state: int
    created_at: int
    labels: Mapping[str, str]


def decode_list_pod_sandbox_response(data: bytes) -> list[SandboxInfo]:
    items = []
    for raw in _fields(data).get(1, ()):
        if not isinstance(raw, bytes):
            continue
        f = _fields(raw)
        meta = _fields(_one_bytes(f, 2))
        items.append(
            SandboxInfo(
                id=_one_str(f, 1),
                name=_one_str(meta, 1),
                uid=_one_str(meta, 2),
                namespace=_one_str(meta, 3),
                attempt=_one_int(meta, 4),
                state=_one_int(f, 3),
                created_at=_one_int(f, 4),
                labels=_map(f, 5),
            )
        )
    return items


def encode_pod_sandbox_status_request(sandbox_id: str, verbose: bool = True) -> bytes:
    return _str_field(1, sandbox_id) + (_key(2, _VARINT) + _varint(1) if verbose else b"")


@dataclass(frozen=True)
class SandboxStatus:
    """What the agent needs of PodSandboxStatusResponse."""

    id: str
    state: int
    network_mode: int  # NamespaceMode of the sandbox's network namespace (POD = 0, NODE = 2)
    info: Mapping[str, str]

    def netns_path(self) -> str | None:
        """``runtimeSpec.linux.namespaces[type=network].path`` of the verbose info."""
        for text in self.info.values():
            try:
                data: Any = json.loads(text)
                namespaces = data["runtimeSpec"]["linux"]["namespaces"]
            except (ValueError, KeyError, TypeError):
                continue
            if not isinstance(namespaces, list):
                continue
            for ns in namespaces:
                if isinstance(ns, dict) and ns.get("type") == "network":
                    path = ns.get("path")
                    return path if isinstance(path, str) and path else None
        return None


def decode_pod_sandbox_status_response(data: bytes) -> SandboxStatus:
    f = _fields(data)
    status = _fields(_one_bytes(f, 1))
    linux = _fields(_one_bytes(status, 6))
    namespace = _fields(_one_bytes(linux, 1))
    options = _fields(_one_bytes(namespace, 2))
    return SandboxStatus(
        id=_one_str(status, 1),
        state=_one_int(status, 3),
        network_mode=_one_int(options, 1),
        info=_map(f, 2),
    )


# -- the client --------------------------------------------------------------------------------


class CriClient:
    """One gRPC channel to a CRI runtime (``unix:///run/containerd/containerd.sock``)."""

    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        self.endpoint = endpoint if "://" in endpoint else f"unix://{endpoint}"
        if not self.endpoint.startswith("unix://"):
            raise ValueError(f"CRI endpoint {endpoint!r}: only unix:// sockets are supported")
        self.timeout = timeout
        # grpcio is loaded only by an agent that speaks CRI (it costs ~10 MB of memory).
        self._grpc: Any = importlib.import_module("grpc")
        self._channel = self._grpc.insecure_channel(
            self.endpoint,
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                # A restarted runtime is back within a second: reconnect soon, not after
                # gRPC's default backoff (1 s growing to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._list = self._channel.unary_unary(_SERVICE + "ListPodSandbox")
        self._status = self._channel.unary_unary(_SERVICE + "PodSandboxStatus")

    def list_pod_sandboxes(
        self, labels: Mapping[str, str], ready_only: bool = True
    ) -> list[SandboxInfo]:
        raw = self._call(
            "ListPodSandbox", self._list, encode_list_pod_sandbox_request(labels, ready_only)
        )
        return decode_list_pod_sandbox_response(raw)

    def pod_sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        raw = self._call(
            "PodSandboxStatus", self._status, encode_pod_sandbox_status_request(sandbox_id)
        )
        return decode_pod_sandbox_status_response(raw)

    def _call(self, name: str, method: Any, request: bytes) -> bytes:
        try:
            response = method(request, timeout=self.timeout, wait_for_ready=False)
        except self._grpc.RpcError as err:
            code = err.code().name if hasattr(err, "code") else "UNKNOWN"
            details = err.details() if hasattr(err, "details") else str(err)
            raise CriError(
                f"CRI {name} on {self.endpoint} failed: {code}: {details}", code
            ) from None
        if not isinstance(response, bytes):
            raise CriError(f"CRI {name} on {self.endpoint}: unexpected response type")
        return response

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:
        return f"CriClient({self.endpoint!r})"
