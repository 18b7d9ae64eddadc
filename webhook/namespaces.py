"""Mutating admission for Namespace CREATE and UPDATE: netshift's selected label, at the door.

The pod mutating webhook is called only for namespaces labelled
`netshift.io/selected=true` (SELECTED_LABEL), so that a netshift outage blocks
pods only where a NetworkProfile applies. The controller keeps that label right
(level-triggered); this webhook sets it in the very write that creates a
namespace or changes its labels, so that the namespace's first pod already goes
through the pod webhook instead of racing the controller.

Pure over the request and the caches. Decisions:
- The label is `policy.selected_label` of the namespace's labels: present when
  some valid profile selects it, absent otherwise (a user's own value is
  corrected either way: the label is netshift's).
- Registered with failurePolicy Ignore, and it never denies: while netshift is
  down namespaces are written without it, and the controller labels them when
  it is back (a Live profile then rolls its networks onto the pods created
  meanwhile). So an unsynced cache, or anything unexpected, admits unchanged.
"""

from __future__ import annotations

from typing import Any

from netshift.keys import SELECTED_LABEL
from netshift.policy import selected_label
from webhook.admission import AdmissionRequest, Decision, MalformedReview
from webhook.caches import Caches
from webhook.jsonpatch import label_patch


def is_namespace_request(request: AdmissionRequest) -> bool:
    return (
        request.kind.kind == "Namespace" and request.kind.group == "" and not request.sub_resource
    )


def mutate_namespace(request: AdmissionRequest, caches: Caches) -> Decision:
    if request.operation not in ("CREATE", "UPDATE") or not is_namespace_request(request):
        return Decision.allow()
    if not caches.synced():
        return Decision.allow(audit={"skipped": "caches not synced; the controller labels it"})
    obj: Any = request.object
    if not isinstance(obj, dict):
        raise MalformedReview("request.object is not a Namespace object")
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise MalformedReview("request.object.metadata is not an object")
    meta = meta or {}
    labels = meta.get("labels")
    if labels is not None and not (
        isinstance(labels, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        raise MalformedReview("request.object.metadata.labels is not a map of strings")
    name = meta.get("name") or request.name or ""
    want = selected_label(str(name), labels or {}, caches.profiles())
    if (labels or {}).get(SELECTED_LABEL) == want:
        return Decision.allow()
    patch = label_patch(labels, {SELECTED_LABEL: want}, has_metadata=bool(obj.get("metadata")))
    return Decision.allow(patch=patch, audit={"selected": "true" if want else "false"})
