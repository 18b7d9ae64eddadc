"""AdmissionReviews shaped like the ones kube-apiserver sends, for tests and the benchmark.

`deployment_pod` is a pod as a ReplicaSet creates it (no name or namespace in
its metadata yet, managedFields, the projected service-account volume, a few
containers) — about 4 KiB of JSON, like a typical production pod.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any


def deployment_pod(
    app: str = "web",
    *,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    host_network: bool = False,
) -> dict[str, Any]:
    hash_ = "7d4b9c8f6d"
    meta: dict[str, Any] = {
        "generateName": f"{app}-{hash_}-",
        "labels": {"app": app, "pod-template-hash": hash_, **(labels or {})},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{app}-{hash_}",
                "uid": "5f0c3a52-8f8e-4a57-9c43-1f2d8e0b7a11",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2025-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:generateName": {},
                        "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                        "f:ownerReferences": {".": {}, 'k:{"uid":"5f0c3a52"}': {}},
                    },
                    "f:spec": {
                        "f:containers": {'k:{"name":"app"}': {".": {}, "f:image": {}}},
                        "f:dnsPolicy": {},
                        "f:restartPolicy": {},
                    },
                },
            }
        ],
    }
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    container = {
        "name": "app",
        "image": "registry.example/app:1.2.3",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 5,
        },
        "volumeMounts": [
            {
                "name": "kube-api-access-abcde",
                "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            }
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }
    sidecar = copy.deepcopy(container)
    sidecar.update(name="proxy", image="registry.example/proxy:4.5", ports=[])
    spec: dict[str, Any] = {
        "containers": [container, sidecar],
        "volumes": [
            {
                "name": "kube-api-access-abcde",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {
                                            "apiVersion": "v1",
                                            "fieldPath": "metadata.namespace",
                                        },
                                    }
                                ]
                            }
                        },
                    ],
                },
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if host_network:
        spec["hostNetwork"] = True
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }


def pod_review(
    pod: Mapping[str, Any] | None,
    *,
    namespace: str,
    operation: str = "CREATE",
    old: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    name: str = "",
    uid: str | None = None,
) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview for a pod operation."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "uid": "c0ffee00-0000-4000-8000-000000000001",
            "groups": ["system:serviceaccounts", "system:authenticated"],
        },
        "object": copy.deepcopy(dict(pod)) if pod is not None else None,
        "oldObject": copy.deepcopy(dict(old)) if old is not None else None,
        "dryRun": dry_run,
        "options": {
            "kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
            "apiVersion": "meta.k8s.io/v1",
        },
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
