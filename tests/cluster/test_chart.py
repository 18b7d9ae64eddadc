"""The Helm chart (charts/netshift) is manifests/, made by scripts/gen_chart.py: the committed
chart is what the script makes, `helm lint` is clean, `helm template` with the default values
gives exactly the objects of `kubectl kustomize manifests/`, and each value changes what it says.

Real tools, no cluster: the pinned kubectl (kustomize) and helm (scripts/build-helm.sh).
Installing it on a real node: tests/realnode/test_realnode_helm.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from localcluster import binaries
from netshift.nadpolicy import policy_from_configmap
from support.require import plane_prerequisites, require

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "netshift"
Key = tuple[str, str, str, str]


def _helm() -> str:
    try:
        return binaries.helm()
    except binaries.MissingBinary as err:
        require(False, str(err))
        raise


def helm_template(*args: str) -> dict[Key, dict[str, Any]]:
    done = subprocess.run(
        [_helm(), "template", "netshift", str(CHART), "--include-crds", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return by_key(yaml.safe_load_all(done.stdout))


def kustomize(directory: Path) -> dict[Key, dict[str, Any]]:
    plane_prerequisites()
    done = subprocess.run(
        [binaries.find("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    return by_key(yaml.safe_load_all(done.stdout))


def by_key(docs: Any) -> dict[Key, dict[str, Any]]:
    objects: dict[Key, dict[str, Any]] = {}
    for obj in docs:
        if not obj:
            continue
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in objects, f"{key} twice"
        objects[key] = obj
    return objects


def find(objects: dict[Key, dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for (_, k, _, n), o in objects.items() if k == kind and n == name]
    return obj


def container(obj: dict[str, Any]) -> dict[str, Any]:
    (c,) = obj["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def test_the_committed_chart_is_what_the_script_makes_from_the_manifests() -> None:
    plane_prerequisites()
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_chart.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_helm_lint_is_clean_with_the_defaults_and_with_every_option_on() -> None:
    for extra in ([], ["--set", "nadPolicy.create=true,monitoring.prometheusRule.enabled=true"]):
        done = subprocess.run(
            [_helm(), "lint", "--strict", str(CHART), *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout, done.stdout


def test_helm_template_with_the_default_values_is_the_kustomize_build() -> None:
    # Parsed objects, not text: key order and quoting may differ, nothing else may.
    rendered = helm_template()
    built = kustomize(REPO / "manifests")
    assert sorted(rendered) == sorted(built)
    for key, obj in built.items():
        assert rendered[key] == obj, key


def test_the_monitoring_value_adds_the_prometheus_rule_of_manifests_monitoring() -> None:
    options = "monitoring.prometheusRule.enabled=true,monitoring.prometheusRule.labels.release=kps"
    rendered = helm_template("--set", options)
    ((key, rule),) = kustomize(REPO / "manifests" / "monitoring").items()
    source = yaml.safe_load((REPO / "manifests/monitoring/netshift.rules.yaml").read_text())
    assert rule["spec"] == source
    ours = rendered.pop(key)
    assert ours["spec"] == rule["spec"]  # the alert texts' {{ $labels }} reach Prometheus intact
    assert ours["metadata"]["labels"] == {**rule["metadata"]["labels"], "release": "kps"}
    assert rendered == helm_template()


def test_each_value_changes_what_it_says() -> None:
    values = [
        "image.repository=registry.example/netshift",
        "image.tag=1.2.3",
        "image.pullPolicy=Always",
        "webhook.replicas=3",
        "controller.replicas=1",
        "webhook.failurePolicy=Ignore",
        "agent.resources.limits.memory=1Gi",
        "agent.stateHostPath=/data/netshift",
        "agent.extraArgs={--cni-timeout=60}",
        "metrics.service.enabled=false",
    ]
    objects = helm_template("--set", ",".join(values))
    default = helm_template()
    webhook = find(objects, "Deployment", "netshift-webhook")
    controller = find(objects, "Deployment", "netshift-controller")
    agent = find(objects, "DaemonSet", "netshift-agent")
    for workload in (webhook, controller, agent):
        assert container(workload)["image"] == "registry.example/netshift:1.2.3"
        assert container(workload)["imagePullPolicy"] == "Always"
    assert (webhook["spec"]["replicas"], controller["spec"]["replicas"]) == (3, 1)
    configs = [
        find(objects, "MutatingWebhookConfiguration", "netshift"),
        find(objects, "ValidatingWebhookConfiguration", "netshift"),
    ]
    assert {w["failurePolicy"] for c in configs for w in c["webhooks"]} == {"Ignore"}
    assert container(agent)["resources"]["limits"] == {"memory": "1Gi"}
    assert (
        container(agent)["resources"]["requests"]
        == (container(find(default, "DaemonSet", "netshift-agent"))["resources"]["requests"])
    )
    state = next(v for v in agent["spec"]["template"]["spec"]["volumes"] if v["name"] == "state")
    assert state["hostPath"]["path"] == "/data/netshift"
    default_args = container(find(default, "DaemonSet", "netshift-agent"))["args"]
    assert container(agent)["args"] == [*default_args, "--cni-timeout=60"]
    gone = {k for k in default if k not in objects}
    assert {name for *_, name in gone} == {"netshift-agent-metrics", "netshift-controller-metrics"}


def test_the_nad_policy_value_creates_the_example_policy_the_components_read() -> None:
    example = yaml.safe_load((REPO / "manifests/examples/nad-policy.yaml").read_text())
    configmap = find(
        helm_template("--set", "nadPolicy.create=true"), "ConfigMap", example["metadata"]["name"]
    )
    assert yaml.safe_load(configmap["data"]["policy.yaml"]) == yaml.safe_load(
        example["data"]["policy.yaml"]
    )
    assert policy_from_configmap(configmap) == policy_from_configmap(example)
    assert policy_from_configmap(configmap).enabled


def test_a_misspelled_or_invalid_value_is_refused_by_the_schema() -> None:
    for bad in ("webhook.replica=3", "webhook.failurePolicy=Sometimes", "image.pullPolicy=Often"):
        done = subprocess.run(
            [_helm(), "template", "netshift", str(CHART), "--set", bad],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
