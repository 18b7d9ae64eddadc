"""Validating admission: bad network annotations are stopped with a message a person can act on."""

from __future__ import annotations

from typing import Any

import pytest

from localcluster.samples import deployment_pod, pod_review
from netshift.keys import DEFAULT_NETWORK_KEY, NETWORKS_KEY
from netshift.policy import Profile, apply_profile, profile_from_object
from webhook.admission import Decision, MalformedReview, parse_review
from webhook.caches import StaticCaches
from webhook.validate import ValidationOptions, validate_pod

NS = "team-a"
ISOLATED = ValidationOptions(namespace_isolation=True)


def profile(name: str = "blue", **spec: Any) -> Profile:
    body = {"namespaceSelector": {"matchLabels": {"net": "blue"}}, **spec}
    return profile_from_object({"metadata": {"name": name}, "spec": body})


def caches(*profiles: Profile) -> StaticCaches:
    return StaticCaches(
        {NS: {"net": "blue"}},
        profiles,
        nads=["team-a/macvlan", "team-a/sriov", "infra/blue", "default/shared", "infra/storage"],
    )


def create(
    annotations: dict[str, str] | None,
    c: StaticCaches | None = None,
    options: ValidationOptions | None = None,
    **pod_kw: Any,
) -> Decision:
    pod = deployment_pod(annotations=annotations, **pod_kw)
    review = pod_review(pod, namespace=NS)
    return validate_pod(parse_review(review).request, c or caches(), options)


def update(
    old: dict[str, str] | None,
    new: dict[str, str] | None,
    c: StaticCaches | None = None,
    options: ValidationOptions | None = None,
    **pod_kw: Any,
) -> Decision:
    review = pod_review(
        deployment_pod(annotations=new, **pod_kw),
        old=deployment_pod(annotations=old, **pod_kw),
        namespace=NS,
        operation="UPDATE",
        name="web-1",
    )
    return validate_pod(parse_review(review).request, c or caches(), options)


def test_well_formed_references_to_existing_nads_are_allowed() -> None:
    decision = create(
        {NETWORKS_KEY: "macvlan@data0, infra/storage", DEFAULT_NETWORK_KEY: "infra/blue"}
    )
    assert decision.allowed and not decision.warnings


def test_malformed_networks_denied_naming_annotation_element_problem_and_accepted() -> None:
    decision = update(None, {NETWORKS_KEY: '[{"name": "macvlan", "interface": "eth 0"}]'})
    assert not decision.allowed and decision.message is not None
    msg = decision.message
    assert msg.startswith(f'{NETWORKS_KEY}: element 0 ("macvlan"): field "interface"')
    assert "whitespace" in msg and "expected a Linux interface name" in msg


def test_malformed_default_network_denied() -> None:
    decision = create({DEFAULT_NETWORK_KEY: "a/b/c"})
    assert not decision.allowed and decision.message is not None
    assert decision.message.startswith(DEFAULT_NETWORK_KEY) and "expected" in decision.message


def test_both_malformed_annotations_are_reported_at_once() -> None:
    decision = create({NETWORKS_KEY: "Bad_Name", DEFAULT_NETWORK_KEY: "x@y"})
    assert decision.message is not None and decision.message.startswith("2 problems:")
    assert NETWORKS_KEY in decision.message and DEFAULT_NETWORK_KEY in decision.message


def test_missing_nad_on_create_is_a_warning() -> None:
    decision = create({NETWORKS_KEY: "not-yet"})
    assert decision.allowed
    assert decision.warnings and "team-a/not-yet does not exist" in decision.warnings[0]


def test_missing_nad_introduced_by_an_update_is_denied() -> None:
    decision = update({NETWORKS_KEY: "macvlan"}, {NETWORKS_KEY: "macvlan, typo"})
    assert not decision.allowed and decision.message is not None
    assert decision.message.startswith(f'{NETWORKS_KEY}: element 1 ("typo")')
    assert "team-a/typo does not exist" in decision.message
    assert "expected the name of an existing NetworkAttachmentDefinition" in decision.message


def test_missing_default_network_nad_on_update_is_denied() -> None:
    decision = update(None, {DEFAULT_NETWORK_KEY: "infra/nope"})
    assert not decision.allowed and decision.message is not None
    assert decision.message.startswith(f'{DEFAULT_NETWORK_KEY}: "infra/nope"')


def test_a_missing_nad_the_pod_already_had_only_warns_on_update() -> None:
    decision = update({NETWORKS_KEY: "deleted"}, {NETWORKS_KEY: "deleted, macvlan"})
    assert decision.allowed and "team-a/deleted" in decision.warnings[0]


def test_update_that_leaves_network_annotations_alone_passes_without_evaluation() -> None:
    # Even a malformed value that was already there: agents' status writes must not fail.
    bad = {NETWORKS_KEY: "Bad_Name"}
    decision = update(bad, {**bad, "k8s.v1.cni.cncf.io/network-status": "[]"})
    assert decision.allowed and not decision.warnings


def test_update_without_old_object_is_malformed() -> None:
    review = pod_review(deployment_pod(), namespace=NS, operation="UPDATE")
    with pytest.raises(MalformedReview):
        validate_pod(parse_review(review).request, caches())


def test_cross_namespace_reference_allowed_without_isolation() -> None:
    assert update(None, {NETWORKS_KEY: "infra/storage"}).allowed


def test_cross_namespace_reference_denied_under_isolation() -> None:
    decision = update(None, {NETWORKS_KEY: "infra/storage"}, options=ISOLATED)
    assert not decision.allowed and decision.message is not None
    assert 'references namespace "infra" but namespace isolation is on' in decision.message
    assert "global namespace (default, kube-system)" in decision.message


def test_global_namespaces_and_own_namespace_allowed_under_isolation() -> None:
    decision = update(None, {NETWORKS_KEY: "default/shared, macvlan"}, options=ISOLATED)
    assert decision.allowed


def test_networks_named_by_the_namespaces_profile_allowed_under_isolation() -> None:
    c = caches(
        profile(defaultNetwork="infra/blue", networks=[{"name": "storage", "namespace": "infra"}])
    )
    new = {NETWORKS_KEY: "infra/storage", DEFAULT_NETWORK_KEY: "infra/blue"}
    assert update(None, new, c, ISOLATED).allowed


def test_isolation_does_not_block_a_reference_the_pod_already_had() -> None:
    old = {NETWORKS_KEY: "infra/storage"}
    assert update(old, {NETWORKS_KEY: "infra/storage, macvlan"}, options=ISOLATED).allowed


ENFORCED: dict[str, Any] = {
    "defaultNetwork": "infra/blue",
    "networks": [{"name": "sriov", "interface": "fast0"}],
    "mode": "Enforce",
}


def enforced_pod_annotations(p: Profile, own: dict[str, str] | None = None) -> dict[str, str]:
    """What a new pod carries after the mutating webhook applied `p`."""
    base = dict(own or {})
    for key, value in apply_profile(base, NS, p).items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def test_enforce_denies_an_edit_that_removes_an_enforced_network() -> None:
    p = profile(**ENFORCED)
    old = enforced_pod_annotations(p)
    decision = update(old, {**old, NETWORKS_KEY: "macvlan"}, caches(p))
    assert not decision.allowed and decision.message is not None
    assert 'network "team-a/sriov" on interface "fast0" is missing' in decision.message
    assert 'NetworkProfile "blue" (mode Enforce)' in decision.message


def test_enforce_denies_changing_the_enforced_default_network() -> None:
    p = profile(**ENFORCED)
    old = enforced_pod_annotations(p)
    decision = update(old, {**old, DEFAULT_NETWORK_KEY: "team-a/macvlan"}, caches(p))
    assert not decision.allowed and decision.message is not None
    assert DEFAULT_NETWORK_KEY in decision.message


def test_enforce_allows_adding_a_network() -> None:
    p = profile(**ENFORCED)
    old = enforced_pod_annotations(p)
    new = {**old, NETWORKS_KEY: old[NETWORKS_KEY] + ", macvlan"}
    assert update(old, new, caches(p)).allowed


def test_enforce_does_not_freeze_a_pod_that_predates_the_profile() -> None:
    p = profile(**ENFORCED)
    decision = update(
        {NETWORKS_KEY: "macvlan"}, {NETWORKS_KEY: "macvlan, infra/storage"}, caches(p)
    )
    assert decision.allowed


def test_enforce_does_not_apply_to_opted_out_pods() -> None:
    p = profile(**ENFORCED)
    decision = create(
        {NETWORKS_KEY: "macvlan"}, caches(p), labels={"netshift.io/inject": "disabled"}
    )
    assert decision.allowed


def test_enforce_checks_new_pods_too() -> None:
    p = profile(**ENFORCED)
    assert not create({NETWORKS_KEY: "macvlan"}, caches(p)).allowed
    assert create(enforced_pod_annotations(p), caches(p)).allowed


def test_default_mode_profile_enforces_nothing() -> None:
    p = profile(defaultNetwork="infra/blue")
    old = enforced_pod_annotations(p)
    assert update(old, {**old, DEFAULT_NETWORK_KEY: "team-a/macvlan"}, caches(p)).allowed


def test_all_denials_of_one_request_are_reported_together() -> None:
    decision = update(None, {NETWORKS_KEY: "infra/nope, gone"}, options=ISOLATED)
    assert decision.message is not None and decision.message.startswith("3 problems:")


def test_delete_and_other_kinds_pass() -> None:
    review = pod_review(None, old=deployment_pod(), namespace=NS, operation="DELETE")
    assert validate_pod(parse_review(review).request, caches()).allowed
