"""Every well-known name netshift reads or writes on Kubernetes objects, and the states it reports.

One home for them, so that the webhook, the controller, the agent and the
tools agree by construction (pure: constants only).
"""

from __future__ import annotations

from typing import Final

# -- the multi-network contract (Network Plumbing WG / Multus) --------------------
NETWORKS_KEY: Final = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NETWORK_KEY: Final = "v1.multus-cni.io/default-network"
NETWORK_STATUS_KEY: Final = "k8s.v1.cni.cncf.io/network-status"

# -- netshift's own annotations on pods ----------------------------------------------
STATUS_KEY: Final = "netshift.io/status"  # the agent's report, one record per attachment
# How the agent treats the old default network after a live switch:
# {"oldDefault": "Keep" | "Remove", "drainSeconds": N}. Set by the controller from
# the NetworkProfile's rollout, or by hand; absent means Keep.
SWITCH_POLICY_KEY: Final = "netshift.io/default-switch"
INJECTED_KEY: Final = "netshift.io/injected"  # what the applied profile contributed
PROFILE_KEY: Final = "netshift.io/profile"  # the profile last applied
ROLLOUT_STARTED_KEY: Final = "netshift.io/rollout-started"  # RFC 3339 time of the patch
ROLLOUT_PROFILE_KEY: Final = "netshift.io/rollout-profile"  # the rollout that patched it
# The desired hash (netshift.podstatus.desired_hash) of the wish the rollout wrote: while the
# pod's wish still hashes to it, what the agent does for it is the rollout's doing.
ROLLOUT_DESIRED_KEY: Final = "netshift.io/rollout-desired"

# -- labels ------------------------------------------------------------------------
INJECT_LABEL: Final = "netshift.io/inject"  # on a pod or namespace: "disabled" opts out
OPT_OUT_VALUE: Final = "disabled"
# On every namespace some NetworkProfile selects, and on no other: the mutating webhook is
# called only for pods of namespaces carrying it, so a netshift outage reaches no further.
# Kept by the controller (level-triggered) and by the webhook at namespace writes; a
# profile's namespaceSelector may not use it.
SELECTED_LABEL: Final = "netshift.io/selected"
SELECTED_VALUE: Final = "true"

# -- namespaces --------------------------------------------------------------------
NETSHIFT_NAMESPACE: Final = "netshift-system"
# Left alone by the webhook's configuration and by rollouts: netshift must never
# block its own pods or the cluster's.
SYSTEM_NAMESPACES: Final = ("kube-system", NETSHIFT_NAMESPACE)

# -- the NetworkProfile CRD ----------------------------------------------------------
PROFILE_GROUP: Final = "netshift.io"
PROFILE_VERSION: Final = "v1alpha1"
PROFILE_PLURAL: Final = "networkprofiles"
PROFILE_KIND: Final = "NetworkProfile"

# -- attachment states (records and the per-pod status) ------------------------------
PENDING: Final = "Pending"  # wanted, not attached yet (the status's name for Attaching)
ATTACHING: Final = "Attaching"  # ADD under way (or cut short by a crash)
ATTACHED: Final = "Attached"
DETACHING: Final = "Detaching"  # DEL under way, or failed and retried
FAILED: Final = "Failed"  # ADD failed and was rolled back; retried with backoff

# -- the per-pod phase of the agent's report -------------------------------------------
CONVERGED: Final = "Converged"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"

# -- roles of an attachment on a pod -------------------------------------------------
SECONDARY: Final = "secondary"  # asked for by the networks annotation
DEFAULT: Final = "default"  # carries the pod's default route
PREVIOUS_DEFAULT: Final = "previous-default"  # the default before a live switch (Keep / drain)
INCOMING_DEFAULT: Final = "incoming-default"  # attached for a switch, routes not moved yet
# A removed old default whose addresses Kubernetes still reports as the pod's: its interface
# is gone, its addresses answer through the default interface, and its CNI DEL (the release
# of its addresses) waits until the pod is gone (netshift.podip).
RETIRED_DEFAULT: Final = "retired-default"
