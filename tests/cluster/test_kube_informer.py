"""netshift.kube.Informer against the real apiserver: it follows changes, and stop() ends
its watch request at once (an apiserver's graceful shutdown waits for every open one)."""

from __future__ import annotations

import threading
import time

from netshift.kube import Informer, Kube, wait_for


def configmaps(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def test_an_informer_sees_changes_and_stop_ends_its_watch_at_once(
    kube: Kube, namespace: str
) -> None:
    seen: list[tuple[str, str]] = []
    informer = Informer(
        kube,
        configmaps(namespace),
        on_event=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
    )
    informer.start()
    assert informer.wait_synced(10)
    kube.create(configmaps(namespace), {"metadata": {"name": "one"}})
    wait_for(lambda: ("ADDED", "one") in seen, 10, what="the ADDED event")
    assert informer.get(f"{namespace}/one") is not None

    started = time.monotonic()
    informer.stop()  # blocked in its watch: no event will come to wake it
    assert informer.join(5), "the informer's thread still reads its watch after stop()"
    assert time.monotonic() - started < 5
    kube.create(configmaps(namespace), {"metadata": {"name": "two"}})
    time.sleep(0.5)
    assert ("ADDED", "two") not in seen


def test_an_informer_stopped_before_its_watch_opened_ends_too(kube: Kube, namespace: str) -> None:
    for _ in range(5):  # stop() lands before, during or after the list and the watch's start
        informer = Informer(kube, configmaps(namespace))
        informer.start()
        threading.Event().wait(0.01)
        informer.stop()
        assert informer.join(5)
