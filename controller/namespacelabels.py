"""Keeps netshift's SELECTED_LABEL on exactly the namespaces some NetworkProfile selects.

The pod mutating webhook is registered for namespaces carrying the label only, so
that a netshift outage blocks pods nowhere else (webhook/registration.py). The
webhook sets the label itself in the write that creates a namespace or changes
its labels; this loop covers everything else — a profile created, edited or
deleted, a namespace written while the webhook was down, a label removed by hand —
level-triggered: each namespace is compared with `policy.selected_label` of the
cached profiles and patched (a merge patch of that one label) when they differ.

Pods created in a namespace before it got the label were admitted without the
webhook: a profile with `existingPods: Live` rolls its networks onto them like
onto any running pod; with `Ignore` they keep what they were created with, like
the pods that ran there before the profile selected the namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

from netshift.keys import SELECTED_LABEL
from netshift.kube import ApiError, Informer, Kube, namespace_path
from netshift.policy import Profile, selected_label
from netshift.workqueue import Result, WorkQueue

log = logging.getLogger(__name__)


class NamespaceLabeler:
    def __init__(
        self,
        kube: Kube,
        namespaces: Informer,
        profiles: Callable[[], Sequence[Profile]],
        *,
        ready: Callable[[], bool],
        active: Callable[[], bool],
        excluded: Collection[str],
    ) -> None:
        """`ready`: the caches synced; `active`: this replica may write (the leader)."""
        self.kube = kube
        self.namespaces = namespaces
        self.profiles = profiles
        self.ready = ready
        self.active = active
        self.excluded = excluded
        self.queue = WorkQueue(self.reconcile, workers=1, name="namespace-labels")

    def start(self) -> None:
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()

    def add(self, name: str) -> None:
        self.queue.add(name)

    def add_all(self) -> None:
        for obj in self.namespaces.items():
            self.queue.add(str((obj.get("metadata") or {}).get("name")))

    def reconcile(self, name: str) -> Result:
        if not self.active():
            return Result()  # a new leader labels everything again (enqueue_all)
        if not self.ready():
            # The controller starts this queue once its caches synced; kept for a caller
            # that starts it earlier. The key's backoff, as for any wait on something else.
            return Result(requeue=True)
        obj = self.namespaces.get(name)
        if obj is None:
            return Result()
        meta: dict[str, Any] = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return Result()
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        want = selected_label(name, labels, self.profiles(), self.excluded)
        if labels.get(SELECTED_LABEL) == want:
            return Result()
        try:
            self.kube.patch_merge(
                namespace_path(name), {"metadata": {"labels": {SELECTED_LABEL: want}}}
            )
        except ApiError as err:
            if err.status == 404:
                return Result()
            log.warning("could not label namespace %s %s=%s: %s", name, SELECTED_LABEL, want, err)
            return Result(requeue=True)
        log.info(
            "namespace %s: %s",
            name,
            f"{SELECTED_LABEL}={want}" if want else f"{SELECTED_LABEL} removed",
        )
        return Result()
