"""Validating admission for NetworkAttachmentDefinition CREATE and UPDATE: only runnable configs.

Pure over the request and the caches. The agent runs a NAD's CNI config as root
on the node, so `netshift.nadpolicy.check_nad` decides:
- always denied: `spec.config` that is not a JSON object, a plugin `type` that is
  missing or a path, a conflist without plugins (each message names the field);
- denied when the cluster's NAD policy is on (a ConfigMap read from the
  webhook's informer cache, never per request): what the policy forbids;
- a policy ConfigMap that cannot be read denies NAD writes with its error
  (a typo must not switch the platform team's restrictions off);
- warned only: what else would keep netshift's agent from running the config
  (cniVersion, name), since Multus may be the only one that ever runs it.
A NAD without `spec.config` passes: Multus then reads the node's own file of
that name, which only the node's administrator can write. An UPDATE that
leaves `spec.config` unchanged passes at once (labels, annotations).
"""

from __future__ import annotations

from typing import Any

from netshift.cni.config import CniConfigError, load_conflist
from netshift.nadpolicy import CONFIG_FIELD, NadPolicyError, check_nad
from webhook.admission import AdmissionRequest, Decision, MalformedReview
from webhook.caches import Caches

NAD_GROUP = "k8s.cni.cncf.io"
NAD_KIND = "NetworkAttachmentDefinition"


def is_nad_request(request: AdmissionRequest) -> bool:
    return request.kind.group == NAD_GROUP and request.kind.kind == NAD_KIND


def _config(obj: Any, what: str) -> Any:
    if not isinstance(obj, dict):
        raise MalformedReview(f"{what} is not a {NAD_KIND} object")
    spec = obj.get("spec")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise MalformedReview(f"{what}.spec is not an object")
    return spec.get("config")


def _combine(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems: " + " ".join(
        f"({i}) {p}" for i, p in enumerate(problems, start=1)
    )


def validate_nad(request: AdmissionRequest, caches: Caches) -> Decision:
    if request.operation not in ("CREATE", "UPDATE") or not is_nad_request(request):
        return Decision.allow()
    config = _config(request.object, "request.object")
    if request.operation == "UPDATE":
        if request.old_object is None:
            raise MalformedReview("request.oldObject is missing on an UPDATE")
        if _config(request.old_object, "request.oldObject") == config:
            return Decision.allow()
    if config is None or config == "":
        return Decision.allow()
    name = f"{request.namespace}/{request.name}" if request.namespace else str(request.name)
    what = f"{NAD_KIND} {name}"
    if not isinstance(config, str):
        return Decision.deny(
            f"{what}: {CONFIG_FIELD}: must be a string holding the CNI configuration JSON"
        )
    try:
        policy = caches.nad_policy()
    except NadPolicyError as err:
        return Decision.deny(
            f"{what} cannot be checked: the cluster's NAD policy is invalid ({err}); "
            "the platform team has to fix the policy ConfigMap first"
        )
    problems = check_nad(config, policy, namespace=request.namespace)
    if problems:
        return Decision.deny(f"{what}: " + _combine([str(p) for p in problems]))
    try:
        load_conflist(config, fallback_name=request.name)
    except CniConfigError as err:
        return Decision.allow(warnings=[f"{what}: netshift's agent cannot attach it: {err}"])
    return Decision.allow()
