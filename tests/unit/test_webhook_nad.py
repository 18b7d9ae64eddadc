"""Validating NetworkAttachmentDefinitions: malformed configs and what the NAD policy forbids."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi.testclient import TestClient

from netshift.nadpolicy import NadPolicyError, parse_policy
from webhook.admission import AdmissionRequest, parse_review
from webhook.app import WebhookSettings, create_app
from webhook.caches import StaticCaches
from webhook.validate_nad import validate_nad

POLICY = parse_policy({"enabled": True, "ipamDataDirPrefixes": ["/var/lib/cni/networks"]})


def nad(config: Any, name: str = "blue") -> dict[str, Any]:
    spec = {} if config is None else {"config": config}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": spec,
    }


def nad_review(
    config: Any, operation: str = "CREATE", old: Any = "unset", name: str = "blue"
) -> dict[str, Any]:
    kind = {"group": "k8s.cni.cncf.io", "version": "v1", "kind": "NetworkAttachmentDefinition"}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": {
            "group": "k8s.cni.cncf.io",
            "version": "v1",
            "resource": "network-attachment-definitions",
        },
        "name": name,
        "namespace": "team-a",
        "operation": operation,
        "object": nad(config, name),
        "oldObject": nad(old, name) if old != "unset" else None,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def request(config: Any, **kw: Any) -> AdmissionRequest:
    return parse_review(nad_review(config, **kw)).request


def good(**extra: Any) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "blue",
            "type": "bridge",
            "bridge": "br-blue",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24", **extra},
        }
    )


def test_a_well_formed_nad_is_allowed_without_warnings() -> None:
    decision = validate_nad(request(good()), StaticCaches())
    assert decision.allowed and not decision.warnings


def test_malformed_json_is_denied_naming_spec_config() -> None:
    decision = validate_nad(request('{"type": "bridge"'), StaticCaches())
    assert not decision.allowed
    assert decision.message is not None
    assert decision.message.startswith(
        "NetworkAttachmentDefinition team-a/blue: spec.config: is not valid JSON"
    )


def test_a_path_like_type_and_a_conflist_without_plugins_are_denied() -> None:
    config = json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "../../bin/sh"})
    message = validate_nad(request(config), StaticCaches()).message or ""
    assert "spec.config.type: \"type\" '../../bin/sh' is not a plain plugin file name" in message
    config = json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": []})
    message = validate_nad(request(config), StaticCaches()).message or ""
    assert "spec.config.plugins: a conflist must have a non-empty list" in message


def test_a_config_that_is_not_a_string_is_denied() -> None:
    message = validate_nad(request({"type": "bridge"}), StaticCaches()).message or ""
    assert "spec.config: must be a string" in message


def test_a_nad_without_config_uses_the_nodes_file_and_passes() -> None:
    assert validate_nad(request(None), StaticCaches()).allowed


def test_the_policy_applies_only_when_on() -> None:
    risky = request(good(dataDir="/etc"))
    assert validate_nad(risky, StaticCaches()).allowed
    decision = validate_nad(risky, StaticCaches(nad_policy=POLICY))
    assert not decision.allowed
    assert "spec.config.ipam.dataDir: '/etc' is outside" in (decision.message or "")


def test_an_update_that_keeps_the_config_passes_even_against_the_policy() -> None:
    risky = good(dataDir="/etc")
    caches = StaticCaches(nad_policy=POLICY)
    assert validate_nad(request(risky, operation="UPDATE", old=risky), caches).allowed
    assert not validate_nad(request(risky, operation="UPDATE", old=good()), caches).allowed


def test_an_unreadable_policy_denies_nad_writes_and_says_why() -> None:
    caches = StaticCaches(nad_policy=NadPolicyError("unknown keys allowedType"))
    decision = validate_nad(request(good()), caches)
    assert not decision.allowed
    assert "NAD policy is invalid (unknown keys allowedType)" in (decision.message or "")


def test_what_only_the_agent_could_not_run_is_a_warning() -> None:
    config = json.dumps({"name": "blue", "type": "bridge"})  # no cniVersion
    decision = validate_nad(request(config), StaticCaches())
    assert decision.allowed
    assert "netshift's agent cannot attach it" in decision.warnings[0]
    assert '"cniVersion" is missing' in decision.warnings[0]


def test_the_endpoint_answers_and_counts_under_validate_nad() -> None:
    settings = WebhookSettings(caches=StaticCaches())
    with TestClient(create_app(settings)) as client:
        answer = client.post("/validate-nad", json=nad_review("not json")).json()
        assert answer["response"]["allowed"] is False
        assert "spec.config" in answer["response"]["status"]["message"]
    assert settings.metrics.requests_value("validate-nad", "denied") == 1
