"""Mutating admission for pod CREATE: give a new pod the networks of its namespace's profile.

Pure over the request and the caches. Decisions:
- Pass unchanged: operations other than CREATE, kinds other than Pod,
  subresources, pods labelled netshift.io/inject=disabled, hostNetwork pods,
  namespaces that no NetworkProfile selects.
- The namespace is `request.namespace`: pods created by controllers often have
  no metadata.namespace yet.
- A namespace the cache has not seen yet is denied (retriable) rather than
  admitted without its policy; the HTTP layer first waits briefly for the cache
  to catch up, so this only happens when the watch is far behind.
- A pod whose own networks/default-network annotation is malformed is denied
  here with the AnnotationError text when a profile has to be merged into it
  (the merge needs to parse it); without a profile the validating webhook
  gives the same denial.
- The merge itself is policy.apply_profile, idempotent: a reinvocation
  (reinvocationPolicy IfNeeded) yields an empty patch. dryRun requests are
  answered the same way; nothing here has side effects.
- The audit annotation `profile` names the profile applied (and
  `conflicting-profiles` the lower-priority ones that also select the namespace).
"""

from __future__ import annotations

from netshift.annotations import AnnotationError
from netshift.keys import INJECT_LABEL, OPT_OUT_VALUE
from netshift.policy import ProfileError, apply_profile, resolve
from webhook.admission import AdmissionRequest, Decision, MalformedReview, PodView
from webhook.caches import Caches
from webhook.jsonpatch import annotation_patch


def namespace_unknown(namespace: str) -> Decision:
    return Decision.deny(
        f"namespace {namespace!r} is not yet in netshift's cache, so its NetworkProfile "
        "cannot be looked up; retry in a moment",
        code=503,
        outcome="error",
    )


def request_namespace(request: AdmissionRequest, pod: PodView) -> str:
    namespace = request.namespace or pod.namespace
    if not namespace:
        raise MalformedReview("request.namespace is empty; pods are namespaced")
    return namespace


def is_pod_request(request: AdmissionRequest) -> bool:
    return request.kind.kind == "Pod" and request.kind.group == "" and not request.sub_resource


def mutate_pod(request: AdmissionRequest, caches: Caches) -> Decision:
    if request.operation != "CREATE" or not is_pod_request(request):
        return Decision.allow()
    pod = PodView.from_object(request.object)
    namespace = request_namespace(request, pod)
    if pod.labels.get(INJECT_LABEL) == OPT_OUT_VALUE:
        return Decision.allow(audit={"skipped": f"pod label {INJECT_LABEL}={OPT_OUT_VALUE}"})
    if pod.host_network:
        return Decision.allow(audit={"skipped": "hostNetwork pod"})
    labels = caches.namespace_labels(namespace)
    if labels is None:
        return namespace_unknown(namespace)
    resolution = resolve(labels, caches.profiles())
    profile = resolution.winner
    if profile is None:
        return Decision.allow()
    audit = {"profile": profile.name}
    if resolution.losers:
        audit["conflicting-profiles"] = ",".join(p.name for p in resolution.losers)
    try:
        changes = apply_profile(pod.annotations or {}, namespace, profile)
    except AnnotationError as err:
        return Decision.deny(str(err), audit=audit)
    except ProfileError as err:
        return Decision.deny(
            f"NetworkProfile {profile.name!r} cannot be applied to this pod: {err}", audit=audit
        )
    patch = annotation_patch(pod.annotations, changes, has_metadata=pod.has_metadata)
    return Decision.allow(patch=patch, audit=audit)
