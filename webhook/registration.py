"""The Mutating/ValidatingWebhookConfiguration objects that make the apiserver call netshift.

`webhook_configurations` builds both objects, for a webhook reached by URL
(the local cluster: https://127.0.0.1:PORT) or through a Service (a real
cluster; manifests/webhook/ carries the same settings as YAML).
`apply_webhook_configurations` creates or replaces them.

Settings, and why:
- Reach: the pod mutating webhook is called only for namespaces labelled
  netshift.io/selected=true (SELECTED_LABEL: some NetworkProfile selects them;
  the controller keeps the label, and the namespace webhook below sets it at
  the namespace's own write). A netshift outage, or configurations left by a
  half-done uninstall, therefore blocks pod creation only where a profile
  applies; every other namespace creates its pods whatever netshift's state.
- failurePolicy Fail on the pod and NAD webhooks: with Ignore a webhook outage
  silently admits pods without their networks (and lets Enforce be
  bypassed). Two replicas, a PodDisruptionBudget and the reach above keep it
  safe.
- The namespace webhook (mutate.namespaces.netshift.io) only sets or removes
  SELECTED_LABEL: failurePolicy Ignore and a short timeout, so namespaces are
  never blocked by netshift; without it the controller labels them moments
  later.
- namespaceSelector excludes kube-system and netshift's own namespace, so the
  webhook can never block its own restart or the cluster's system pods.
- The mutating webhook skips pods labelled netshift.io/inject=disabled with an
  objectSelector (the code checks too); validation still applies to them.
- sideEffects None (no writes per request, so dryRun is safe), a small timeout,
  reinvocationPolicy IfNeeded (the merge is idempotent).
- The pod validating webhook keeps its reach (every namespace but the two
  above) but carries matchConditions: a CREATE is sent only when the pod
  carries `networks` or `default-network` (after mutation), an UPDATE only
  when one of them changed. A pod without network annotations, and every
  other pod write (the agent's status annotations, labels, the controller's
  own markers), neither waits for a webhook round trip nor fails when the
  webhook is down; webhook/validate.py makes the UPDATE check for clusters
  older than 1.30.
- NetworkAttachmentDefinition CREATE/UPDATE go to a webhook of their own
  (/validate-nad) in the same ValidatingWebhookConfiguration: the agent runs
  their CNI config as root, so malformed or forbidden configs are refused at the
  door (webhook/validate_nad.py). An UPDATE is sent only when it changes
  spec.config (relabels and annotations pass while netshift is down). Same
  namespace exclusions: the platform's own namespaces are trusted.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netshift.keys import (
    DEFAULT_NETWORK_KEY,
    INJECT_LABEL,
    NETSHIFT_NAMESPACE,
    NETWORKS_KEY,
    OPT_OUT_VALUE,
    SELECTED_LABEL,
    SELECTED_VALUE,
    SYSTEM_NAMESPACES,
)
from netshift.kube import ApiError, Kube
from webhook.certs import MUTATING_PATH, VALIDATING_PATH

DEFAULT_CONFIG_NAME = "netshift"
DEFAULT_NAMESPACE = NETSHIFT_NAMESPACE
DEFAULT_SERVICE = "netshift-webhook"
MUTATE_WEBHOOK_NAME = "mutate.pods.netshift.io"
VALIDATE_WEBHOOK_NAME = "validate.pods.netshift.io"
VALIDATE_NAD_WEBHOOK_NAME = "validate.networkattachmentdefinitions.netshift.io"
MUTATE_NAMESPACE_WEBHOOK_NAME = "mutate.namespaces.netshift.io"
# A namespace write waits at most this long for the label: netshift never blocks one.
NAMESPACE_TIMEOUT_SECONDS = 2
NAD_RULE: dict[str, Any] = {
    "apiGroups": ["k8s.cni.cncf.io"],
    "apiVersions": ["v1"],
    "operations": ["CREATE", "UPDATE"],
    "resources": ["network-attachment-definitions"],
    "scope": "Namespaced",
}


def _annotation_changed(key: str) -> str:
    """CEL: `key` was added, removed or changed by the UPDATE (never an evaluation error:
    one would count as a webhook failure, and failurePolicy Fail would deny the write)."""
    new = f"has(object.metadata.annotations) && '{key}' in object.metadata.annotations"
    old = f"has(oldObject.metadata.annotations) && '{key}' in oldObject.metadata.annotations"
    value = f"object.metadata.annotations['{key}'] != oldObject.metadata.annotations['{key}']"
    return f"({new}) != ({old}) || ({new} && {old} && {value})"


# Only a CREATE of a pod that names networks, or an UPDATE of what the pod asks for, needs the
# pod validating webhook (both conditions must hold: matchConditions are ANDed).
NETWORKS_ON_CREATE: dict[str, str] = {
    "name": "networks-on-create",
    "expression": "request.operation != 'CREATE' || (has(object.metadata.annotations) && ("
    + " || ".join(
        f"'{k}' in object.metadata.annotations" for k in (NETWORKS_KEY, DEFAULT_NETWORK_KEY)
    )
    + "))",
}
NETWORKS_CHANGED: dict[str, str] = {
    "name": "networks-changed",
    "expression": "request.operation != 'UPDATE' || "
    + " || ".join(_annotation_changed(k) for k in (NETWORKS_KEY, DEFAULT_NETWORK_KEY)),
}
# A NAD UPDATE that keeps spec.config as it was (a relabel, an annotation) is not evaluated.
NAD_CONFIG_CHANGED: dict[str, str] = {
    "name": "config-changed",
    "expression": "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec) || "
    "!has(object.spec.config) || !has(oldObject.spec.config) || "
    "object.spec.config != oldObject.spec.config",
}


def _labels_changed_except(key: str) -> str:
    """CEL: a label other than `key` was added, changed or removed (never an evaluation error)."""
    new, old = "object.metadata.labels", "oldObject.metadata.labels"
    added_or_changed = (
        f"(has({new}) && {new}.exists(k, k != '{key}' && "
        f"!(has({old}) && k in {old} && {old}[k] == {new}[k])))"
    )
    removed = f"(has({old}) && {old}.exists(k, k != '{key}' && !(has({new}) && k in {new})))"
    return f"{added_or_changed} || {removed}"


# The namespace webhook decides on a namespace's labels: a CREATE, or an UPDATE of its labels
# (not of SELECTED_LABEL alone: that is the controller's own write, already right).
NAMESPACE_LABELS_CHANGED: dict[str, str] = {
    "name": "labels-changed",
    "expression": "request.operation != 'UPDATE' || " + _labels_changed_except(SELECTED_LABEL),
}


@dataclass(frozen=True)
class ServiceRef:
    name: str = DEFAULT_SERVICE
    namespace: str = DEFAULT_NAMESPACE
    port: int = 443


def namespace_selector(
    excluded: Sequence[str] = SYSTEM_NAMESPACES,
    match_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    selector: dict[str, Any] = {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": sorted(set(excluded)),
            }
        ]
    }
    if match_labels:
        selector["matchLabels"] = dict(match_labels)
    return selector


def webhook_configurations(
    *,
    ca_bundle: bytes,
    url: str | None = None,
    service: ServiceRef | None = None,
    name: str = DEFAULT_CONFIG_NAME,
    excluded_namespaces: Sequence[str] = SYSTEM_NAMESPACES,
    namespace_labels: Mapping[str, str] | None = None,
    failure_policy: str = "Fail",
    timeout_seconds: int = 5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MutatingWebhookConfiguration, ValidatingWebhookConfiguration) for netshift.

    Exactly one of `url` (base URL such as "https://127.0.0.1:8443"; /mutate and
    /validate are appended) or `service` says how the apiserver reaches the
    webhook. `namespace_labels` additionally restricts every webhook to
    namespaces carrying those labels (tests use it to stay in their namespaces).
    """
    if (url is None) == (service is None):
        raise ValueError("give exactly one of url or service")
    encoded = base64.b64encode(ca_bundle).decode() if ca_bundle else None

    def client_config(path: str) -> dict[str, Any]:
        config: dict[str, Any]
        if url is not None:
            config = {"url": url.rstrip("/") + path}
        else:
            assert service is not None
            config = {
                "service": {
                    "name": service.name,
                    "namespace": service.namespace,
                    "path": path,
                    "port": service.port,
                }
            }
        if encoded:
            config["caBundle"] = encoded
        return config

    selector = namespace_selector(excluded_namespaces, namespace_labels)
    selected = namespace_selector(
        excluded_namespaces, {SELECTED_LABEL: SELECTED_VALUE, **(namespace_labels or {})}
    )
    common: dict[str, Any] = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": failure_policy,
        "timeoutSeconds": timeout_seconds,
        "matchPolicy": "Equivalent",
    }
    labels = {"app.kubernetes.io/name": "netshift", "app.kubernetes.io/component": "webhook"}
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": labels},
        "webhooks": [
            {
                "name": MUTATE_WEBHOOK_NAME,
                "clientConfig": client_config("/mutate"),
                "rules": [_pod_rule(["CREATE"])],
                "objectSelector": {
                    "matchExpressions": [
                        {"key": INJECT_LABEL, "operator": "NotIn", "values": [OPT_OUT_VALUE]}
                    ]
                },
                "reinvocationPolicy": "IfNeeded",
                **common,
                "namespaceSelector": selected,
            },
            {
                "name": MUTATE_NAMESPACE_WEBHOOK_NAME,
                "clientConfig": client_config("/mutate-namespace"),
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["namespaces"],
                        "scope": "Cluster",
                    }
                ],
                "matchConditions": [dict(NAMESPACE_LABELS_CHANGED)],
                "reinvocationPolicy": "Never",
                **common,
                "failurePolicy": "Ignore",
                "timeoutSeconds": min(timeout_seconds, NAMESPACE_TIMEOUT_SECONDS),
                "namespaceSelector": selector,
            },
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": labels},
        "webhooks": [
            {
                "name": VALIDATE_WEBHOOK_NAME,
                "clientConfig": client_config("/validate"),
                "rules": [_pod_rule(["CREATE", "UPDATE"])],
                "matchConditions": [dict(NETWORKS_ON_CREATE), dict(NETWORKS_CHANGED)],
                **common,
                "namespaceSelector": selector,
            },
            {
                "name": VALIDATE_NAD_WEBHOOK_NAME,
                "clientConfig": client_config("/validate-nad"),
                "rules": [dict(NAD_RULE)],
                "matchConditions": [dict(NAD_CONFIG_CHANGED)],
                **common,
                "namespaceSelector": selector,
            },
        ],
    }
    return mutating, validating


def _pod_rule(operations: Sequence[str]) -> dict[str, Any]:
    return {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": list(operations),
        "resources": ["pods"],
        "scope": "Namespaced",
    }


def apply_webhook_configurations(kube: Kube, objects: Sequence[Mapping[str, Any]]) -> None:
    """Create each configuration, or replace it (keeping its resourceVersion) if it exists."""
    for obj in objects:
        base = MUTATING_PATH if obj["kind"] == "MutatingWebhookConfiguration" else VALIDATING_PATH
        path = f"{base}/{obj['metadata']['name']}"
        try:
            current = kube.get(path)
        except ApiError as err:
            if err.status != 404:
                raise
            kube.create(base, obj)
            continue
        body = {
            **obj,
            "metadata": {
                **obj["metadata"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
        }
        kube.put(path, body)


def delete_webhook_configurations(kube: Kube, name: str = DEFAULT_CONFIG_NAME) -> None:
    for base in (MUTATING_PATH, VALIDATING_PATH):
        try:
            kube.delete(f"{base}/{name}")
        except ApiError as err:
            if err.status != 404:
                raise
