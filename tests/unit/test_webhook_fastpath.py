"""The admission fast path answers exactly as the plain path: parsing and the policy memo."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from localcluster.samples import deployment_pod, pod_review
from netshift.keys import NETWORKS_KEY
from netshift.policy import apply_profile, profile_from_object, resolve
from webhook.admission import MalformedReview, parse_review
from webhook.fastpath import PolicyMemo, loads, parse_request


def _review() -> dict[str, Any]:
    return pod_review(deployment_pod(), namespace="team-a", uid="u-1")


def _variants() -> list[Any]:
    good = _review()
    out: list[Any] = [good, [1], None, {}, {"apiVersion": "admission.k8s.io/v1"}]
    for path, value in [
        (("request", "uid"), ""),
        (("request", "uid"), 5),
        (("request", "kind"), "Pod"),
        (("request", "kind", "kind"), 7),
        (("request", "resource"), None),
        (("request", "operation"), None),
        (("request", "namespace"), ["x"]),
        (("request", "object"), "pod"),
        (("request", "oldObject"), 3),
        (("request", "dryRun"), "true"),
        (("request", "dryRun"), "maybe"),
        (("request", "subResource"), "status"),
        (("request",), None),
        (("apiVersion",), "admission.k8s.io/v1beta1"),
        (("kind",), "Review"),
    ]:
        review = copy.deepcopy(good)
        node = review
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        out.append(review)
    missing = copy.deepcopy(good)
    del missing["request"]["kind"]
    out.append(missing)
    return out


@pytest.mark.parametrize("data", _variants())
def test_parse_request_matches_pydantic(data: Any) -> None:
    try:
        expected = parse_review(data).request
    except MalformedReview as err:
        with pytest.raises(MalformedReview) as got:
            parse_request(data)
        assert str(got.value) == str(err)
        return
    assert parse_request(data) == expected


def test_loads_rejects_what_is_not_json() -> None:
    for body in (b"not json", b"[" * 100000 + b"]" * 100000):
        with pytest.raises(MalformedReview, match="not JSON"):
            loads(body)


def _profile(name: str, default: str, tier: str) -> Any:
    return profile_from_object(
        {
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {"matchLabels": {"tier": tier}},
                "defaultNetwork": default,
                "networks": [{"name": "storage", "namespace": "infra"}],
            },
        }
    )


def test_memo_follows_label_and_profile_changes() -> None:
    memo = PolicyMemo()
    blue = [_profile("blue", "infra/blue", "a")]
    assert memo.resolve("ns", {"tier": "a"}, blue).winner is blue[0]
    assert memo.resolve("ns", {"tier": "b"}, blue).winner is None  # labels changed
    # a NetworkProfile event gives new Profile objects, even in the same list
    blue[0] = _profile("blue", "infra/green", "b")
    assert memo.resolve("ns", {"tier": "b"}, blue).winner is blue[0]
    assert memo.resolve("ns", {"tier": "b"}, []).winner is None


def test_memo_apply_equals_apply_profile_and_is_not_shared() -> None:
    memo = PolicyMemo()
    profile = _profile("blue", "infra/blue", "a")
    for pod_annotations in ({}, {NETWORKS_KEY: "own@x"}, {NETWORKS_KEY: "own@x", "other": "1"}):
        for _ in range(2):
            got = memo.apply(pod_annotations, "ns", profile)
            assert got == apply_profile(pod_annotations, "ns", profile)
            got.clear()  # a caller's copy
    other = _profile("blue", "infra/other", "a")
    assert memo.apply({}, "ns", other) == apply_profile({}, "ns", other)
    assert resolve({"tier": "a"}, [profile]).winner is profile


def test_a_request_head_incomplete_past_the_cap_is_refused() -> None:
    import socket

    from fastapi import FastAPI

    from webhook.server import MAX_HEADER_BYTES, _config, _Server, bind

    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, bool]:
        return {"ok": True}

    sock = bind("127.0.0.1", 0)
    server = _Server(_config(app, None))
    import asyncio
    import threading

    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.02)
        port = sock.getsockname()[1]

        def ask(extra: bytes, end: bytes = b"Connection: close\r\n\r\n") -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n" + extra + end)
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
                return data

        assert ask(b"X-Small: 1\r\n").startswith(b"HTTP/1.1 200")
        # A head that is still incomplete past the cap (the rest never comes).
        huge = b"X-Big: " + b"a" * (MAX_HEADER_BYTES + 1)
        assert ask(huge, end=b"").startswith(b"HTTP/1.1 400")
    finally:
        server.should_exit = True
        thread.join(10)


class _Recording:
    """Stands in for the TLS transport under CoalescingTransport: records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed_after: int | None = None

    def write(self, data: bytes) -> None:
        assert self.closed_after is None, "written after close"
        self.writes.append(data)

    def close(self) -> None:
        self.closed_after = len(self.writes)

    def is_closing(self) -> bool:
        return self.closed_after is not None

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def test_a_response_written_in_pieces_leaves_in_one_write_and_before_a_close() -> None:
    import asyncio

    from webhook.server import CoalescingTransport

    async def scenario() -> _Recording:
        raw = _Recording()
        transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")  # uvicorn: the head
        transport.write(b"{}")  # then the body, in the same loop step
        assert raw.writes == []
        await asyncio.sleep(0)  # the loop turns
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        transport.write(b"next")  # a later response, then a close in the same step
        transport.close()
        await asyncio.sleep(0)
        assert transport.get_extra_info("peername") == "extra:peername"  # the rest is the raw one's
        return raw

    raw = asyncio.run(scenario())
    assert raw.writes[1:] == [b"next"] and raw.closed_after == 2
