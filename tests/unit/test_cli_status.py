"""`kubectl netshift status` (cli/status.py) from objects as the API returns them, and the
plugin's command line (cli/kubectl_plugin.py): pure, no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from cli.kubectl_plugin import build_parser
from cli.status import Workload, report, webhook_line, workload
from controller.progress import read_progress


def deployment(replicas: int, ready: int | None) -> dict[str, Any]:
    status = {} if ready is None else {"readyReplicas": ready}
    return {"kind": "Deployment", "spec": {"replicas": replicas}, "status": status}


def daemonset(desired: int, ready: int) -> dict[str, Any]:
    return {
        "kind": "DaemonSet",
        "status": {"desiredNumberScheduled": desired, "numberReady": ready},
    }


def configs(ca: bool = True, policy: str = "Fail") -> list[dict[str, Any]]:
    client = {"caBundle": "LS0t"} if ca else {}
    return [
        {
            "webhooks": [
                {"name": "mutate.pods.netshift.io", "failurePolicy": policy, "clientConfig": client}
            ]
        },
        {
            "webhooks": [
                {
                    "name": "validate.pods.netshift.io",
                    "failurePolicy": policy,
                    "clientConfig": client,
                }
            ]
        },
    ]


def profile(name: str, progressing: str, complete: str = "False", failed: int = 0) -> Any:
    return read_progress(
        {
            "metadata": {"name": name, "generation": 1},
            "status": {
                "observedGeneration": 1,
                "pods": {"desired": 3, "converged": 3 - failed, "failed": failed},
                "conditions": [
                    {"type": "Progressing", "status": "False", "reason": progressing},
                    {"type": "Complete", "status": complete, "reason": "AllPodsConverged"},
                ],
            },
        }
    )


HEALTHY = [
    workload("netshift-webhook", deployment(2, 2)),
    workload("netshift-controller", deployment(2, 2)),
    workload("netshift-agent", daemonset(3, 3)),
]


def test_workloads_count_ready_of_wanted_and_a_missing_one_is_not_installed() -> None:
    assert workload("netshift-webhook", deployment(2, None)) == Workload("netshift-webhook", 2, 0)
    assert workload("netshift-agent", daemonset(3, 2)).line() == "netshift-agent         2/3 ready"
    assert not workload("netshift-agent", daemonset(3, 2)).healthy
    assert workload("netshift-webhook", None).line().endswith("not installed")


def test_all_ready_with_a_leader_and_complete_rollouts_is_healthy() -> None:
    lines, ok = report(
        HEALTHY, "netshift-controller-abc", configs(), [profile("blue", "RolloutFinished", "True")]
    )
    assert ok
    assert lines[1] == "netshift-controller    2/2 ready, leader netshift-controller-abc"
    assert lines[3] == "webhook configurations   2 webhooks, failurePolicy Fail, CA bundle set"
    assert lines[-1].startswith("NetworkProfile blue: Complete: 3/3 converged")


@pytest.mark.parametrize(
    "case",
    ["agent not ready", "no leader", "no CA bundle", "not installed", "rollout failed"],
)
def test_anything_wrong_makes_it_unhealthy_and_says_what(case: str) -> None:
    workloads, leader, hooks = list(HEALTHY), "c-1", configs()
    profiles = [profile("blue", "RolloutFinished", "True")]
    if case == "agent not ready":
        workloads[2] = workload("netshift-agent", daemonset(3, 2))
    elif case == "no leader":
        leader = ""
    elif case == "no CA bundle":
        hooks = configs(ca=False)
    elif case == "not installed":
        hooks = [None, None]  # type: ignore[list-item]
    else:
        profiles.append(profile("red", "FailureThresholdReached", failed=1))
    lines, ok = report(workloads, leader, hooks, profiles)
    assert not ok
    shown = "\n".join(lines)
    assert {
        "agent not ready": "2/3 ready",
        "no leader": "no leader",
        "no CA bundle": "no CA bundle yet: mutate.pods.netshift.io, validate.pods.netshift.io",
        "not installed": "webhook configurations   not installed",
        "rollout failed": "NetworkProfile red: Failed",
    }[case] in shown


def test_a_webhook_configuration_set_to_ignore_is_shown() -> None:
    assert "failurePolicy Ignore" in webhook_line(configs(policy="Ignore"))[0]


def test_the_plugin_takes_the_netshift_commands_with_kubectls_kubeconfig_lookup() -> None:
    parser = build_parser()
    args = parser.parse_args(["plan", "-f", "p.yaml", "--kubeconfig", "/k"])
    assert (args.filename, args.kubeconfig, args.state_dir) == ("p.yaml", "/k", None)
    args = parser.parse_args(["rollout", "status", "blue", "--timeout", "2m"])
    assert (args.profile, args.timeout, args.state_dir) == ("blue", 120.0, None)
    assert parser.parse_args(["status"]).func.__module__ == "cli.status"
    with pytest.raises(SystemExit):
        parser.parse_args(["plan", "-f", "p.yaml", "--state-dir", "x"])  # no local cluster here
