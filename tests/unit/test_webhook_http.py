"""The webhook's HTTP surface: hardened against bad requests, honest about readiness, measured."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from localcluster.samples import deployment_pod, pod_review
from netshift.policy import Profile, profile_from_object
from webhook.app import WebhookSettings, create_app, create_health_app
from webhook.caches import StaticCaches

NS = "team-a"


def blue() -> Profile:
    return profile_from_object(
        {
            "metadata": {"name": "blue"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"net": "blue"}},
                "defaultNetwork": "infra/blue",
            },
        }
    )


@pytest.fixture
def cache() -> StaticCaches:
    return StaticCaches({NS: {"net": "blue"}}, [blue()], ["infra/blue"])


@pytest.fixture
def settings(cache: StaticCaches) -> WebhookSettings:
    return WebhookSettings(caches=cache, cache_wait=0.3)


@pytest.fixture
def client(settings: WebhookSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def review() -> dict[str, Any]:
    return pod_review(deployment_pod(), namespace=NS, uid="1234")


def test_answer_echoes_the_uid_and_version(client: TestClient) -> None:
    r = client.post("/mutate", json=review())
    assert r.status_code == 200
    body = r.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "1234" and body["response"]["allowed"] is True


def test_body_over_one_mebibyte_is_413(client: TestClient) -> None:
    r = client.post(
        "/mutate", content=b" " * (1024 * 1024 + 1), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "exceeds" in r.json()["error"]


def test_chunked_body_over_the_cap_is_413_too(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    r = client.post("/validate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/yaml", ""])
def test_non_json_content_type_is_415(client: TestClient, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/mutate", content=b"{}", headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"]


def test_json_with_charset_is_accepted(client: TestClient) -> None:
    import json

    r = client.post(
        "/mutate",
        content=json.dumps(review()).encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"", "empty request body"),
        (b"[1, 2]", "expected an AdmissionReview object"),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}',
            "apiVersion",
        ),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request"),
        (b"[" * 100000 + b"]" * 100000, "not"),
    ],
    ids=["garbage", "empty", "list", "v1beta1", "no-request", "deep-nesting"],
)
def test_a_body_that_is_not_an_admission_review_is_400(
    client: TestClient, body: bytes, fragment: str
) -> None:
    r = client.post("/validate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_a_pod_object_of_the_wrong_shape_is_400(client: TestClient) -> None:
    bad = review()
    bad["request"]["object"]["metadata"]["annotations"] = {"k": 5}
    r = client.post("/mutate", json=bad)
    assert r.status_code == 400 and "metadata.annotations" in r.json()["error"]


class Exploding(StaticCaches):
    def profiles(self) -> Sequence[Profile]:
        raise RuntimeError("boom")


def test_unexpected_error_answers_a_denying_review_not_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(WebhookSettings(caches=Exploding({NS: {}})))
    r = TestClient(app).post("/mutate", json=review())
    assert r.status_code == 200
    response = r.json()["response"]
    assert response["allowed"] is False and response["status"]["code"] == 500
    assert "1234" in response["status"]["message"]
    assert "boom" in caplog.text  # the traceback is logged


def test_requests_before_the_caches_synced_are_denied_as_retriable(cache: StaticCaches) -> None:
    cache.is_synced = False
    app = create_app(WebhookSettings(caches=cache, cache_wait=0.1))
    response = TestClient(app).post("/mutate", json=review()).json()["response"]
    assert response["allowed"] is False and response["status"]["code"] == 503


def test_a_request_waits_for_a_namespace_the_watch_has_not_delivered(
    cache: StaticCaches, settings: WebhookSettings, client: TestClient
) -> None:
    settings.cache_wait = 3.0
    threading.Timer(0.2, lambda: cache.namespaces.update({"late": {"net": "blue"}})).start()
    body = pod_review(deployment_pod(), namespace="late")
    response = client.post("/mutate", json=body).json()["response"]
    assert response["allowed"] is True and "patch" in response


def test_readyz_is_503_until_caches_synced_and_tls_loaded(cache: StaticCaches) -> None:
    tls = {"loaded": False}
    settings = WebhookSettings(caches=cache, tls_ready=lambda: tls["loaded"])
    cache.is_synced = False
    for app in (create_app(settings), create_health_app(settings)):
        c = TestClient(app)
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False, "caches": False, "tls": False}
    cache.is_synced = True
    assert TestClient(create_app(settings)).get("/readyz").status_code == 503
    tls["loaded"] = True
    assert TestClient(create_app(settings)).get("/readyz").status_code == 200


def test_health_app_has_no_admission_endpoints(settings: WebhookSettings) -> None:
    assert TestClient(create_health_app(settings)).post("/mutate", json=review()).status_code in (
        404,
        405,
    )


def test_metrics_count_requests_by_endpoint_and_outcome(client: TestClient) -> None:
    client.post("/mutate", json=review())
    client.post("/validate", json=review())
    client.post("/validate", content=b"x", headers={"content-type": "application/json"})
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'netshift_webhook_requests_total{endpoint="mutate",outcome="patched"} 1.0' in text
    assert 'netshift_webhook_requests_total{endpoint="validate",outcome="allowed"} 1.0' in text
    assert 'netshift_webhook_requests_total{endpoint="validate",outcome="bad_request"} 1.0' in text
    assert (
        'netshift_webhook_request_duration_seconds_bucket{endpoint="mutate",le="+Inf",outcome="patched"} 1.0'
        in text
    )
    assert "# TYPE netshift_webhook_request_duration_seconds histogram" in text
    assert "netshift_webhook_cache_synced 1.0" in text


def test_get_on_an_admission_endpoint_is_405(client: TestClient) -> None:
    assert client.get("/mutate").status_code == 405


def test_readyz_is_503_while_draining_but_admission_still_answers(cache: StaticCaches) -> None:
    settings = WebhookSettings(caches=cache, stopping=lambda: True)
    client = TestClient(create_app(settings))
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["stopping"] is True
    assert client.post("/mutate", json=review()).json()["response"]["allowed"] is True
