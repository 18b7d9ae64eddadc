"""The CNI config of a network the agent may attach: a NAD from the watch cache, or the cluster's.

A NAD without spec.config is the node's own conf file of that name (Multus's
lookup, netshift.cni.nodeconf), read at each attach: the attachment record keeps
what the ADD ran, so its DEL stays right after the file changed or went.

A namespaced NAD is also held against the cluster's NAD policy (netshift.nadpolicy):
the webhook denies what the policy forbids at admission, and this refuses it at
attach time for NADs written before the policy was turned on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.metrics import (
    REASON_CONFIG,
    REASON_NAD_MISSING,
    REASON_NODE_CONF,
    REASON_OTHER,
    REASON_POLICY,
)
from netshift import annotations as ann
from netshift.cni.config import ConfList
from netshift.cni.nad import NAD_MISSING, NAD_NODE_CONF, NadConfig, NadError, resolve_nad
from netshift.cni.nodeconf import NodeConf
from netshift.nadpolicy import CONFIG_FIELD, OFF, NadPolicy, NadPolicyError, Problem, check_nad


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
        node_conf: Callable[[str], NodeConf] | None = None,
    ) -> None:
        self._nad = nad  # "ns/name" -> the NAD object, or None
        self.cluster_net = cluster_net
        self._policy = policy  # the cluster's NAD policy now (raises NadPolicyError if invalid)
        self._node_conf = node_conf  # network name -> this node's conf file (NodeConfDir.lookup)

    def resolve(self, ref: ann.NetworkRef) -> NadConfig:
        """What `ref` stands for on this node now; raises PodError with the reason."""
        if not ref.namespace:
            if self.cluster_net is not None and ref.name == self.cluster_net.name:
                return NadConfig(self.cluster_net, "")
            raise PodError(f"cluster network {ref.name!r} is not known to this agent")
        nad = self._nad(f"{ref.namespace}/{ref.name}")
        try:
            found = resolve_nad(nad, ref, self._node_conf)
        except NadError as err:
            reason = {NAD_MISSING: REASON_NAD_MISSING, NAD_NODE_CONF: REASON_NODE_CONF}
            raise PodError(str(err), reason.get(err.kind, REASON_CONFIG)) from err
        # The policy judges what will run: spec.config, or the node file's content.
        self._check_policy(ref, found.text, found.node_file)
        return found

    def conflist(self, ref: ann.NetworkRef) -> ConfList:
        return self.resolve(ref).conflist

    def _check_policy(self, ref: ann.NetworkRef, config: str, node_file: str = "") -> None:
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
            what = f" (defined per node by {node_file})" if node_file else ""
            raise PodError(
                f"NetworkAttachmentDefinition {ref}{what} is forbidden by the cluster's NAD "
                "policy: " + "; ".join(_problem_text(p, node_file) for p in forbidden),
                REASON_POLICY,
            )

    def conflist_or_none(self, ref: ann.NetworkRef) -> ConfList | None:
        try:
            return self.conflist(ref)
        except PodError:
            return None


def _problem_text(problem: Problem, node_file: str) -> str:
    """A policy problem, its field named in the node's file rather than in spec.config."""
    if node_file and problem.field.startswith(CONFIG_FIELD):
        return f"{node_file}{problem.field[len(CONFIG_FIELD) :]}: {problem.message}"
    return str(problem)
