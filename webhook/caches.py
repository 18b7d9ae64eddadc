"""What admission decisions read: namespaces, NetworkProfiles and NADs, from watch-fed caches.

Admission never calls the apiserver: a live lookup per request is what made
other injectors take seconds per pod under load. `InformerCaches` keeps
list+watch caches (netshift.kube.Informer); `StaticCaches` holds the same data
in memory for unit tests and the benchmark.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from netshift.annotations import NetworkRef
from netshift.kube import Informer, Kube, nad_path
from netshift.policy import (
    PROFILE_GROUP,
    PROFILE_PLURAL,
    PROFILE_VERSION,
    Profile,
    ProfileError,
    profile_from_object,
)

log = logging.getLogger(__name__)

NAMESPACES_PATH = "/api/v1/namespaces"
PROFILES_PATH = f"/apis/{PROFILE_GROUP}/{PROFILE_VERSION}/{PROFILE_PLURAL}"


class Caches(Protocol):
    """Read-only view of the cluster state that admission depends on."""

    def synced(self) -> bool: ...

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """The namespace's labels, or None when the namespace is not (yet) known."""

    def profiles(self) -> Sequence[Profile]:
        """Every valid NetworkProfile (invalid ones are left out and logged)."""

    def nad_exists(self, ref: NetworkRef) -> bool: ...


class StaticCaches:
    """Caches filled by hand: unit tests, fuzzing, the benchmark."""

    def __init__(
        self,
        namespaces: Mapping[str, Mapping[str, str]] | None = None,
        profiles: Iterable[Profile] = (),
        nads: Iterable[NetworkRef | str] = (),
        *,
        synced: bool = True,
    ) -> None:
        self.namespaces: dict[str, dict[str, str]] = {
            k: dict(v) for k, v in (namespaces or {}).items()
        }
        self.profile_list: list[Profile] = list(profiles)
        self.nads: set[NetworkRef] = {_as_ref(n) for n in nads}
        self.is_synced = synced

    def synced(self) -> bool:
        return self.is_synced

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        return self.namespaces.get(name)

    def profiles(self) -> Sequence[Profile]:
        return self.profile_list

    def nad_exists(self, ref: NetworkRef) -> bool:
        return ref in self.nads


def _as_ref(value: NetworkRef | str) -> NetworkRef:
    if isinstance(value, NetworkRef):
        return value
    namespace, _, name = value.partition("/")
    return NetworkRef(namespace, name)


class InformerCaches:
    """List+watch caches of namespaces, NetworkProfiles and NADs (all namespaces)."""

    def __init__(self, kube: Kube) -> None:
        self._profiles_lock = threading.Lock()
        self._profiles_dirty = True
        self._profiles: list[Profile] = []
        self._rejected: set[tuple[str, str]] = set()
        self.namespaces = Informer(kube, NAMESPACES_PATH, name="namespaces")
        self.profile_objects = Informer(
            kube, PROFILES_PATH, name="networkprofiles", on_event=self._profile_event
        )
        self.nad_objects = Informer(kube, nad_path(), name="network-attachment-definitions")
        self._informers = (self.namespaces, self.profile_objects, self.nad_objects)

    def start(self) -> None:
        for informer in self._informers:
            informer.start()

    def stop(self) -> None:
        for informer in self._informers:
            informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        return all(informer.wait_synced(timeout) for informer in self._informers)

    def synced(self) -> bool:
        return all(informer.has_synced() for informer in self._informers)

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        obj = self.namespaces.get(name)
        if obj is None:
            return None
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def nad_exists(self, ref: NetworkRef) -> bool:
        return self.nad_objects.get(str(ref)) is not None

    def _profile_event(self, _kind: str, _obj: dict[str, Any]) -> None:
        # The informer has already stored the change; parse again on the next read.
        self._profiles_dirty = True

    def profiles(self) -> Sequence[Profile]:
        with self._profiles_lock:
            if self._profiles_dirty:
                # Cleared before reading: an event that lands meanwhile marks it again.
                self._profiles_dirty = False
                self._profiles = self._parse(self.profile_objects.items())
            return self._profiles

    def _parse(self, objects: Iterable[dict[str, Any]]) -> list[Profile]:
        parsed: list[Profile] = []
        for obj in objects:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("name")), str(meta.get("resourceVersion")))
            try:
                parsed.append(profile_from_object(obj))
            except ProfileError as err:
                if key not in self._rejected:
                    self._rejected.add(key)
                    log.warning("NetworkProfile %s is invalid and ignored: %s", key[0], err)
        return sorted(parsed, key=lambda p: p.name)
