"""The webhook against the real kube-apiserver: the apiserver itself calls it over TLS.

The webhook runs in this process on 127.0.0.1 with informer caches fed by the
test cluster, registered by URL + caBundle like `netshift up` does. Its
configurations select only namespaces carrying this module's label, so other
tests' pods never pass through it. No controller runs here: a test namespace is
labelled netshift.io/selected by the fixture, as the controller would (the
namespace webhook's own labelling is tested apart). Test pods are pinned to a
node that does not exist: they stay Pending, which is all admission needs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localcluster.cluster import LocalCluster
from localcluster.procs import clean_env, free_port, main_python
from localcluster.samples import deployment_pod, pod_review
from netshift.annotations import parse_networks
from netshift.keys import DEFAULT_NETWORK_KEY, NETWORKS_KEY, PROFILE_KEY, SELECTED_LABEL
from netshift.kube import ApiError, Kube, nad_path, wait_for
from netshift.nadpolicy import POLICY_CONFIGMAP
from support.builders import create_nad, nad_object
from webhook.app import WebhookSettings, create_app, create_health_app
from webhook.certs import (
    MUTATING_PATH,
    VALIDATING_PATH,
    KubeSecretStore,
    SecretCertManager,
)
from webhook.informers import PROFILES_PATH, InformerCaches
from webhook.metrics import WebhookMetrics
from webhook.registration import (
    apply_webhook_configurations,
    delete_webhook_configurations,
    webhook_configurations,
)
from webhook.server import ReloadableTLS, WebhookServer, bind

TEST_LABEL = "netshift.io/webhook-test"


@dataclass
class Webhook:
    token: str
    config_name: str
    caches: InformerCaches
    server: WebhookServer
    metrics: WebhookMetrics
    secret_namespace: str
    material_ca: bytes

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """GET /metrics from the plain-HTTP health port, as Prometheus would: sample -> value."""
        with httpx.Client(trust_env=False) as http:
            text = http.get(f"http://127.0.0.1:{self.server.health_port}/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture(scope="module")
def webhook(cluster: LocalCluster, kube: Kube) -> Iterator[Webhook]:
    token = uuid.uuid4().hex[:8]
    config_name = f"netshift-test-{token}"
    secret_ns = f"netshift-wh-{token}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": secret_ns}})
    # The NAD policy of this webhook lives in its own namespace: turning it on stays here.
    caches = InformerCaches(kube, nad_policy=(secret_ns, POLICY_CONFIGMAP))
    caches.start()
    metrics = WebhookMetrics()
    tls = ReloadableTLS(metrics)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    # Registered first without a caBundle: the certificate manager patches it in by name.
    objects = webhook_configurations(
        ca_bundle=b"",
        url=f"https://127.0.0.1:{port}",
        name=config_name,
        namespace_labels={TEST_LABEL: token},
        timeout_seconds=5,
    )
    apply_webhook_configurations(kube, objects)
    server = None
    try:
        manager = SecretCertManager(
            KubeSecretStore(kube, secret_ns, "webhook-tls"),
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
            kube=kube,
            webhook_config_name=config_name,
        )
        material = manager.reconcile()
        tls.load(material)
        assert caches.wait_synced(30), "informer caches did not sync"
        settings = WebhookSettings(caches=caches, metrics=metrics, tls_ready=lambda: tls.loaded)
        server = WebhookServer(
            create_app(settings),
            tls,
            sock,
            health_app=create_health_app(settings),
            health_sock=bind("127.0.0.1", 0),
        )
        server.start_in_thread()
        yield Webhook(token, config_name, caches, server, metrics, secret_ns, material.ca_bundle)
    finally:
        delete_webhook_configurations(kube, config_name)
        if server is not None:
            server.stop_thread()
        caches.stop()
        kube.delete(f"/api/v1/namespaces/{secret_ns}")


@dataclass
class Space:
    """A test namespace routed through the webhook, with helpers to fill it."""

    name: str
    kube: Kube
    cluster: LocalCluster
    webhook: Webhook
    profiles: list[str]

    def profile(self, **spec: Any) -> str:
        name = f"{self.name}-{len(self.profiles)}"
        body = {
            "apiVersion": "netshift.io/v1alpha1",
            "kind": "NetworkProfile",
            "metadata": {"name": name},
            # High priority: a broad profile of another test must not win here.
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.name}},
                "priority": 1000,
                **spec,
            },
        }
        self.kube.create(PROFILES_PATH, body)
        self.profiles.append(name)
        wait_for(
            lambda: any(p.name == name for p in self.webhook.caches.profiles()),
            10,
            what=f"profile {name} in the webhook's cache",
        )
        return name

    def nad(self, name: str, namespace: str | None = None) -> None:
        ns = namespace or self.name
        config = {
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": f"br-{name}"[:15],
        }
        create_nad(self.kube, ns, name, config)
        wait_for(
            lambda: self.webhook.caches.nad_objects.get(f"{ns}/{name}"), 10, what="NAD in cache"
        )

    def pod_manifest(
        self,
        name: str,
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> str:
        meta: dict[str, Any] = {"name": name, "labels": {"app": "t", **(labels or {})}}
        if annotations:
            meta["annotations"] = annotations
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeSelector": {"netshift.io/no-such-node": "true"},
                "containers": [{"name": "c", "image": "registry.example/pause:3"}],
            },
        }
        return json.dumps(pod)

    def create_pod(self, name: str, **kw: Any) -> dict[str, Any]:
        self.kubectl("create", "-f", "-", input=self.pod_manifest(name, **kw))
        return self.kube.get(f"/api/v1/namespaces/{self.name}/pods/{name}")

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return self.cluster.kubectl("-n", self.name, *args, check=check, input=input)


@pytest.fixture
def space(namespace: str, kube: Kube, cluster: LocalCluster, webhook: Webhook) -> Iterator[Space]:
    kube.patch_merge(
        f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {TEST_LABEL: webhook.token}}}
    )
    wait_for(
        lambda: (webhook.caches.namespace_labels(namespace) or {}).get(TEST_LABEL) == webhook.token,
        10,
        what="namespace label in the webhook's cache",
    )
    # What the controller does for a namespace some profile selects (a write of that label
    # alone is not sent to the namespace webhook).
    kube.patch_merge(
        f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {SELECTED_LABEL: "true"}}}
    )
    s = Space(namespace, kube, cluster, webhook, [])
    yield s
    for name in s.profiles:
        with contextlib.suppress(ApiError):
            kube.delete(f"{PROFILES_PATH}/{name}")


def pod_annotations(pod: dict[str, Any]) -> dict[str, str]:
    return dict(pod["metadata"].get("annotations") or {})


def test_ca_bundle_was_patched_into_both_configurations_by_name(
    kube: Kube, webhook: Webhook
) -> None:
    secret = kube.get(f"/api/v1/namespaces/{webhook.secret_namespace}/secrets/webhook-tls")
    assert base64.b64decode(secret["data"]["ca.crt"]) == webhook.material_ca
    for base in (MUTATING_PATH, VALIDATING_PATH):
        config = kube.get(f"{base}/{webhook.config_name}")
        assert (
            base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])
            == webhook.material_ca
        )


def test_a_kubectl_created_pod_gets_its_profile_networks(space: Space) -> None:
    space.nad("blue")
    space.nad("macvlan")
    profile = space.profile(
        defaultNetwork="blue", networks=[{"name": "macvlan", "interface": "data0"}]
    )
    got = pod_annotations(space.create_pod("p1"))
    assert got[DEFAULT_NETWORK_KEY] == f"{space.name}/blue"
    [selection] = parse_networks(got[NETWORKS_KEY])
    assert (selection.name, selection.interface) == ("macvlan", "data0")
    assert got[PROFILE_KEY] == profile


def test_a_pods_own_annotation_is_kept_under_a_default_profile(space: Space) -> None:
    space.nad("blue")
    space.nad("mine")
    space.profile(defaultNetwork="blue")
    got = pod_annotations(space.create_pod("p2", annotations={DEFAULT_NETWORK_KEY: "mine"}))
    assert got[DEFAULT_NETWORK_KEY] == "mine"


def test_the_opt_out_label_keeps_a_pod_unchanged(space: Space) -> None:
    space.nad("blue")
    space.profile(defaultNetwork="blue")
    got = pod_annotations(space.create_pod("p3", labels={"netshift.io/inject": "disabled"}))
    assert DEFAULT_NETWORK_KEY not in got and PROFILE_KEY not in got


def test_a_namespace_without_profile_is_left_alone(space: Space) -> None:
    assert pod_annotations(space.create_pod("p4")) == {}


def test_kubectl_annotate_with_a_malformed_value_is_denied_with_the_webhooks_message(
    space: Space,
) -> None:
    space.create_pod("p5")
    value = json.dumps([{"name": "macvlan", "interface": "eth 0"}])
    result = space.kubectl("annotate", "pod", "p5", f"{NETWORKS_KEY}={value}", check=False)
    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert f'{NETWORKS_KEY}: element 0 ("macvlan"): field "interface"' in result.stderr
    assert "contains whitespace; expected a Linux interface name" in result.stderr


def test_kubectl_annotate_with_a_missing_nad_is_denied(space: Space) -> None:
    space.create_pod("p6")
    result = space.kubectl("annotate", "pod", "p6", f"{NETWORKS_KEY}=typo@net1", check=False)
    assert result.returncode != 0
    assert f"NetworkAttachmentDefinition {space.name}/typo does not exist" in result.stderr
    space.nad("typo")
    space.kubectl("annotate", "pod", "p6", f"{NETWORKS_KEY}=typo@net1")


def test_creating_a_pod_that_names_a_missing_nad_warns(space: Space) -> None:
    result = space.kubectl(
        "create", "-f", "-", input=space.pod_manifest("p7", annotations={NETWORKS_KEY: "later"})
    )
    assert "Warning:" in result.stderr and f"{space.name}/later does not exist" in result.stderr


def test_enforced_network_cannot_be_removed(space: Space) -> None:
    space.nad("sriov")
    space.profile(mode="Enforce", networks=[{"name": "sriov", "interface": "fast0"}])
    space.create_pod("p8")
    result = space.kubectl("annotate", "--overwrite", "pod", "p8", f"{NETWORKS_KEY}=", check=False)
    assert result.returncode != 0 and "(mode Enforce)" in result.stderr


def test_server_side_dry_run_is_answered_without_creating_anything(
    space: Space, kube: Kube
) -> None:
    space.nad("blue")
    space.profile(defaultNetwork="blue")
    result = space.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=space.pod_manifest("p9")
    )
    assert pod_annotations(json.loads(result.stdout))[DEFAULT_NETWORK_KEY] == f"{space.name}/blue"
    with pytest.raises(ApiError) as err:
        kube.get(f"/api/v1/namespaces/{space.name}/pods/p9")
    assert err.value.status == 404


def test_status_writes_that_leave_network_annotations_alone_pass(space: Space, kube: Kube) -> None:
    space.create_pod("p10", annotations={NETWORKS_KEY: "gone"})  # a missing NAD: only warned
    # Were the write evaluated, the missing NAD would be warned about again; it passes at once.
    result = space.kubectl("annotate", "pod", "p10", "k8s.v1.cni.cncf.io/network-status=[]")
    assert result.returncode == 0
    assert "Warning:" not in result.stderr, result.stderr
    pod = kube.get(f"/api/v1/namespaces/{space.name}/pods/p10")
    assert pod_annotations(pod)["k8s.v1.cni.cncf.io/network-status"] == "[]"


def test_pod_updates_that_leave_network_annotations_alone_are_not_sent_to_the_webhook(
    space: Space, webhook: Webhook
) -> None:
    space.create_pod("p13")
    before = webhook.metrics.requests_value("validate", "allowed")
    space.kubectl("annotate", "pod", "p13", "k8s.v1.cni.cncf.io/network-status=[]")
    space.kubectl("label", "pod", "p13", "tier=web")
    assert webhook.metrics.requests_value("validate", "allowed") == before  # matchConditions
    space.nad("blue")
    space.kubectl("annotate", "pod", "p13", f"{NETWORKS_KEY}=blue")
    space.kubectl("annotate", "pod", "p13", f"{DEFAULT_NETWORK_KEY}=blue")
    space.kubectl("annotate", "pod", "p13", f"{NETWORKS_KEY}-")
    assert webhook.metrics.requests_value("validate", "allowed") == before + 3


def test_with_the_webhook_down_only_what_netshift_governs_is_refused(
    namespace: str, kube: Kube, cluster: LocalCluster
) -> None:
    """failurePolicy Fail holds where a profile applies and for network edits; nowhere else."""
    token = uuid.uuid4().hex[:8]
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, pending_pod("before", {NETWORKS_KEY: "blue"}))
    nad = json.dumps({"cniVersion": "1.0.0", "name": "blue", "type": "bridge"})
    kube.create(
        nad_path(namespace),
        {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "blue"},
            "spec": {"config": nad},
        },
    )
    name = f"netshift-down-{token}"
    objects = webhook_configurations(
        ca_bundle=b"",
        url=f"https://127.0.0.1:{free_port()}",  # nothing listens there
        name=name,
        namespace_labels={TEST_LABEL: f"down-{token}"},
        timeout_seconds=2,
    )
    apply_webhook_configurations(kube, objects)
    try:
        # A label change: the namespace webhook is called, fails, and is ignored.
        kube.patch_merge(
            f"/api/v1/namespaces/{namespace}",
            {"metadata": {"labels": {TEST_LABEL: f"down-{token}"}}},
        )

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            overwrite = ("--overwrite",) if args[0] in ("annotate", "label") else ()
            result: subprocess.CompletedProcess[str] = cluster.kubectl(
                "-n", namespace, *args, *overwrite, check=False
            )
            return result

        def refused(*args: str) -> bool:
            done = kubectl(*args)
            return done.returncode != 0 and "failed calling webhook" in done.stderr

        # The configurations take effect in the apiserver shortly after they are written.
        wait_for(
            lambda: refused("annotate", "pod", "before", f"{NETWORKS_KEY}=red"),
            20,
            what="a networks edit refused by the unreachable webhook",
        )
        assert refused("annotate", "pod", "before", f"{DEFAULT_NETWORK_KEY}=red")
        for args in (
            ("annotate", "pod", "before", "k8s.v1.cni.cncf.io/network-status=[]"),
            ("annotate", "pod", "before", f"{NETWORKS_KEY}=blue"),  # the same value
            ("label", "pod", "before", "tier=web"),
            ("label", "network-attachment-definitions", "blue", "tier=web"),
        ):
            done = kubectl(*args)
            assert done.returncode == 0, (args, done.stderr)
        # A namespace no profile selects: pods without networks are created; a pod that
        # names networks still needs validation.
        kube.create(pods, pending_pod("plain"))
        with pytest.raises(ApiError) as err:
            kube.create(pods, pending_pod("named", {NETWORKS_KEY: "blue"}))
        assert 'failed calling webhook "validate.pods.netshift.io"' in str(err.value)
        # Selected (as the controller labels it): every pod is refused.
        kube.patch_merge(
            f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {SELECTED_LABEL: "true"}}}
        )
        with pytest.raises(ApiError) as err:
            kube.create(pods, pending_pod("governed"))
        assert 'failed calling webhook "mutate.pods.netshift.io"' in str(err.value)
        # A NAD's config is still checked.
        changed = json.dumps({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan"})
        assert refused(
            "patch",
            "network-attachment-definitions",
            "blue",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"config": changed}}),
        )
    finally:
        delete_webhook_configurations(kube, name)


def pending_pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "nodeSelector": {"netshift.io/no-such-node": "true"},
            "containers": [{"name": "c", "image": "registry.example/pause:3"}],
        },
    }


def test_pods_of_a_namespace_no_profile_selects_never_reach_the_mutating_webhook(
    namespace: str, kube: Kube, webhook: Webhook
) -> None:
    kube.patch_merge(
        f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {TEST_LABEL: webhook.token}}}
    )
    before = webhook.metrics.requests_value("mutate", "allowed")
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pending_pod("p"))
    assert webhook.metrics.requests_value("mutate", "allowed") == before


def test_the_namespace_webhook_labels_a_namespace_in_the_write_that_selects_it(
    kube: Kube, webhook: Webhook
) -> None:
    team = uuid.uuid4().hex[:8]
    profile = f"labels-{team}"
    kube.create(
        PROFILES_PATH,
        {
            "apiVersion": "netshift.io/v1alpha1",
            "kind": "NetworkProfile",
            "metadata": {"name": profile},
            "spec": {"namespaceSelector": {"matchLabels": {"netshift.io/team": team}}},
        },
    )
    name = f"t-{team}"
    path = f"/api/v1/namespaces/{name}"
    try:
        wait_for(
            lambda: any(p.name == profile for p in webhook.caches.profiles()),
            10,
            what="the profile in the webhook's cache",
        )
        labels = {TEST_LABEL: webhook.token, "netshift.io/team": team}
        made = kube.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})
        assert made["metadata"]["labels"][SELECTED_LABEL] == "true"
        # Relabelled out of the profile: the label goes in the same write.
        moved = kube.patch_merge(path, {"metadata": {"labels": {"netshift.io/team": "other"}}})
        assert SELECTED_LABEL not in moved["metadata"]["labels"]
        # A write of the label alone is not sent (the controller's own, already right).
        before = webhook.metrics.requests_value("mutate-namespace", "allowed")
        kube.patch_merge(path, {"metadata": {"labels": {SELECTED_LABEL: "true"}}})
        assert webhook.metrics.requests_value("mutate-namespace", "allowed") == before
        assert webhook.metrics.requests_value("mutate-namespace", "patched") >= 2
    finally:
        kube.delete(f"{PROFILES_PATH}/{profile}")
        with contextlib.suppress(ApiError):
            kube.delete(path)


def test_the_webhook_counted_what_the_apiserver_sent(space: Space, webhook: Webhook) -> None:
    before = webhook.metrics.requests_value("mutate", "allowed")
    space.create_pod("p11")
    assert webhook.metrics.requests_value("mutate", "allowed") == before + 1


def requests(endpoint: str, outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("netshift_webhook_requests_total", (("endpoint", endpoint), ("outcome", outcome)))


def test_scraped_metrics_count_each_admission_the_apiserver_sent(
    space: Space, webhook: Webhook
) -> None:
    before = webhook.scrape()
    space.create_pod("p12", annotations={NETWORKS_KEY: "later"})  # validated: it names one
    after = webhook.scrape()
    for endpoint in ("mutate", "validate"):
        key = requests(endpoint, "allowed")
        assert after[key] == before.get(key, 0.0) + 1, endpoint
    count = (
        "netshift_webhook_request_duration_seconds_count",
        (("endpoint", "mutate"), ("outcome", "allowed")),
    )
    assert after[count] == before.get(count, 0.0) + 1
    assert after[("netshift_webhook_cache_synced", ())] == 1.0
    assert after[("netshift_webhook_certificate_expiry_timestamp_seconds", ())] > 0
    assert after[("netshift_webhook_certificate_reloads_total", (("result", "success"),))] >= 1


def test_pods_a_replicaset_creates_get_their_networks(space: Space, kube: Kube) -> None:
    # The controller's pods reach admission without metadata.namespace: request.namespace counts.
    space.nad("blue")
    space.profile(defaultNetwork="blue")
    pod = json.loads(space.pod_manifest("unused"))
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "t"}},
            "template": {"metadata": {"labels": {"app": "t"}}, "spec": pod["spec"]},
        },
    }
    space.kubectl("create", "-f", "-", input=json.dumps(rs))

    def pods() -> list[dict[str, Any]]:
        items = kube.get(f"/api/v1/namespaces/{space.name}/pods", labelSelector="app=t")["items"]
        return items if len(items) == 2 else []

    for item in wait_for(pods, 30, what="the ReplicaSet's pods"):
        assert pod_annotations(item)[DEFAULT_NETWORK_KEY] == f"{space.name}/blue"


@pytest.mark.parametrize("workers", [1, 2])
def test_netshift_webhook_command_manages_its_secret_and_drains_on_sigterm(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path, workers: int
) -> None:
    port, health = free_port(), free_port()
    argv = [
        *main_python(),
        "webhook",
        f"--kubeconfig={cluster.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--port={port}",
        f"--health-port={health}",
        f"--tls-secret-namespace={namespace}",
        "--tls-hosts=127.0.0.1",
        "--webhook-config-name=",
        "--shutdown-delay=2",
        f"--workers={workers}",
        f"--metrics-dir={tmp_path / 'metrics'}",
    ]
    log = tmp_path / "webhook.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            try:
                with httpx.Client(trust_env=False) as http:
                    return http.get(f"http://127.0.0.1:{health}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(ready, 30, what="the webhook's /readyz")
        except TimeoutError:
            pytest.fail(f"netshift webhook never became ready; its log:\n{log.read_text()[-3000:]}")
        secret = kube.get(f"/api/v1/namespaces/{namespace}/secrets/netshift-webhook-tls")
        ca = base64.b64decode(secret["data"]["ca.crt"]).decode()
        ctx = ssl.create_default_context(cadata=ca)
        review = pod_review(deployment_pod(), namespace=namespace, uid="cli")
        sent = 8
        for _ in range(sent):  # each on a new connection, which the kernel gives to any worker
            with httpx.Client(verify=ctx, trust_env=False) as http:
                answer = http.post(f"https://127.0.0.1:{port}/mutate", json=review).json()
            assert answer["response"]["uid"] == "cli" and answer["response"]["allowed"]
        for _ in range(4):  # each scrape answered by any worker counts them all
            with httpx.Client(trust_env=False) as http:
                metrics = http.get(f"http://127.0.0.1:{health}/metrics").text
            assert (
                f'netshift_webhook_requests_total{{endpoint="mutate",outcome="allowed"}} {sent}.0'
                in metrics
            ), metrics
        with httpx.Client(verify=ctx, trust_env=False) as http:
            # SIGTERM: not ready any more, but admission is still answered while draining.
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: not ready(), 5, what="/readyz to turn 503 after SIGTERM")
            assert http.post(f"https://127.0.0.1:{port}/mutate", json=review).status_code == 200
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_managed_tls_fills_a_precreated_secret_and_keeps_its_metadata(
    kube: Kube, namespace: str
) -> None:
    # As manifests/webhook/secret.yaml leaves it: empty, labelled, no data field.
    kube.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "tls", "labels": {"keep": "me"}}, "type": "Opaque"},
    )
    store = KubeSecretStore(kube, namespace, "tls")
    manager = SecretCertManager(store, dns_names=["svc.ns.svc"])
    material = manager.reconcile()
    secret = kube.get(f"/api/v1/namespaces/{namespace}/secrets/tls")
    assert secret["metadata"]["labels"] == {"keep": "me"}
    assert base64.b64decode(secret["data"]["tls.crt"]) == material.cert_pem
    version = secret["metadata"]["resourceVersion"]
    assert SecretCertManager(store, dns_names=["svc.ns.svc"]).reconcile() == material
    after = kube.get(f"/api/v1/namespaces/{namespace}/secrets/tls")
    assert after["metadata"]["resourceVersion"] == version  # nothing rewritten


# --- NetworkAttachmentDefinitions ----------------------------------------------------


def nad_manifest(name: str, config: dict[str, Any] | str) -> str:
    return json.dumps(nad_object(name, config))


def host_local(name: str, **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": f"br-{name}"[:15],
        "ipam": {"type": "host-local", "subnet": "10.251.0.0/24", **ipam},
    }


def apply_nad(space: Space, name: str, config: dict[str, Any] | str) -> Any:
    return space.kubectl("apply", "-f", "-", input=nad_manifest(name, config), check=False)


@pytest.mark.parametrize(
    ("config", "field", "says"),
    [
        ('{"cniVersion": "1.0.0", "type": "bridge"', "spec.config", "is not valid JSON"),
        (
            {"cniVersion": "1.0.0", "name": "x", "type": "../../usr/bin/evil"},
            "spec.config.type",
            "is not a plain plugin file name",
        ),
        (
            {"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}, {}]},
            "spec.config.plugins[1].type",
            '"type" is missing',
        ),
        ({"cniVersion": "1.0.0", "name": "x", "plugins": []}, "spec.config.plugins", "non-empty"),
    ],
)
def test_kubectl_apply_of_a_malformed_nad_is_denied_naming_the_field(
    space: Space, config: dict[str, Any] | str, field: str, says: str
) -> None:
    result = apply_nad(space, "bad", config)
    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert f"NetworkAttachmentDefinition {space.name}/bad: {field}: " in result.stderr
    assert says in result.stderr


def test_with_the_nad_policy_on_a_data_dir_outside_its_prefixes_is_denied(
    space: Space, kube: Kube, webhook: Webhook
) -> None:
    # Created before the policy: it stays, and edits that leave its config alone pass.
    assert apply_nad(space, "old", host_local("old", dataDir="/etc")).returncode == 0
    configmaps = f"/api/v1/namespaces/{webhook.secret_namespace}/configmaps"
    policy = "enabled: true\nipamDataDirPrefixes: [/var/lib/cni/networks]\n"
    kube.create(
        configmaps, {"metadata": {"name": POLICY_CONFIGMAP}, "data": {"policy.yaml": policy}}
    )
    try:
        wait_for(lambda: webhook.caches.nad_policy().enabled, 10, what="the policy in the cache")
        result = apply_nad(space, "etc", host_local("etc", dataDir="/etc"))
        assert result.returncode != 0
        assert f"{space.name}/etc: spec.config.ipam.dataDir: '/etc' is outside" in result.stderr
        assert '"/var/lib/cni/networks"' in result.stderr
        ok = host_local("ok", dataDir="/var/lib/cni/networks/ok")
        assert apply_nad(space, "ok", ok).returncode == 0
        space.kubectl("label", "network-attachment-definitions", "old", "team=a")
    finally:
        kube.delete(f"{configmaps}/{POLICY_CONFIGMAP}")
    wait_for(lambda: not webhook.caches.nad_policy().enabled, 10, what="the policy off again")
    assert apply_nad(space, "etc", host_local("etc", dataDir="/etc")).returncode == 0
