"""The CNI config of a network the agent may attach: a NAD from the watch cache, or the cluster's.

A namespaced NAD is also held against the cluster's NAD policy (netshift.nadpolicy):
the webhook denies what the policy forbids at admission, and this refuses it at
attach time for NADs written before the policy was turned on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.metrics import REASON_CONFIG, REASON_NAD_MISSING, REASON_OTHER, REASON_POLICY
from netshift import annotations as ann
from netshift.cni.config import ConfList
from netshift.cni.nad import NadError, nad_conflist
from netshift.nadpolicy import OFF, NadPolicy, NadPolicyError, check_nad


class PodError(Exception):
    """A problem with one pod's wish that no retry can fix (bad annotation, missing NAD)."""

    def __init__(self, message: str, reason: str = REASON_OTHER) -> None:
        super().__init__(message)
        self.reason = reason  # one of agent.metrics' REASON_* values


class NetworkConfigs:
    def __init__(
        self,
        nad: Callable[[str], Mapping[str, Any] | None],
        cluster_net: ConfList | None,
        policy: Callable[[], NadPolicy] = lambda: OFF,
    ) -> None:
        self._nad = nad  # "ns/name" -> the NAD object, or None
        self.cluster_net = cluster_net
        self._policy = policy  # the cluster's NAD policy now (raises NadPolicyError if invalid)

    def conflist(self, ref: ann.NetworkRef) -> ConfList:
        if not ref.namespace:
            if self.cluster_net is not None and ref.name == self.cluster_net.name:
                return self.cluster_net
            raise PodError(f"cluster network {ref.name!r} is not known to this agent")
        nad = self._nad(f"{ref.namespace}/{ref.name}")
        try:
            conflist = nad_conflist(nad, ref)
        except NadError as err:
            raise PodError(str(err), REASON_NAD_MISSING if nad is None else REASON_CONFIG) from err
        assert nad is not None
        self._check_policy(ref, str((nad.get("spec") or {}).get("config") or ""))
        return conflist

    def _check_policy(self, ref: ann.NetworkRef, config: str) -> None:
        try:
            policy = self._policy()
        except NadPolicyError as err:
            # As the webhook does: an unreadable policy must not silently lift its restrictions.
            raise PodError(
                f"NetworkAttachmentDefinition {ref} not attached: the cluster's NAD policy is "
                f"invalid ({err}); fix the policy ConfigMap",
                REASON_POLICY,
            ) from err
        forbidden = [
            p for p in check_nad(config, policy, namespace=ref.namespace) if p.kind == "policy"
        ]
        if forbidden:
            raise PodError(
                f"NetworkAttachmentDefinition {ref} is forbidden by the cluster's NAD policy: "
                + "; ".join(str(p) for p in forbidden),
                REASON_POLICY,
            )

    def conflist_or_none(self, ref: ann.NetworkRef) -> ConfList | None:
        try:
            return self.conflist(ref)
        except PodError:
            return None
