"""The admission hot path, kept out of the handlers: JSON codec, review parsing, policy memo.

Measured with py-spy under wrk (bench/admission.py): with the standard
library's json, pydantic and the policy evaluated afresh, the app's own work
was a quarter of a /mutate request, most of it `apply_profile` re-parsing the
profile's networks for every pod. Here:

- orjson decodes the body and encodes the answer (`loads`, `dumps`);
- `parse_request` checks the fields admission reads by hand and builds the
  pydantic model without validating it again; anything it does not accept
  goes through `admission.parse_review`, so a malformed review gets exactly
  the error text it always got (and lax coercions stay accepted);
- `PolicyMemo` remembers `resolve` per namespace and `apply_profile` per
  (namespace, profile, the pod's four netshift annotations). Both functions
  are pure; an entry is used only while the namespace's labels are equal and
  the profile objects are the very ones the caches hand out now (the
  informer caches build new Profile objects on every NetworkProfile event, and
  every namespace event shows in the labels), so a watch event invalidates
  what it changes. Entries hold their profiles, so an object id is never
  reused while it is a key. Errors are never memoized.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from netshift.keys import DEFAULT_NETWORK_KEY, INJECTED_KEY, NETWORKS_KEY, PROFILE_KEY
from netshift.policy import Profile, Resolution, apply_profile, resolve
from webhook.admission import (
    API_VERSION,
    AdmissionRequest,
    GroupVersionKind,
    GroupVersionResource,
    MalformedReview,
    parse_review,
)

JSON = "application/json"


def loads(body: bytes) -> Any:
    """Decode a JSON body; MalformedReview when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise MalformedReview(f"request body is not JSON: {err}") from None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _str(value: object) -> bool:
    return type(value) is str


def _opt_str(value: object) -> bool:
    return value is None or type(value) is str


def _gv(raw: object, fields: tuple[str, str, str]) -> dict[str, str] | None:
    """A group/version/kind-like map of strings, or None when it needs pydantic's view."""
    if type(raw) is not dict or not all(_str(raw.get(f, "")) for f in fields):
        return None
    return {f: raw.get(f, "") for f in fields}


_GVK = ("group", "version", "kind")
_GVR = ("group", "version", "resource")


def parse_request(data: Any) -> AdmissionRequest:
    """`parse_review(data).request`, without pydantic for the reviews the apiserver sends."""
    if type(data) is dict and (
        data.get("apiVersion") == API_VERSION and data.get("kind") == "AdmissionReview"
    ):
        req = data.get("request")
        if type(req) is dict:
            uid = req.get("uid")
            kind = _gv(req.get("kind"), _GVK)
            resource = _gv(req.get("resource", {}), _GVR)
            obj, old = req.get("object"), req.get("oldObject")
            dry_run = req.get("dryRun")
            if (
                _str(uid)
                and uid
                and kind is not None
                and resource is not None
                and _str(req.get("operation"))
                and _opt_str(req.get("subResource"))
                and _opt_str(req.get("name"))
                and _opt_str(req.get("namespace"))
                and (obj is None or type(obj) is dict)
                and (old is None or type(old) is dict)
                and (dry_run is None or type(dry_run) is bool)
            ):
                return AdmissionRequest.model_construct(
                    uid=uid,
                    kind=GroupVersionKind.model_construct(None, **kind),
                    resource=GroupVersionResource.model_construct(None, **resource),
                    sub_resource=req.get("subResource"),
                    name=req.get("name"),
                    namespace=req.get("namespace"),
                    operation=req["operation"],
                    object=obj,
                    old_object=old,
                    dry_run=dry_run,
                )
    return parse_review(data).request


_NETSHIFT_KEYS = (INJECTED_KEY, NETWORKS_KEY, DEFAULT_NETWORK_KEY, PROFILE_KEY)


class PolicyMemo:
    """Memoized `resolve` and `apply_profile` (see the module docstring)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._resolved: dict[str, tuple[tuple[Profile, ...], dict[str, str], Resolution]] = {}
        self._applied: dict[tuple[object, ...], tuple[Profile, dict[str, str | None]]] = {}

    def resolve(
        self, namespace: str, labels: Mapping[str, str], profiles: Sequence[Profile]
    ) -> Resolution:
        current = tuple(profiles)
        hit = self._resolved.get(namespace)
        if (
            hit is not None
            and len(hit[0]) == len(current)
            and all(a is b for a, b in zip(hit[0], current, strict=True))
            and hit[1] == labels
        ):
            return hit[2]
        resolution = resolve(labels, current)
        with self._lock:
            if len(self._resolved) >= self.max_entries:
                self._resolved.clear()
            self._resolved[namespace] = (current, dict(labels), resolution)
        return resolution

    def apply(
        self, annotations: Mapping[str, str], namespace: str, profile: Profile
    ) -> dict[str, str | None]:
        # apply_profile reads exactly these annotations of the pod.
        key = (namespace, id(profile), *(annotations.get(k) for k in _NETSHIFT_KEYS))
        hit = self._applied.get(key)
        if hit is not None and hit[0] is profile:
            return dict(hit[1])
        changes = apply_profile(annotations, namespace, profile)
        with self._lock:
            if len(self._applied) >= self.max_entries:
                self._applied.clear()
            self._applied[key] = (profile, dict(changes))
        return changes


POLICY = PolicyMemo()
