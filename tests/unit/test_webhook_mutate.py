"""Mutating admission: new pods get their namespace's networks, exactly once."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from localcluster.samples import deployment_pod, pod_review
from netshift.annotations import parse_networks
from netshift.keys import DEFAULT_NETWORK_KEY, INJECTED_KEY, NETWORKS_KEY, PROFILE_KEY
from netshift.policy import Profile, profile_from_object
from webhook.admission import AdmissionRequest, parse_review
from webhook.app import WebhookSettings, create_app
from webhook.caches import StaticCaches
from webhook.jsonpatch import annotation_patch, apply_patch, escape_pointer_token
from webhook.mutate import mutate_pod

NS = "team-a"


def profile(name: str = "blue", **spec: Any) -> Profile:
    body = {"namespaceSelector": {"matchLabels": {"net": "blue"}}, **spec}
    return profile_from_object({"metadata": {"name": name}, "spec": body})


def caches(*profiles: Profile, labels: dict[str, str] | None = None) -> StaticCaches:
    return StaticCaches(
        {NS: {"net": "blue"} if labels is None else labels, "plain": {}},
        profiles,
        nads=["team-a/macvlan", "infra/blue"],
    )


def request(pod: dict[str, Any], **kw: Any) -> AdmissionRequest:
    return parse_review(pod_review(pod, namespace=kw.pop("namespace", NS), **kw)).request


def mutated(pod: dict[str, Any], c: StaticCaches, **kw: Any) -> dict[str, Any]:
    """The pod as the apiserver stores it after applying our patch."""
    decision = mutate_pod(request(pod, **kw), c)
    assert decision.allowed, decision.message
    return apply_patch(pod, [dict(op) for op in decision.patch])  # type: ignore[no-any-return]


BLUE: dict[str, Any] = {
    "defaultNetwork": "infra/blue",
    "networks": [{"name": "macvlan", "interface": "data0"}],
}


def test_pod_in_profiled_namespace_gets_default_network_and_networks() -> None:
    pod = mutated(deployment_pod(), caches(profile(**BLUE)))
    annotations = pod["metadata"]["annotations"]
    assert annotations[DEFAULT_NETWORK_KEY] == "infra/blue"
    assert parse_networks(annotations[NETWORKS_KEY])[0].name == "macvlan"
    assert annotations[PROFILE_KEY] == "blue"
    assert INJECTED_KEY in annotations


def test_patch_adds_the_whole_map_when_the_pod_has_no_annotations() -> None:
    decision = mutate_pod(request(deployment_pod()), caches(profile(**BLUE)))
    assert [(op["op"], op["path"]) for op in decision.patch] == [("add", "/metadata/annotations")]


def test_patch_adds_keys_when_the_pod_has_other_annotations() -> None:
    pod = deployment_pod(annotations={"team": "a"})
    decision = mutate_pod(request(pod), caches(profile(**BLUE)))
    paths = {op["path"] for op in decision.patch}
    assert "/metadata/annotations/v1.multus-cni.io~1default-network" in paths
    assert "/metadata/annotations/k8s.v1.cni.cncf.io~1networks" in paths
    assert all(op["op"] == "add" for op in decision.patch)
    assert mutated(pod, caches(profile(**BLUE)))["metadata"]["annotations"]["team"] == "a"


def test_patch_escapes_slash_and_tilde_in_keys() -> None:
    assert escape_pointer_token("a/b~c") == "a~1b~0c"
    ops = annotation_patch({"x~/y": "1"}, {"x~/y": "2", "new/key": "v", "gone": None})
    assert {"op": "replace", "path": "/metadata/annotations/x~0~1y", "value": "2"} in ops
    assert {"op": "add", "path": "/metadata/annotations/new~1key", "value": "v"} in ops
    assert not any(op["op"] == "remove" for op in ops)  # "gone" was not there


def test_patch_on_a_pod_without_metadata_adds_metadata() -> None:
    ops = annotation_patch(None, {"k": "v"}, has_metadata=False)
    assert apply_patch({}, ops) == {"metadata": {"annotations": {"k": "v"}}}


def test_response_carries_a_base64_jsonpatch() -> None:
    app = create_app(WebhookSettings(caches=caches(profile(**BLUE))))
    body = TestClient(app).post("/mutate", json=pod_review(deployment_pod(), namespace=NS)).json()
    response = body["response"]
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops[0]["path"] == "/metadata/annotations"


def test_default_mode_keeps_the_pods_own_default_network() -> None:
    pod = deployment_pod(annotations={DEFAULT_NETWORK_KEY: "team-a/mine"})
    annotations = mutated(pod, caches(profile(**BLUE)))["metadata"]["annotations"]
    assert annotations[DEFAULT_NETWORK_KEY] == "team-a/mine"
    assert parse_networks(annotations[NETWORKS_KEY])[0].interface == "data0"


def test_default_mode_merges_networks_without_duplicates() -> None:
    pod = deployment_pod(annotations={NETWORKS_KEY: "macvlan@data0, other"})
    annotations = mutated(pod, caches(profile(**BLUE)))["metadata"]["annotations"]
    names = [(s.name, s.interface) for s in parse_networks(annotations[NETWORKS_KEY])]
    assert sorted(names, key=str) == sorted([("macvlan", "data0"), ("other", None)], key=str)


def test_enforce_mode_puts_the_profiles_networks_in() -> None:
    enforce = profile(mode="Enforce", **BLUE)
    pod = deployment_pod(annotations={DEFAULT_NETWORK_KEY: "team-a/mine"})
    annotations = mutated(pod, caches(enforce))["metadata"]["annotations"]
    assert annotations[DEFAULT_NETWORK_KEY] == "infra/blue"
    assert any(s.name == "macvlan" for s in parse_networks(annotations[NETWORKS_KEY]))


@pytest.mark.parametrize(
    "pod",
    [
        deployment_pod(labels={"netshift.io/inject": "disabled"}),
        deployment_pod(host_network=True),
    ],
    ids=["opt-out-label", "host-network"],
)
def test_opted_out_and_host_network_pods_pass_unchanged(pod: dict[str, Any]) -> None:
    decision = mutate_pod(request(pod), caches(profile(**BLUE)))
    assert decision.allowed and not decision.patch
    assert "skipped" in decision.audit


def test_namespace_without_profile_passes_unchanged() -> None:
    decision = mutate_pod(request(deployment_pod(), namespace="plain"), caches(profile(**BLUE)))
    assert decision.allowed and not decision.patch and not decision.audit


def test_reinvocation_changes_nothing() -> None:
    c = caches(profile(mode="Enforce", **BLUE))
    once = mutated(deployment_pod(annotations={NETWORKS_KEY: "extra"}), c)
    decision = mutate_pod(request(once), c)
    assert decision.allowed and not decision.patch
    assert decision.audit["profile"] == "blue"


def test_dry_run_is_answered_the_same() -> None:
    c = caches(profile(**BLUE))
    pod = deployment_pod()
    assert mutate_pod(request(pod, dry_run=True), c) == mutate_pod(request(pod), c)


def test_audit_annotation_names_the_profile_and_the_conflict() -> None:
    c = caches(profile("blue", priority=5, **BLUE), profile("green", priority=1))
    decision = mutate_pod(request(deployment_pod()), c)
    assert decision.audit == {"profile": "blue", "conflicting-profiles": "green"}
    app = create_app(WebhookSettings(caches=c))
    body = TestClient(app).post("/mutate", json=pod_review(deployment_pod(), namespace=NS)).json()
    assert body["response"]["auditAnnotations"]["profile"] == "blue"


def test_malformed_own_annotation_is_denied_with_the_annotation_error() -> None:
    pod = deployment_pod(annotations={NETWORKS_KEY: '[{"name": "macvlan", "interface": "eth 0"}]'})
    decision = mutate_pod(request(pod), caches(profile(**BLUE)))
    assert not decision.allowed
    assert decision.message is not None
    assert NETWORKS_KEY in decision.message and "element 0" in decision.message
    assert "whitespace" in decision.message and "expected" in decision.message


def test_namespace_comes_from_the_request_when_the_pod_has_none() -> None:
    pod = deployment_pod()
    assert "namespace" not in pod["metadata"]
    annotations = mutated(pod, caches(profile(networks=[{"name": "macvlan"}])))["metadata"][
        "annotations"
    ]
    assert str(parse_networks(annotations[NETWORKS_KEY])[0].ref("x")) == "team-a/macvlan"


def test_namespace_unknown_to_the_cache_is_denied_as_retriable() -> None:
    decision = mutate_pod(request(deployment_pod(), namespace="brand-new"), caches())
    assert not decision.allowed and decision.code == 503
    assert decision.message is not None and "retry" in decision.message


def test_other_operations_and_kinds_pass() -> None:
    c = caches(profile(**BLUE))
    pod = deployment_pod()
    assert mutate_pod(request(pod, operation="UPDATE", old=pod), c).patch == ()
    review = pod_review(pod, namespace=NS)
    review["request"]["kind"]["kind"] = "Service"
    assert mutate_pod(parse_review(review).request, c).patch == ()
    review = pod_review(pod, namespace=NS)
    review["request"]["subResource"] = "ephemeralcontainers"
    assert mutate_pod(parse_review(review).request, c).patch == ()
