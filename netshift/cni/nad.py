"""From a NetworkAttachmentDefinition to a CNI invocation (pure).

:func:`resolve_nad` turns the NAD object into the :class:`ConfList` that ADD
runs (from ``spec.config``, or from the node's conf file of that name when
``spec.config`` is empty); :func:`attachment_runtime` builds the per-attachment
parameters (the same for ADD and for the DEL that undoes it, as libcni passes them);
:func:`recorded_invocation` rebuilds both from an attachment record, so that a
DEL uses exactly what its ADD used even after the NAD changed or vanished.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from netshift.annotations import AnnotationError, NetworkRef, NetworkSelection, parse_networks
from netshift.attachments import AttachmentRecord
from netshift.cni.config import (
    CniError,
    ConfList,
    RuntimeConf,
    capability_args,
    k8s_cni_args,
    load_conflist,
)
from netshift.cni.nodeconf import NodeConf, NodeConfError, per_node_summary

__all__ = [
    "NAD_CONFIG",
    "NAD_MISSING",
    "NAD_NODE_CONF",
    "NadConfig",
    "NadError",
    "attachment_runtime",
    "nad_conflist",
    "nad_spec_config",
    "recorded_invocation",
    "recorded_selection",
    "resolve_nad",
]


# What kind of problem a NadError is (for the agent's metrics).
NAD_MISSING = "missing"
NAD_CONFIG = "config"
NAD_NODE_CONF = "node_conf"


class NadError(ValueError):
    """The NAD a pod asks for cannot be used; the message names it and says what to fix."""

    def __init__(self, ref: NetworkRef, message: str, kind: str = NAD_CONFIG) -> None:
        super().__init__(message)
        self.ref = ref
        self.kind = kind  # NAD_MISSING, NAD_CONFIG or NAD_NODE_CONF


@dataclass(frozen=True)
class NadConfig:
    """What a NAD stands for on this node."""

    conflist: ConfList
    text: str  # the CNI config as written: spec.config, or the node conf file's content
    node_file: str = ""  # the node's conf file it came from; "" for spec.config


def nad_spec_config(nad: Mapping[str, Any]) -> str:
    """``spec.config`` of a NAD object; "" when it has none (a network defined per node)."""
    spec = nad.get("spec")
    config = spec.get("config") if isinstance(spec, Mapping) else None
    return config if isinstance(config, str) else ""


def resolve_nad(
    nad: Mapping[str, Any] | None,
    ref: NetworkRef,
    node_conf: Callable[[str], NodeConf] | None = None,
) -> NadConfig:
    """The config the NAD object `nad` (None: it does not exist), found as `ref`, stands for.

    A config without a ``name`` takes the NAD's name. An empty ``spec.config``
    means, by the NPWG spec, the node's CNI conf file of the NAD's name:
    `node_conf` finds it (netshift.cni.nodeconf's rules, Multus's lookup); without
    one (a component that reads no node files) it is refused with a message saying so.
    """
    if nad is None:
        raise NadError(
            ref,
            f"NetworkAttachmentDefinition {ref} does not exist; create it or fix the annotation",
            NAD_MISSING,
        )
    config = nad_spec_config(nad)
    if not config:
        if node_conf is None:
            raise NadError(
                ref,
                f"NetworkAttachmentDefinition {ref} has no spec.config: it is "
                f"{per_node_summary(ref.name)}, and this component reads no node conf files; "
                "put the CNI config in spec.config",
                NAD_NODE_CONF,
            )
        try:
            found = node_conf(ref.name)
        except NodeConfError as err:
            raise NadError(
                ref,
                f"NetworkAttachmentDefinition {ref} has no spec.config (defined per node), "
                f"and {err}",
                NAD_NODE_CONF,
            ) from err
        return NadConfig(found.conflist, found.text, found.path)
    try:
        conflist = load_conflist(config, fallback_name=ref.name)
    except CniError as err:
        raise NadError(
            ref, f"NetworkAttachmentDefinition {ref} has a broken config: {err}"
        ) from err
    return NadConfig(conflist, config)


def nad_conflist(
    nad: Mapping[str, Any] | None,
    ref: NetworkRef,
    node_conf: Callable[[str], NodeConf] | None = None,
) -> ConfList:
    """The conflist that ADD runs for the NAD `nad` (see :func:`resolve_nad`)."""
    return resolve_nad(nad, ref, node_conf).conflist


def attachment_runtime(
    *,
    namespace: str,
    name: str,
    uid: str,
    netns: str,
    ifname: str,
    selection: NetworkSelection | None = None,
    container_id: str = "",
) -> RuntimeConf:
    """The runtime parameters of one attachment of a pod, as a Kubernetes runtime passes them.

    The container id is the pod UID unless given (there is no infra container
    to name); CNI_ARGS carry the pod's identity; the selection element adds
    its capability arguments (ips, mac, portMappings, bandwidth, ...) and
    ``cni-args``.
    """
    container = container_id or uid
    return RuntimeConf(
        container_id=container,
        netns=netns,
        ifname=ifname,
        args=k8s_cni_args(namespace, name, container, uid),
        capability_args=capability_args(selection) if selection else {},
        cni_args=(selection.cni_args_dict() or None) if selection else None,
    )


def recorded_selection(data: Mapping[str, Any]) -> NetworkSelection | None:
    """The selection element stored in a record (``NetworkSelection.to_json``); None if absent."""
    if not data:
        return None
    try:
        return parse_networks(json.dumps([dict(data)]))[0]
    except AnnotationError:
        return None  # written by another version: DEL without its capability args


def recorded_invocation(rec: AttachmentRecord, netns: str) -> tuple[ConfList, RuntimeConf] | None:
    """The config and runtime parameters to DEL `rec` in `netns` ("" when it is gone).

    None when the record holds no config: its ADD never ran, there is nothing to undo.
    """
    if not rec.conflist:
        return None
    runtime = attachment_runtime(
        namespace=rec.pod_namespace,
        name=rec.pod_name,
        uid=rec.pod_uid,
        netns=netns,
        ifname=rec.interface,
        selection=recorded_selection(rec.selection),
        container_id=rec.container_id,
    )
    return load_conflist(rec.conflist), runtime
