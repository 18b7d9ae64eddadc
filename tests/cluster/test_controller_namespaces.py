"""The controller keeps netshift.io/selected on exactly the namespaces some profile selects.

That label is what sends a namespace's pods to the mutating webhook (docs/webhook.md,
"Registering"), so it must follow every change of the profiles and of the namespaces'
labels, against the real apiserver. No webhook runs here: every label is the
controller's own doing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from controller.reconcile import Controller, ControllerOptions
from netshift.keys import SELECTED_LABEL
from netshift.kube import Kube, wait_for
from support.controller import create_profile, delete_profile, label_namespace, patch_profile


@pytest.fixture
def controller(kube: Kube) -> Iterator[Controller]:
    c = Controller(kube, ControllerOptions(resync_seconds=60))
    c.start()
    assert c.wait_synced(30)
    c.enqueue_all()
    try:
        yield c
    finally:
        c.stop()


def selected(kube: Kube, namespace: str) -> str | None:
    labels = kube.get(f"/api/v1/namespaces/{namespace}")["metadata"].get("labels") or {}
    value: str | None = labels.get(SELECTED_LABEL)
    return value


def becomes(kube: Kube, namespace: str, value: str | None, what: str) -> None:
    wait_for(lambda: selected(kube, namespace) == value, 30, what=f"{namespace}: {what}")


def test_the_label_follows_profiles_and_namespace_labels(
    kube: Kube, namespace: str, controller: Controller
) -> None:
    team = uuid.uuid4().hex[:8]
    name = f"labels-{team}"
    assert selected(kube, namespace) is None
    create_profile(kube, name, labels={"netshift.io/team": team}, default=None)
    try:
        # A namespace relabelled into the profile.
        label_namespace(kube, namespace, {"netshift.io/team": team})
        becomes(kube, namespace, "true", "labelled once a profile selects it")
        # Removed by hand: put back.
        label_namespace(kube, namespace, {SELECTED_LABEL: None})
        becomes(kube, namespace, "true", "labelled again")
        # The profile's selector moves away.
        patch_profile(kube, name, {"namespaceSelector": {"matchLabels": {"netshift.io/team": "x"}}})
        becomes(kube, namespace, None, "unlabelled when the profile stops selecting it")
        # Set by hand where nothing selects: taken away.
        label_namespace(kube, namespace, {SELECTED_LABEL: "true"})
        becomes(kube, namespace, None, "a stray label removed")
        patch_profile(
            kube, name, {"namespaceSelector": {"matchLabels": {"netshift.io/team": team}}}
        )
        becomes(kube, namespace, "true", "labelled when the profile selects it again")
    finally:
        delete_profile(kube, name)
    becomes(kube, namespace, None, "unlabelled once its profile is deleted")


def test_the_controllers_own_namespaces_are_never_labelled(
    kube: Kube, namespace: str, controller: Controller
) -> None:
    """A profile selecting every namespace: netshift-system and kube-system stay unlabelled."""
    name = f"everything-{uuid.uuid4().hex[:8]}"
    create_profile(kube, name, labels={}, default=None, priority=-1000)
    try:
        becomes(kube, namespace, "true", "labelled by a catch-all profile")
        for system in ("kube-system", "netshift-system"):
            assert selected(kube, system) is None
    finally:
        delete_profile(kube, name)
    becomes(kube, namespace, None, "unlabelled once the catch-all is gone")
