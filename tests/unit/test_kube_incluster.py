"""The client sends a pod's ServiceAccount token the way the in-cluster loader stores it."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes.config import incluster_config

from netshift.kube import Kube


def test_in_cluster_token_is_sent_as_bearer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token-123")
    ca.write_text("not read here")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.244.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    cfg = k8s_client.Configuration()
    incluster_config.InClusterConfigLoader(
        token_filename=str(token), cert_filename=str(ca)
    ).load_and_set(cfg)
    kube = Kube(cfg)
    assert kube._headers()["Authorization"].lower() == "bearer sa-token-123"
    assert kube.host == "https://10.244.0.1:6443"
