"""The CNI config of a network the agent may attach: a NAD from the watch cache, or the cluster's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from netshift import annotations as ann
from netshift.cni.config import ConfList
from netshift.cni.nad import NadError, nad_conflist


class PodError(Exception):
    """A problem with one pod's wish that no retry can fix (bad annotation, missing NAD)."""


class NetworkConfigs:
    def __init__(
        self,
        nad: Callable[[str], Mapping[str, Any] | None],
        cluster_net: ConfList | None,
    ) -> None:
        self._nad = nad  # "ns/name" -> the NAD object, or None
        self.cluster_net = cluster_net

    def conflist(self, ref: ann.NetworkRef) -> ConfList:
        if not ref.namespace:
            if self.cluster_net is not None and ref.name == self.cluster_net.name:
                return self.cluster_net
            raise PodError(f"cluster network {ref.name!r} is not known to this agent")
        try:
            return nad_conflist(self._nad(f"{ref.namespace}/{ref.name}"), ref)
        except NadError as err:
            raise PodError(str(err)) from err

    def conflist_or_none(self, ref: ann.NetworkRef) -> ConfList | None:
        try:
            return self.conflist(ref)
        except PodError:
            return None
