"""The webhook configurations built in code match the manifests, and say what they must."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from netshift.keys import SELECTED_LABEL
from webhook.registration import ServiceRef, webhook_configurations

MANIFEST = (
    Path(__file__).resolve().parents[2]
    / "manifests"
    / "registration"
    / "webhookconfigurations.yaml"
)


def manifest_objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def test_code_and_manifest_register_the_same_webhooks() -> None:
    built = webhook_configurations(ca_bundle=b"", service=ServiceRef())
    assert [dict(o) for o in built] == manifest_objects()


def test_url_registration_carries_the_ca_bundle_and_paths() -> None:
    mutating, validating = webhook_configurations(
        ca_bundle=b"PEM", url="https://127.0.0.1:8443/", name="netshift"
    )
    m, v = mutating["webhooks"][0], validating["webhooks"][0]
    assert m["clientConfig"] == {
        "url": "https://127.0.0.1:8443/mutate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert v["clientConfig"]["url"] == "https://127.0.0.1:8443/validate"
    assert m["rules"][0]["operations"] == ["CREATE"]
    assert v["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    for hook in (m, v):
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] <= 10
        excluded = hook["namespaceSelector"]["matchExpressions"][0]
        assert excluded["operator"] == "NotIn"
        assert {"kube-system", "netshift-system"} <= set(excluded["values"])
    assert m["reinvocationPolicy"] == "IfNeeded"


def test_nad_creates_and_updates_go_to_their_own_validating_webhook() -> None:
    _, validating = webhook_configurations(ca_bundle=b"PEM", url="https://127.0.0.1:8443")
    nad = validating["webhooks"][1]
    assert nad["name"] == "validate.networkattachmentdefinitions.netshift.io"
    assert nad["clientConfig"]["url"] == "https://127.0.0.1:8443/validate-nad"
    assert nad["rules"] == [
        {
            "apiGroups": ["k8s.cni.cncf.io"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["network-attachment-definitions"],
            "scope": "Namespaced",
        }
    ]
    assert nad["failurePolicy"] == "Fail" and nad["sideEffects"] == "None"


def test_extra_namespace_labels_narrow_every_webhook() -> None:
    for obj in webhook_configurations(ca_bundle=b"", url="https://h", namespace_labels={"a": "b"}):
        for hook in obj["webhooks"]:
            assert hook["namespaceSelector"]["matchLabels"]["a"] == "b"


def test_pod_creation_is_sent_to_the_mutating_webhook_only_in_selected_namespaces() -> None:
    mutating, validating = webhook_configurations(ca_bundle=b"", url="https://h")
    pods = mutating["webhooks"][0]
    assert pods["name"] == "mutate.pods.netshift.io"
    assert pods["namespaceSelector"]["matchLabels"] == {SELECTED_LABEL: "true"}
    assert pods["failurePolicy"] == "Fail"
    # Validation keeps its reach (every namespace but the system ones) ...
    for hook in validating["webhooks"]:
        assert "matchLabels" not in hook["namespaceSelector"]
    # ... but sees a pod CREATE only when the pod names networks.
    conditions = {c["name"]: c["expression"] for c in validating["webhooks"][0]["matchConditions"]}
    assert set(conditions) == {"networks-on-create", "networks-changed"}
    assert "request.operation != 'CREATE'" in conditions["networks-on-create"]
    assert "request.operation != 'UPDATE'" in conditions["networks-changed"]


def test_the_namespace_webhook_labels_and_never_blocks() -> None:
    mutating, _ = webhook_configurations(ca_bundle=b"", url="https://h", timeout_seconds=10)
    namespaces = mutating["webhooks"][1]
    assert namespaces["name"] == "mutate.namespaces.netshift.io"
    assert namespaces["clientConfig"]["url"] == "https://h/mutate-namespace"
    assert namespaces["rules"][0]["resources"] == ["namespaces"]
    assert namespaces["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert namespaces["failurePolicy"] == "Ignore"
    assert namespaces["timeoutSeconds"] == 2
    excluded = namespaces["namespaceSelector"]["matchExpressions"][0]
    assert {"kube-system", "netshift-system"} <= set(excluded["values"])
    [condition] = namespaces["matchConditions"]
    assert SELECTED_LABEL in condition["expression"]


def test_nad_updates_that_keep_the_config_are_not_sent() -> None:
    _, validating = webhook_configurations(ca_bundle=b"", url="https://h")
    [condition] = validating["webhooks"][1]["matchConditions"]
    assert condition["name"] == "config-changed"
    assert "object.spec.config != oldObject.spec.config" in condition["expression"]


def test_exactly_one_way_to_reach_the_webhook() -> None:
    with pytest.raises(ValueError):
        webhook_configurations(ca_bundle=b"")
    with pytest.raises(ValueError):
        webhook_configurations(ca_bundle=b"", url="https://h", service=ServiceRef())
