"""One typed view of a Kubernetes Pod, for every component (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from netshift.keys import (
    INJECT_LABEL,
    OPT_OUT_VALUE,
    PROFILE_KEY,
    ROLLOUT_PROFILE_KEY,
    ROLLOUT_STARTED_KEY,
)


@dataclass(frozen=True)
class Pod:
    """The parts of a Pod object that netshift's decisions read, typed (one view for all components).

    Built from the raw object with :meth:`from_object`; missing fields read as
    empty, never as an exception.
    """

    namespace: str
    name: str
    uid: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    phase: str = "Running"
    terminating: bool = False
    host_network: bool = False
    resource_version: str = ""
    # status.podIPs as the kubelet reports them (learnt when the sandbox was created)
    pod_ips: tuple[str, ...] = ()

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Pod:
        meta = obj.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            phase=str((obj.get("status") or {}).get("phase", "")),
            terminating=bool(meta.get("deletionTimestamp")),
            host_network=bool((obj.get("spec") or {}).get("hostNetwork", False)),
            resource_version=str(meta.get("resourceVersion", "")),
            pod_ips=_pod_ips(obj.get("status") or {}),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def eligible(self) -> bool:
        """Running, staying, on the pod network and not opted out: a pod a rollout may touch."""
        return (
            self.phase == "Running"
            and not self.terminating
            and not self.host_network
            and self.labels.get(INJECT_LABEL) != OPT_OUT_VALUE
        )

    def started_at(self) -> datetime | None:
        raw = self.annotations.get(ROLLOUT_STARTED_KEY)
        if not raw:
            return None
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return None

    def rollout_refs(self) -> set[str]:
        """Names of the rollouts this pod matters to, from its own annotations."""
        return {
            self.annotations[k]
            for k in (PROFILE_KEY, ROLLOUT_PROFILE_KEY)
            if self.annotations.get(k)
        }


def _pod_ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    ips = [str(e.get("ip", "")) for e in status.get("podIPs") or () if isinstance(e, Mapping)]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return tuple(ip for ip in ips if ip)
