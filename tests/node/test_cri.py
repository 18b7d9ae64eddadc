"""The CRI client and resolver: the wire format, a stand-in CRI server, then a real containerd.

The stand-in CRI server (`FakeRuntime`: a grpcio server on a unix socket answering raw
protobuf) checks what is asked and how often; the real containerd (tests/support/cri.py, a
private instance) checks that the messages are what a runtime speaks. The first two parts
need nothing of the machine; the last needs root (a node test).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent import cri
from agent.cri import (
    CriClient,
    decode_list_pod_sandbox_response,
    decode_pod_sandbox_status_response,
    encode_list_pod_sandbox_request,
)
from agent.netns import CriResolver, NetnsError, Sandbox
from support.cri import Containerd, new_uid, private_containerd

UID = "6f1c5b7e-2d3a-4c8b-9e0f-1a2b3c4d5e6f"
OLD = "0" * 64
NEW = "1" * 64


def pod(uid: str = UID, name: str = "web-0") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": "team-a", "name": name}}


# -- encoding by hand, for the stand-in runtime ------------------------------------------------


def _map_entry(number: int, key: str, value: str) -> bytes:
    return cri._len_field(number, cri._str_field(1, key) + cri._str_field(2, value))


def sandbox_item(sid: str, uid: str, state: int, created: int, attempt: int = 0) -> bytes:
    meta = (
        cri._str_field(1, "web-0")
        + cri._str_field(2, uid)
        + cri._str_field(3, "team-a")
        + cri._key(4, 0)
        + cri._varint(attempt)
    )
    return cri._len_field(
        1,
        cri._str_field(1, sid)
        + cri._len_field(2, meta)
        + cri._key(3, 0)
        + cri._varint(state)
        + cri._key(4, 0)
        + cri._varint(created)
        + _map_entry(5, "io.kubernetes.pod.uid", uid)
        + cri._key(99, 0)  # a field this client does not know: skipped
        + cri._varint(7),
    )


def status_response(sid: str, netns: str | None, mode: int = 0) -> bytes:
    spec: dict[str, Any] = {"linux": {"namespaces": [{"type": "pid"}]}}
    if netns is not None:
        spec["linux"]["namespaces"].append({"type": "network", "path": netns})
    options = cri._key(1, 0) + cri._varint(mode)
    linux = cri._len_field(1, cri._len_field(2, options))
    status = cri._str_field(1, sid) + cri._len_field(6, linux)
    return cri._len_field(1, status) + _map_entry(2, "info", json.dumps({"runtimeSpec": spec}))


def test_list_request_filters_by_label_and_ready_state() -> None:
    raw = encode_list_pod_sandbox_request({"io.kubernetes.pod.uid": UID})
    flt = cri._fields(cri._fields(raw)[1][0])  # type: ignore[arg-type]
    assert flt[2] == [b""]  # PodSandboxStateValue{state: SANDBOX_READY (0)}
    entry = cri._fields(flt[3][0])  # type: ignore[arg-type]
    assert entry == {1: [b"io.kubernetes.pod.uid"], 2: [UID.encode()]}
    assert 2 not in cri._fields(cri._fields(encode_list_pod_sandbox_request({}, False))[1][0])  # type: ignore[arg-type]


def test_responses_decode() -> None:
    items = decode_list_pod_sandbox_response(
        sandbox_item(OLD, UID, 1, 5) + sandbox_item(NEW, UID, 0, 1 << 62, attempt=1)
    )
    assert [(i.id, i.uid, i.state, i.attempt, i.created_at) for i in items] == [
        (OLD, UID, 1, 0, 5),
        (NEW, UID, 0, 1, 1 << 62),
    ]
    assert items[1].labels == {"io.kubernetes.pod.uid": UID}
    status = decode_pod_sandbox_status_response(status_response(NEW, "/var/run/netns/cni-1"))
    assert (status.id, status.network_mode, status.netns_path()) == (
        NEW,
        0,
        "/var/run/netns/cni-1",
    )
    host = decode_pod_sandbox_status_response(status_response(NEW, None, mode=2))
    assert (host.network_mode, host.netns_path()) == (cri.NAMESPACE_NODE, None)
    with pytest.raises(cri.CriError, match="truncated"):
        decode_list_pod_sandbox_response(b"\x0a\x05ab")


# -- the stand-in CRI server ------------------------------------------------------------------


class FakeRuntime:
    """The stand-in CRI server: the two RuntimeService calls the resolver makes, answered from
    `sandboxes`, every request kept in `calls`; `fail` makes every call fail with that code."""

    def __init__(self) -> None:
        self.sandboxes: dict[str, tuple[str, int, int, str | None]] = {}  # id -> uid, state, t, ns
        self.calls: list[tuple[str, bytes]] = []
        self.fail: grpc.StatusCode | None = None

    def list(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls.append(("ListPodSandbox", request))
        if self.fail is not None:
            context.abort(self.fail, "runtime is restarting")
        flt = cri._fields(cri._fields(request).get(1, [b""])[0])  # type: ignore[arg-type]
        labels = cri._map(flt, 3)
        out = b""
        for sid, (uid, state, created, _ns) in self.sandboxes.items():
            if labels.get("io.kubernetes.pod.uid", uid) != uid or (2 in flt and state != 0):
                continue
            out += sandbox_item(sid, uid, state, created)
        return out

    def status(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls.append(("PodSandboxStatus", request))
        sid = cri._one_str(cri._fields(request), 1)
        if sid not in self.sandboxes:
            context.abort(grpc.StatusCode.NOT_FOUND, "not found")
        return status_response(sid, self.sandboxes[sid][3])

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[FakeRuntime, str]]:
    fake = FakeRuntime()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "runtime.v1.RuntimeService",
        {
            "ListPodSandbox": grpc.unary_unary_rpc_method_handler(fake.list),
            "PodSandboxStatus": grpc.unary_unary_rpc_method_handler(fake.status),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    sock = str(tmp_path / "cri.sock")
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    yield fake, sock
    server.stop(None)


def test_resolver_asks_once_per_sandbox_and_follows_a_new_one(
    runtime: tuple[FakeRuntime, str], tmp_path: Path
) -> None:
    fake, sock = runtime
    old_ns, new_ns = tmp_path / "cni-old", tmp_path / "cni-new"
    old_ns.touch()
    fake.sandboxes[OLD] = (UID, 0, 1, str(old_ns))
    resolver = CriResolver(sock)
    for _ in range(3):
        assert resolver.resolve(pod()) == Sandbox(OLD, str(old_ns))
    assert (fake.count("ListPodSandbox"), fake.count("PodSandboxStatus")) == (3, 1)
    # Replaced: the old one is not ready, a newer one is.
    new_ns.touch()
    fake.sandboxes[OLD] = (UID, 1, 1, str(old_ns))
    fake.sandboxes[NEW] = (UID, 0, 2, str(new_ns))
    assert resolver.resolve(pod()) == Sandbox(NEW, str(new_ns))
    assert resolver.resolve(pod(new_uid())) is None  # no sandbox for that pod
    assert fake.count("PodSandboxStatus") == 2


def test_resolver_errors_say_what_is_wrong(
    runtime: tuple[FakeRuntime, str], tmp_path: Path
) -> None:
    fake, sock = runtime
    resolver = CriResolver(sock)
    fake.fail = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(NetnsError, match="UNAVAILABLE: runtime is restarting"):
        resolver.resolve(pod())
    fake.fail = None
    # A sandbox being torn down: its netns file went, others are there: no sandbox, no error.
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "cni-other").touch()
    fake.sandboxes[OLD] = (UID, 0, 1, str(tmp_path / "netns" / "cni-gone"))
    assert resolver.resolve(pod()) is None
    # The runtime's netns directory is not visible here at all: then the mount is the cause.
    fake.sandboxes[NEW] = (UID, 0, 2, "/nonexistent-netns-dir/cni-1")
    with pytest.raises(NetnsError, match="mount the host's /var/run/netns"):
        resolver.resolve(pod())
    with pytest.raises(NetnsError, match="UNAVAILABLE"):
        CriResolver(str(tmp_path / "no.sock"), timeout=0.5).resolve(pod())


# -- a real containerd -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with private_containerd() as c:
        yield c


def test_resolver_against_containerd(containerd: Containerd) -> None:
    uid = new_uid()
    first = containerd.runp(uid, "web-0")
    resolver = CriResolver(containerd.endpoint)
    assert resolver.resolve(pod(uid)) == Sandbox(first, containerd.netns(first))
    assert resolver.resolve(pod(new_uid())) is None
    containerd.stopp(first)
    assert resolver.resolve(pod(uid)) is None  # not ready any more
    second = containerd.runp(uid, "web-0", attempt=1)
    found = resolver.resolve(pod(uid))
    assert found == Sandbox(second, containerd.netns(second)) and os.path.exists(found.netns)
    containerd.rmp(first)
    containerd.stopp(second)
    containerd.rmp(second)


def test_the_grpc_resolver_answers_as_crictl_does_and_prints_both_latencies(
    containerd: Containerd,
) -> None:
    """The latencies are printed (pytest -s), never asserted: this machine is shared."""
    uid = new_uid()
    sandbox = containerd.runp(uid, "web-0")
    resolver = CriResolver(containerd.endpoint)

    def crictl_resolve() -> str:
        listing = json.loads(
            containerd.crictl("pods", "--label", f"io.kubernetes.pod.uid={uid}", "-o", "json")
        )
        sid = listing["items"][0]["id"]
        return containerd.netns(sid)

    def timed(fn: Any, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return sorted(out)

    before = timed(crictl_resolve, 20)
    first = timed(lambda: CriResolver(containerd.endpoint).resolve(pod(uid)), 5)
    after = timed(lambda: resolver.resolve(pod(uid)), 200)

    def p(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    print(
        f"\nresolve latency (ms): crictl p50 {p(before, 0.5):.1f} p99 {p(before, 0.99):.1f} | "
        f"gRPC uncached (new channel) p50 {p(first, 0.5):.1f} | "
        f"gRPC cached p50 {p(after, 0.5):.2f} p99 {p(after, 0.99):.2f}"
    )
    found = resolver.resolve(pod(uid))
    assert found is not None and found.netns == crictl_resolve()
    containerd.stopp(sandbox)
    containerd.rmp(sandbox)


def test_resolver_survives_a_runtime_restart(containerd: Containerd) -> None:
    """While containerd is down the error says so; once it is back the channel reconnects at
    once (not after gRPC's default backoff) and the sandbox is the same."""
    uid = new_uid()
    sandbox = containerd.runp(uid, "web-0")
    resolver = CriResolver(containerd.endpoint)
    assert resolver.resolve(pod(uid)) is not None
    assert containerd.proc is not None
    containerd.proc.terminate()
    containerd.proc.wait(timeout=30)
    with pytest.raises(NetnsError, match=r"cannot list the sandboxes.*UNAVAILABLE"):
        resolver.resolve(pod(uid))
    containerd.start()
    deadline = time.monotonic() + 1.0
    while True:
        try:
            found = resolver.resolve(pod(uid))
            break
        except NetnsError:
            assert time.monotonic() < deadline, "no reconnect within 1 s of the runtime's return"
            time.sleep(0.05)
    assert found is not None and found.id == sandbox
    containerd.stopp(sandbox)
    containerd.rmp(sandbox)


def test_client_refuses_tcp_endpoints() -> None:
    with pytest.raises(ValueError, match="unix"):
        CriClient("tcp://127.0.0.1:1234")
