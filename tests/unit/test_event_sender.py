"""The background Event sender: off the caller's path, bounded, and never losing a Warning."""

from __future__ import annotations

import threading
from typing import Any, cast

from netshift.kube import EventSender, Kube

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "ns", "name": "web"}}


class SlowApi:
    """Stands in for the apiserver: records each Event, held until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reasons: list[str] = []
        self.callers: list[str] = []

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/api/v1/namespaces/ns/events"
        self.callers.append(threading.current_thread().name)
        self.release.wait(10)
        self.reasons.append(body["reason"])
        return body


def sender(api: SlowApi, limit: int) -> EventSender:
    return EventSender(cast(Kube, api), "netshift-test", limit=limit)


def test_events_are_recorded_in_order_from_the_background() -> None:
    api = SlowApi()
    events = sender(api, limit=10)
    for reason in ("Attached", "Detached", "AttachFailed"):
        events.send(POD, reason, "m", "Warning" if reason.endswith("Failed") else "Normal")
    assert api.reasons == []  # the caller did not wait for the apiserver
    api.release.set()
    assert events.flush(10)
    assert api.reasons == ["Attached", "Detached", "AttachFailed"]
    assert set(api.callers) == {"events"}


def test_a_full_queue_drops_normal_events_but_the_caller_records_warnings() -> None:
    api = SlowApi()
    events = sender(api, limit=1)
    events.send(POD, "First", "m")  # taken by the sender thread, which then waits on the api
    threading.Event().wait(0.2)
    events.send(POD, "Queued", "m")  # fills the queue
    events.send(POD, "Dropped", "m")
    warning = threading.Thread(
        target=events.send, args=(POD, "AttachFailed", "m", "Warning"), name="caller"
    )
    warning.start()
    api.release.set()
    warning.join(10)
    assert events.flush(10)
    assert events.dropped == 1
    assert sorted(api.reasons) == ["AttachFailed", "First", "Queued"]
    assert "caller" in api.callers  # recorded by the caller itself, not queued
