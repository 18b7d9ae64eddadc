"""Validating admission for pod CREATE and UPDATE: stop bad network annotations at the door.

Pure over the request and the caches. Decisions:
- UPDATE is evaluated only when `networks` or `default-network` changed
  between oldObject and object; status and annotation writes by agents and
  controllers that leave them alone pass at once.
- A malformed value is denied with the AnnotationError text (annotation,
  element, field, problem, what is accepted), for both annotations at once.
- A NAD missing from the cache: on CREATE a warning (the NAD and the pod are
  often applied together and the NAD may land a moment later; Multus/the agent
  retries); on UPDATE a denial, but only for references the edit introduces —
  a reference the pod already had is warned about, so an unrelated edit is not
  blocked because someone deleted a NAD.
- Namespace isolation (off by default, like Multus): a reference to another
  namespace's NAD is denied unless that namespace is global, the namespace's
  effective NetworkProfile names that NAD (a platform team's profile may point
  at shared networks), or the pod already had the reference.
- Enforce profiles: an edit that removes an enforced network or changes an
  enforced default network is denied (policy.enforced_violations), but only
  for violations the edit introduces: a pod that predates its profile is not
  frozen. Pods opted out with netshift.io/inject=disabled and hostNetwork pods
  are not subject to enforcement, matching the mutating side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from netshift.annotations import AnnotationError, NetworkRef, parse_default_network, parse_networks
from netshift.keys import DEFAULT_NETWORK_KEY, INJECT_LABEL, NETWORKS_KEY, OPT_OUT_VALUE
from netshift.policy import Profile, enforced_violations, resolve
from webhook.admission import AdmissionRequest, Decision, MalformedReview, PodView
from webhook.caches import Caches
from webhook.mutate import is_pod_request, namespace_unknown, request_namespace

DESIRED_KEYS = (NETWORKS_KEY, DEFAULT_NETWORK_KEY)
DEFAULT_GLOBAL_NAMESPACES = ("default", "kube-system")


@dataclass(frozen=True)
class ValidationOptions:
    namespace_isolation: bool = False
    global_namespaces: frozenset[str] = field(
        default_factory=lambda: frozenset(DEFAULT_GLOBAL_NAMESPACES)
    )


@dataclass(frozen=True)
class Reference:
    """One NAD reference in a pod's annotations, with where it was written."""

    annotation: str
    index: int | None
    ref: NetworkRef

    def error(self, problem: str, expected: str) -> str:
        element = self.ref.name if self.index is not None else str(self.ref)
        return str(AnnotationError(self.annotation, self.index, element, None, problem, expected))


def _desired(pod: PodView) -> tuple[str | None, str | None]:
    annotations = pod.annotations or {}
    return annotations.get(NETWORKS_KEY), annotations.get(DEFAULT_NETWORK_KEY)


def references(pod: PodView, namespace: str) -> tuple[list[Reference], list[str]]:
    """Every NAD reference of the pod, and the grammar errors of its annotations."""
    refs: list[Reference] = []
    errors: list[str] = []
    networks, default = _desired(pod)
    if networks is not None:
        try:
            for index, sel in enumerate(parse_networks(networks)):
                refs.append(Reference(NETWORKS_KEY, index, sel.ref(namespace)))
        except AnnotationError as err:
            errors.append(str(err))
    if default is not None:
        try:
            ref = parse_default_network(default, namespace)
            refs.append(Reference(DEFAULT_NETWORK_KEY, None, ref))
        except AnnotationError as err:
            errors.append(str(err))
    return refs, errors


def profile_refs(profile: Profile | None, namespace: str) -> set[NetworkRef]:
    if profile is None:
        return set()
    refs = {sel.ref(namespace) for sel in profile.networks}
    if profile.default_network:
        with contextlib.suppress(AnnotationError):
            refs.add(parse_default_network(profile.default_network, namespace))
    return refs


def _combine(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems: " + " ".join(
        f"({i}) {p}" for i, p in enumerate(problems, start=1)
    )


def validate_pod(
    request: AdmissionRequest, caches: Caches, options: ValidationOptions | None = None
) -> Decision:
    options = options or ValidationOptions()
    if request.operation not in ("CREATE", "UPDATE") or not is_pod_request(request):
        return Decision.allow()
    pod = PodView.from_object(request.object)
    old: PodView | None = None
    if request.operation == "UPDATE":
        if request.old_object is None:
            raise MalformedReview("request.oldObject is missing on an UPDATE")
        old = PodView.from_object(request.old_object, "request.oldObject")
        if _desired(old) == _desired(pod):
            return Decision.allow()
    namespace = request_namespace(request, pod)

    refs, errors = references(pod, namespace)
    if errors:
        return Decision.deny(_combine(errors))
    old_refs = {r.ref for r in references(old, namespace)[0]} if old is not None else set()

    labels = caches.namespace_labels(namespace)
    if labels is None:
        return namespace_unknown(namespace)
    resolution = resolve(labels, caches.profiles())
    profile = resolution.winner
    audit = {"profile": profile.name} if profile is not None else {}

    denials: list[str] = []
    warnings: list[str] = []
    if options.namespace_isolation:
        allowed = profile_refs(profile, namespace) | old_refs
        denials += _isolation_denials(refs, namespace, options.global_namespaces, allowed)
    missing_denials, missing_warnings = _missing_nads(refs, caches, old_refs, old is None)
    denials += missing_denials
    warnings += missing_warnings
    enforced = (
        profile is not None
        and profile.mode == "Enforce"
        and pod.labels.get(INJECT_LABEL) != OPT_OUT_VALUE
        and not pod.host_network
    )
    if profile is not None and enforced:
        denials += _enforce_denials(pod, old, namespace, profile)
    if denials:
        return Decision.deny(_combine(denials), warnings=warnings, audit=audit)
    return Decision.allow(warnings=warnings, audit=audit)


def _isolation_denials(
    refs: Sequence[Reference],
    namespace: str,
    global_namespaces: Collection[str],
    allowed: Collection[NetworkRef],
) -> list[str]:
    expected = f'a NetworkAttachmentDefinition in the pod\'s namespace "{namespace}"'
    if global_namespaces:
        expected += " or in a global namespace (" + ", ".join(sorted(global_namespaces)) + ")"
    return [
        r.error(f'references namespace "{r.ref.namespace}" but namespace isolation is on', expected)
        for r in refs
        if r.ref.namespace != namespace
        and r.ref.namespace not in global_namespaces
        and r.ref not in allowed
    ]


def _missing_nads(
    refs: Sequence[Reference], caches: Caches, old_refs: Collection[NetworkRef], creating: bool
) -> tuple[list[str], list[str]]:
    denials: list[str] = []
    warnings: list[str] = []
    seen: set[NetworkRef] = set()
    for r in refs:
        if r.ref in seen or caches.nad_exists(r.ref):
            continue
        seen.add(r.ref)
        if creating or r.ref in old_refs:
            warnings.append(
                f"{r.annotation}: NetworkAttachmentDefinition {r.ref} does not exist (yet); "
                "the network cannot be attached until it is created"
            )
        else:
            denials.append(
                r.error(
                    f"NetworkAttachmentDefinition {r.ref} does not exist",
                    "the name of an existing NetworkAttachmentDefinition "
                    f"(kubectl get network-attachment-definitions -n {r.ref.namespace})",
                )
            )
    return denials, warnings


def _enforce_denials(
    pod: PodView, old: PodView | None, namespace: str, profile: Profile
) -> list[str]:
    new_violations = enforced_violations(pod.annotations or {}, namespace, profile)
    if not new_violations:
        return []
    before: set[str] = set()
    if old is not None:
        try:
            before = set(enforced_violations(old.annotations or {}, namespace, profile))
        except AnnotationError:
            before = set()
    # Each message already names the annotation, the network and the profile.
    return [v for v in new_violations if v not in before]
