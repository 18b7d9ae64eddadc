"""The namespace webhook labels the namespaces some profile selects, and never blocks one."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from netshift.keys import SELECTED_LABEL
from netshift.policy import Profile, profile_from_object
from webhook.admission import AdmissionRequest, parse_review
from webhook.app import WebhookSettings, create_app
from webhook.caches import StaticCaches
from webhook.jsonpatch import apply_patch
from webhook.namespaces import mutate_namespace


def profile(name: str, selector: dict[str, Any]) -> Profile:
    return profile_from_object(
        {"metadata": {"name": name}, "spec": {"namespaceSelector": selector}}
    )


SHOP = profile("shop", {"matchLabels": {"team": "shop"}})


def review(
    namespace: dict[str, Any], operation: str = "CREATE", old: dict[str, Any] | None = None
) -> dict[str, Any]:
    name = (namespace.get("metadata") or {}).get("name", "")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Namespace"},
            "resource": {"group": "", "version": "v1", "resource": "namespaces"},
            "name": name,
            "namespace": name,
            "operation": operation,
            "object": namespace,
            "oldObject": old,
        },
    }


def request(namespace: dict[str, Any], **kw: Any) -> AdmissionRequest:
    return parse_review(review(namespace, **kw)).request


def ns(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def admitted(namespace: dict[str, Any], caches: StaticCaches, **kw: Any) -> dict[str, Any]:
    decision = mutate_namespace(request(namespace, **kw), caches)
    assert decision.allowed
    return apply_patch(namespace, [dict(op) for op in decision.patch])  # type: ignore[no-any-return]


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("labels") or {})


def test_a_namespace_created_with_selected_labels_is_labelled_in_the_same_write() -> None:
    got = admitted(ns("web", {"team": "shop"}), StaticCaches(profiles=[SHOP]))
    assert labels_of(got) == {"team": "shop", SELECTED_LABEL: "true"}


def test_a_namespace_without_labels_gets_the_map_when_selected() -> None:
    everything = profile("all", {})
    assert labels_of(admitted(ns("web"), StaticCaches(profiles=[everything]))) == {
        SELECTED_LABEL: "true"
    }


def test_an_unselected_namespace_is_left_alone_and_a_stray_label_removed() -> None:
    caches = StaticCaches(profiles=[SHOP])
    decision = mutate_namespace(request(ns("web", {"team": "other"})), caches)
    assert decision.allowed and not decision.patch
    relabelled = ns("web", {"team": "other", SELECTED_LABEL: "true"})
    got = admitted(relabelled, caches, operation="UPDATE", old=ns("web", {"team": "shop"}))
    assert labels_of(got) == {"team": "other"}


@pytest.mark.parametrize("name", ["kube-system", "netshift-system"])
def test_system_namespaces_are_never_labelled(name: str) -> None:
    everything = profile("all", {})
    decision = mutate_namespace(request(ns(name, {})), StaticCaches(profiles=[everything]))
    assert decision.allowed and not decision.patch


def test_unsynced_caches_admit_unchanged_and_the_controller_labels_later() -> None:
    decision = mutate_namespace(
        request(ns("web", {"team": "shop"})), StaticCaches(profiles=[SHOP], synced=False)
    )
    assert decision.allowed and not decision.patch


def test_the_endpoint_never_denies_even_on_an_internal_error() -> None:
    class Broken(StaticCaches):
        def profiles(self) -> list[Profile]:
            raise RuntimeError("boom")

    client = TestClient(create_app(WebhookSettings(caches=Broken())))
    answer = client.post("/mutate-namespace", json=review(ns("web", {"team": "shop"})))
    assert answer.status_code == 200
    assert answer.json()["response"]["allowed"] is True
    assert "patch" not in answer.json()["response"]
    labelled = TestClient(create_app(WebhookSettings(caches=StaticCaches(profiles=[SHOP]))))
    response = labelled.post("/mutate-namespace", json=review(ns("web", {"team": "shop"})))
    assert response.json()["response"]["patchType"] == "JSONPatch"
