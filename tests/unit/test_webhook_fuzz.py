"""Fuzzing: thousands of generated bodies, AdmissionReviews and annotation values never
produce a 5xx, an internal-error denial or a malformed answer, and mutation is idempotent."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from localcluster.samples import deployment_pod, pod_review
from netshift.keys import DEFAULT_NETWORK_KEY, INJECTED_KEY, NETWORKS_KEY
from netshift.policy import profile_from_object
from webhook.app import WebhookSettings, create_app
from webhook.caches import StaticCaches
from webhook.jsonpatch import apply_patch
from webhook.validate import ValidationOptions

PROFILES = [
    profile_from_object(
        {
            "metadata": {"name": "enforced"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"net": "enforced"}},
                "mode": "Enforce",
                "defaultNetwork": "infra/blue",
                "networks": [
                    {"name": "sriov", "interface": "fast0", "ips": ["10.1.0.5/24"]},
                    {"name": "macvlan"},
                ],
            },
        }
    ),
    profile_from_object(
        {
            "metadata": {"name": "soft"},
            "spec": {
                "namespaceSelector": {"matchExpressions": [{"key": "net", "operator": "Exists"}]},
                "networks": [
                    {"name": "storage", "namespace": "infra", "default-route": ["10.9.0.1"]}
                ],
                "priority": -1,
            },
        }
    ),
]
CACHES = StaticCaches(
    {"team-a": {"net": "enforced"}, "team-b": {"net": "soft"}, "plain": {}},
    PROFILES,
    ["infra/blue", "team-a/sriov", "team-a/macvlan", "infra/storage"],
)
APP = create_app(
    WebhookSettings(
        caches=CACHES, options=ValidationOptions(namespace_isolation=True), cache_wait=0.0
    )
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # One portal (event loop thread) for all examples, not one per request.
    with TestClient(APP) as c:
        yield c


JSON_HEADERS = {"content-type": "application/json"}
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

names = st.sampled_from(
    ["macvlan", "sriov", "storage", "blue", "missing", "Bad_Name", "", "a" * 70]
)
namespaces = st.sampled_from(["team-a", "team-b", "infra", "default", "other", "x/y", ""])
element_fields = {
    "name": names | st.text(max_size=8),
    "namespace": namespaces,
    "interface": st.sampled_from(["net1", "fast0", "eth0", "eth 0", "a" * 16, "x/y", ""]),
    "ips": st.lists(
        st.sampled_from(["10.1.0.5/24", "10.1.0.5", "fe80::1/64", "300.1.1.1", "x"]), max_size=2
    ),
    "mac": st.sampled_from(["02:00:00:00:00:01", "01:00:00:00:00:00", "zz", "0200.0000.0001"]),
    "default-route": st.lists(st.sampled_from(["10.9.0.1", "10.9.0.1/24", "nope"]), max_size=2),
    "portMappings": st.lists(
        st.fixed_dictionaries(
            {"hostPort": st.integers(-1, 70000), "containerPort": st.integers(-1, 70000)},
            optional={"protocol": st.sampled_from(["tcp", "UDP", "icmp"])},
        ),
        max_size=2,
    ),
    "bandwidth": st.dictionaries(
        st.sampled_from(["ingressRate", "egressBurst", "other"]),
        st.integers(-5, 10**12),
        max_size=2,
    ),
    "cni-args": st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    "ipam-claim-reference": st.sampled_from(["claim-1", "Bad Claim"]),
    "unknown": json_values,
}
json_elements = st.fixed_dictionaries({}, optional=element_fields) | json_values


def comma_item(namespace: str, name: str, interface: str = "") -> str:
    """`[namespace/]name[@interface]`, one item of the comma form (or a default-network ref)."""
    return (f"{namespace}/" if namespace else "") + name + (f"@{interface}" if interface else "")


comma_items = st.builds(
    comma_item,
    namespaces,
    names,
    st.sampled_from(["", "net1", "fast0", "eth 0", "a@b"]),
)
networks_values = (
    st.lists(comma_items, max_size=4).map(", ".join)
    | st.lists(json_elements, max_size=4).map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=40)
)
default_values = st.builds(comma_item, namespaces, names) | st.text(max_size=20)


def annotation_maps_with(
    networks: st.SearchStrategy[str], defaults: st.SearchStrategy[str]
) -> st.SearchStrategy[dict[str, str] | None]:
    """A pod's annotations (or none): the two network keys from these, and noise."""
    return st.none() | st.fixed_dictionaries(
        {},
        optional={
            NETWORKS_KEY: networks,
            DEFAULT_NETWORK_KEY: defaults,
            INJECTED_KEY: st.text(max_size=30) | json_values.map(json.dumps),
            "other/key~x": st.text(max_size=10),
        },
    )


annotation_maps = annotation_maps_with(networks_values, default_values)


@st.composite
def reviews(draw: st.DrawFn) -> dict[str, Any]:
    pod = deployment_pod(
        annotations=draw(annotation_maps),
        labels=draw(
            st.sampled_from([{}, {"netshift.io/inject": "disabled"}, {"netshift.io/inject": "yes"}])
        ),
        host_network=draw(st.booleans()),
    )
    operation = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", "create"]))
    old = None
    if operation == "UPDATE" and draw(st.integers(0, 9)) > 0:
        old = deployment_pod(annotations=draw(annotation_maps))
    body = pod_review(
        pod,
        namespace=draw(st.sampled_from(["team-a", "team-b", "plain", "unknown", ""])),
        operation=operation,
        old=old,
        dry_run=draw(st.booleans()),
    )
    # Occasionally damage the review itself.
    damage = draw(st.integers(0, 12))
    request = body["request"]
    if damage == 1:
        request["object"] = draw(json_values)
    elif damage == 2:
        request["object"]["metadata"] = draw(json_values)
    elif damage == 3:
        request["object"]["spec"]["hostNetwork"] = draw(json_values)
    elif damage == 4:
        del request[draw(st.sampled_from(sorted(request)))]
    elif damage == 5:
        request[draw(st.sampled_from(sorted(request)))] = draw(json_values)
    elif damage == 6:
        request["kind"] = draw(
            st.sampled_from([{"kind": "Pod"}, {"group": "apps", "kind": "Pod"}, "Pod"])
        )
    return body


# Values the grammar accepts (interfaces unique within a value), so that the merge has
# something to work on.
good_names = st.sampled_from(["macvlan", "sriov", "storage", "blue", "missing"])
good_namespaces = st.sampled_from(["team-a", "team-b", "infra", "other"])
good_interfaces = st.sampled_from(["net1", "net2", "fast0"])
good_comma_items = st.tuples(
    st.just("") | good_namespaces, good_names, st.just("") | good_interfaces
)
good_networks_values = st.lists(good_comma_items, max_size=3, unique_by=lambda t: t[2]).map(
    lambda items: ", ".join(comma_item(*item) for item in items)
) | st.lists(
    st.fixed_dictionaries(
        {"name": good_names},
        optional={
            "namespace": good_namespaces,
            "interface": good_interfaces,
            "ips": st.lists(st.sampled_from(["10.1.0.5/24", "fe80::1/64"]), max_size=1),
            "mac": st.just("02:00:00:00:00:01"),
            "default-route": st.lists(st.just("10.9.0.1"), max_size=1),
        },
    ),
    max_size=3,
    unique_by=lambda e: str(e.get("interface")),
).map(json.dumps)
good_default_values = st.builds(comma_item, st.just("") | good_namespaces, good_names)
good_annotation_maps = annotation_maps_with(good_networks_values, good_default_values)


@st.composite
def profiled_creates(draw: st.DrawFn) -> dict[str, Any]:
    """A pod CREATE that a profile applies to: what the mutating webhook patches."""
    pod = deployment_pod(
        # One in ten anything: a malformed value of the pod's own is denied, never patched.
        annotations=draw(annotation_maps if draw(st.integers(0, 9)) == 0 else good_annotation_maps),
        labels=draw(st.sampled_from([{}, {"netshift.io/inject": "yes"}])),
    )
    return pod_review(
        pod,
        namespace=draw(st.sampled_from(["team-a", "team-b"])),
        dry_run=draw(st.booleans()),
    )


def check_answer(status: int, body: Any, sent: Any) -> dict[str, Any] | None:
    assert status in (200, 400), (status, body)
    if status == 400:
        assert isinstance(body["error"], str) and body["error"]
        return None
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        status_obj = response["status"]
        assert isinstance(status_obj["message"], str) and status_obj["message"]
        assert status_obj["code"] != 500, status_obj["message"]  # no unexpected exception
    for warning in response.get("warnings", []):
        assert isinstance(warning, str) and "\n" not in warning
    return response  # type: ignore[no-any-return]


@FUZZ
@given(body=json_values)
def test_arbitrary_json_bodies_get_400_or_a_review(client: TestClient, body: Any) -> None:
    for endpoint in ("/mutate", "/validate"):
        r = client.post(endpoint, content=json.dumps(body), headers=JSON_HEADERS)
        assert r.status_code == 400, r.text
        assert r.json()["error"]


@FUZZ
@given(sent=reviews())
def test_generated_reviews_always_get_a_well_formed_answer(
    client: TestClient, sent: dict[str, Any]
) -> None:
    for endpoint in ("/mutate", "/validate"):
        r = client.post(endpoint, json=sent)
        check_answer(r.status_code, r.json(), sent)


@FUZZ
@given(sent=profiled_creates())
def test_mutation_patch_applies_and_reinvocation_changes_nothing(
    client: TestClient, sent: dict[str, Any]
) -> None:
    r = client.post("/mutate", json=sent)
    response = check_answer(r.status_code, r.json(), sent)
    if response is None or "patch" not in response:
        event("400" if response is None else "allowed" if response["allowed"] else "denied")
        return
    event("patched")
    ops = json.loads(base64.b64decode(response["patch"]))
    patched = apply_patch(sent["request"]["object"], ops)
    annotations = patched["metadata"]["annotations"]
    assert all(isinstance(v, str) for v in annotations.values())
    again = json.loads(json.dumps(sent))
    again["request"]["object"] = patched
    r2 = client.post("/mutate", json=again)
    second = check_answer(r2.status_code, r2.json(), again)
    assert second is not None and second["allowed"] and "patch" not in second
    # Mutation never makes a pod fail validation: a denial of the mutated pod
    # is one the pod as sent would have got too.
    r3 = client.post("/validate", json=again)
    after = check_answer(r3.status_code, r3.json(), again)
    assert after is not None
    if not after["allowed"]:
        r4 = client.post("/validate", json=sent)
        before = check_answer(r4.status_code, r4.json(), sent)
        assert before is not None and not before["allowed"], after["status"]["message"]
