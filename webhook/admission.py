"""AdmissionReview (admission.k8s.io/v1) in and out: parsing at the edge, building the answer.

Only what the webhook reads is modelled; everything else in the review is
ignored. A body that is not a well-formed review raises `MalformedReview`,
which the HTTP layer answers with 400 and the error text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_VERSION = "admission.k8s.io/v1"


class MalformedReview(ValueError):
    """The request body is not an AdmissionReview this webhook can answer."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class GroupVersionKind(_Model):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(_Model):
    group: str = ""
    version: str = ""
    resource: str = ""


class AdmissionRequest(_Model):
    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str | None = Field(default=None, alias="subResource")
    name: str | None = None
    namespace: str | None = None
    operation: str
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(default=None, alias="oldObject")
    dry_run: bool | None = Field(default=None, alias="dryRun")


class AdmissionReview(_Model):
    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def parse_review(data: Any) -> AdmissionReview:
    """Validate a decoded JSON body as an AdmissionReview carrying a request."""
    if not isinstance(data, dict):
        raise MalformedReview(f"expected an AdmissionReview object, got JSON {type(data).__name__}")
    try:
        return AdmissionReview.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in err.errors(include_url=False)[:5]
        )
        raise MalformedReview(
            f"not an {API_VERSION} AdmissionReview with a request: {problems}"
        ) from None


@dataclass(frozen=True)
class PodView:
    """The few fields of a Pod that admission decisions depend on, type-checked."""

    namespace: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str] | None  # None: the pod has no annotations map at all
    host_network: bool
    has_metadata: bool

    @classmethod
    def from_object(cls, obj: Any, what: str = "request.object") -> PodView:
        if not isinstance(obj, dict):
            raise MalformedReview(f"{what} is not a Pod object")
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise MalformedReview(f"{what}.metadata is not an object")
        meta = meta or {}
        labels = _string_map(meta.get("labels"), f"{what}.metadata.labels")
        annotations = _string_map(meta.get("annotations"), f"{what}.metadata.annotations")
        spec = obj.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise MalformedReview(f"{what}.spec is not an object")
        host_network = (spec or {}).get("hostNetwork", False)
        if not isinstance(host_network, bool) and host_network is not None:
            raise MalformedReview(f"{what}.spec.hostNetwork is not a boolean")
        namespace = meta.get("namespace")
        return cls(
            namespace=namespace if isinstance(namespace, str) and namespace else None,
            labels=labels or {},
            annotations=annotations,
            host_network=bool(host_network),
            has_metadata="metadata" in obj and obj["metadata"] is not None,
        )


def _string_map(value: Any, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MalformedReview(f"{what} is not a map of strings")
    return value


@dataclass(frozen=True)
class Decision:
    """What the webhook answers for one request, independent of the wire format."""

    allowed: bool
    message: str | None = None
    code: int | None = None
    patch: Sequence[Mapping[str, Any]] = ()
    warnings: Sequence[str] = ()
    audit: Mapping[str, str] = field(default_factory=dict)
    # For metrics: allowed | patched | denied | error
    outcome: str = ""

    @classmethod
    def allow(
        cls,
        *,
        patch: Sequence[Mapping[str, Any]] = (),
        warnings: Sequence[str] = (),
        audit: Mapping[str, str] | None = None,
    ) -> Decision:
        return cls(
            allowed=True,
            patch=tuple(patch),
            warnings=tuple(warnings),
            audit=dict(audit or {}),
            outcome="patched" if patch else "allowed",
        )

    @classmethod
    def deny(
        cls,
        message: str,
        *,
        code: int = 403,
        warnings: Sequence[str] = (),
        audit: Mapping[str, str] | None = None,
        outcome: str = "denied",
    ) -> Decision:
        return cls(
            allowed=False,
            message=message,
            code=code,
            warnings=tuple(warnings),
            audit=dict(audit or {}),
            outcome=outcome,
        )


# The apiserver truncates longer warnings; keep each one readable on its own.
MAX_WARNING_CHARS = 240


_REASONS = {400: "BadRequest", 403: "Forbidden", 500: "InternalError", 503: "ServiceUnavailable"}


def review_response(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview answering request `uid` with `decision`."""
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        code = decision.code or 403
        response["status"] = {
            "code": code,
            "reason": _REASONS.get(code, "InternalError"),
            "message": decision.message or "denied",
        }
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(list(decision.patch), separators=(",", ":")).encode()
        ).decode()
    if decision.warnings:
        response["warnings"] = [_one_line(w)[:MAX_WARNING_CHARS] for w in decision.warnings]
    if decision.audit:
        response["auditAnnotations"] = dict(decision.audit)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _one_line(text: str) -> str:
    return " ".join(text.split())
