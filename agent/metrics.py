"""The agent's Prometheus series (prometheus_client, on a registry of its own).

Defined here, called from the agent's reconcile by whoever wires them in:
`observe(operation, seconds, ok)` after each attach, detach or default switch,
`failed(operation, reason)` for each failure, `records_on_disk`,
`orphaned_records` (see `orphaned`) and `queue_depth` as live gauges
(`set_function`), `queue_retries` per retry.
Serve them with `netshift.metrics.HealthServer(metrics.registry, host, port)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from netshift.metrics import OPERATION_BUCKETS, new_registry, sample_value

Operation = Literal["attach", "detach", "switch"]
OPERATIONS: Final = ("attach", "detach", "switch")

# Failure reasons: a small fixed set, so that the series stay few.
REASON_CNI: Final = "cni_error"  # the plugin returned a CNI error object
REASON_TIMEOUT: Final = "timeout"  # the plugin was killed after its timeout
REASON_NETNS: Final = "netns_not_found"  # the pod's network namespace could not be found
REASON_NAD_MISSING: Final = "nad_missing"  # the NetworkAttachmentDefinition does not exist
REASON_CONFIG: Final = "invalid_config"  # the NAD's CNI config does not parse
REASON_NODE_CONF: Final = "node_conf"  # a NAD without spec.config: no usable conf file on the node
REASON_POLICY: Final = "nad_policy"  # the cluster's NAD policy forbids the config
REASON_VERIFY: Final = "verify_failed"  # netlink does not show what the plugin reported
REASON_NO_DEFAULT_ROUTE: Final = "no_default_route"  # a new default whose result has none
REASON_OTHER: Final = "other"
REASONS: Final = (
    REASON_CNI,
    REASON_TIMEOUT,
    REASON_NETNS,
    REASON_NAD_MISSING,
    REASON_CONFIG,
    REASON_NODE_CONF,
    REASON_POLICY,
    REASON_VERIFY,
    REASON_NO_DEFAULT_ROUTE,
    REASON_OTHER,
)

_HELP: Final = {
    "attach": "Time to attach one network to a running pod (CNI ADD, verify, record), by result.",
    "detach": "Time to detach one network from a running pod (CNI DEL, cleanup), by result.",
    "switch": "Time to switch a pod's default network, make-before-break, by result "
    "(the drain period before the old network is removed is not included).",
}


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        r = self.registry
        self.durations: dict[str, Histogram] = {
            "attach": Histogram(
                "netshift_agent_attach_duration_seconds",
                _HELP["attach"],
                ("result",),
                buckets=OPERATION_BUCKETS,
                registry=r,
            ),
            "detach": Histogram(
                "netshift_agent_detach_duration_seconds",
                _HELP["detach"],
                ("result",),
                buckets=OPERATION_BUCKETS,
                registry=r,
            ),
            "switch": Histogram(
                "netshift_agent_default_switch_duration_seconds",
                _HELP["switch"],
                ("result",),
                buckets=OPERATION_BUCKETS,
                registry=r,
            ),
        }
        self.failures = Counter(
            "netshift_agent_failures",
            "Failed attaches, detaches and default switches, by operation and reason ("
            + ", ".join(REASONS)
            + ").",
            ("operation", "reason"),
            registry=r,
        )
        self.records_on_disk = Gauge(
            "netshift_agent_records",
            "Attachment records in the node's record store.",
            registry=r,
        )
        self.orphaned_records = Gauge(
            "netshift_agent_orphaned_records",
            "Attachment records of pods that are gone (deleted, Succeeded or Failed) whose CNI "
            "DEL has not succeeded yet: they still hold addresses. Above 0 for long, the "
            "clean-up is stuck.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "netshift_agent_queue_depth",
            "Pods queued, being reconciled or waiting for a retry.",
            registry=r,
        )
        self.nad_policy_enabled = Gauge(
            "netshift_agent_nad_policy_enabled",
            "1 while the cluster's NAD policy is enabled and held at attach time, 0 while it is "
            "off, -1 while its ConfigMap is invalid (then namespaced NADs are not attached).",
            registry=r,
        )
        self.queue_retries = Counter(
            "netshift_agent_queue_retries",
            "Pod reconciles scheduled again after a failure or an unfinished plan.",
            registry=r,
        )

    def observe(self, operation: Operation, seconds: float, ok: bool) -> None:
        self.durations[operation].labels("success" if ok else "failure").observe(seconds)

    def failed(self, operation: Operation, reason: str) -> None:
        self.failures.labels(operation, reason if reason in REASONS else REASON_OTHER).inc()

    def value(self, name: str, **labels: str) -> float:
        return sample_value(self.registry, name, **labels)


def orphaned(records: Iterable[tuple[str, int]], pods: Mapping[str, Mapping[str, Any]]) -> int:
    """Records (pod UID, how many) whose pod is gone: not watched any more, or finished.

    The pods the reconciler releases at once (agent/reconcile.py): a terminating pod
    whose sandbox is still there keeps its networks on purpose and is not counted.
    """
    finished = ("Succeeded", "Failed")
    return sum(
        n
        for uid, n in records
        if uid not in pods or (pods[uid].get("status") or {}).get("phase") in finished
    )
