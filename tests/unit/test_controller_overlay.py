"""The controller's record of its own writes (pure): which pod events are only their echo.

The echo of a start patch queues no reconcile of the rollout that sent it (that
reconcile planned with the patched pod already); every other event does.
"""

from __future__ import annotations

from typing import Any

from controller.overlay import WriteOverlay


def pod(rv: str, **annotations: str) -> dict[str, Any]:
    meta = {"namespace": "team", "name": "web", "resourceVersion": rv, "annotations": annotations}
    return {"metadata": meta}


def written(rv: str) -> WriteOverlay:
    overlay = WriteOverlay()
    overlay.expect("team/web")
    overlay.put(pod(rv, wish="new"))
    return overlay


def test_the_event_of_exactly_our_write_is_its_echo_once() -> None:
    overlay = written("7")
    assert overlay.observe("MODIFIED", pod("7", wish="new")) is True
    assert len(overlay) == 0
    assert overlay.observe("MODIFIED", pod("7", wish="new")) is False  # told once


def test_an_event_before_our_write_is_not_its_echo_and_ours_stays_preferred() -> None:
    overlay = written("7")
    assert overlay.observe("MODIFIED", pod("6")) is False
    assert overlay.get("team/web", pod("6")) == pod("7", wish="new")


def test_a_deletion_and_a_re_list_are_never_an_echo() -> None:
    assert written("7").observe("DELETED", pod("7", wish="new")) is False
    assert written("7").observe("ADDED", pod("7", wish="new")) is False


def test_an_event_that_came_while_the_write_was_on_the_wire_was_already_reconciled() -> None:
    overlay = WriteOverlay()
    overlay.expect("team/web")
    assert overlay.observe("MODIFIED", pod("7", wish="new")) is False  # queued as ever
    overlay.put(pod("7", wish="new"))
    assert len(overlay) == 0  # the cache has it: nothing held, nothing to skip later


def test_events_of_pods_we_never_wrote_are_not_echoes() -> None:
    assert WriteOverlay().observe("MODIFIED", pod("3")) is False
