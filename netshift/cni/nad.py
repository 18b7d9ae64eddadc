"""From a NetworkAttachmentDefinition to a CNI invocation (pure).

:func:`nad_conflist` turns the NAD object into the :class:`ConfList` that ADD
runs; :func:`attachment_runtime` builds the per-attachment parameters (the
same for ADD and for the DEL that undoes it, as libcni passes them);
:func:`recorded_invocation` rebuilds both from an attachment record, so that a
DEL uses exactly what its ADD used even after the NAD changed or vanished.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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

__all__ = [
    "NadError",
    "attachment_runtime",
    "nad_conflist",
    "recorded_invocation",
    "recorded_selection",
]


class NadError(ValueError):
    """The NAD a pod asks for cannot be used; the message names it and says what to fix."""

    def __init__(self, ref: NetworkRef, message: str) -> None:
        super().__init__(message)
        self.ref = ref


def nad_conflist(nad: Mapping[str, Any] | None, ref: NetworkRef) -> ConfList:
    """The conflist of the NAD object `nad` (None: it does not exist), found as `ref`.

    A config without a ``name`` takes the NAD's name. An empty ``spec.config``
    means, by the NPWG spec, a CNI conf file of the NAD's name on the node; that
    is not supported (neither agent nor node simulator reads the node's conf
    dirs), so it is refused with a message saying so.
    """
    if nad is None:
        raise NadError(
            ref,
            f"NetworkAttachmentDefinition {ref} does not exist; create it or fix the annotation",
        )
    config = (nad.get("spec") or {}).get("config") or ""
    if not config:
        raise NadError(
            ref,
            f"NetworkAttachmentDefinition {ref} has a broken config: spec.config is empty "
            "(a CNI conf file on the node is not supported); put the CNI config in spec.config",
        )
    try:
        return load_conflist(config, fallback_name=ref.name)
    except CniError as err:
        raise NadError(
            ref, f"NetworkAttachmentDefinition {ref} has a broken config: {err}"
        ) from err


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
