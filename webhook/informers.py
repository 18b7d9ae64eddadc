"""The webhook's caches fed by watches (Informers): namespaces, profiles, NADs, the NAD policy.

Never a live call per admission. The NAD policy is one ConfigMap, watched by name
(a field selector, so RBAC can grant that one object); it is parsed once per change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from netshift.annotations import NetworkRef
from netshift.keys import NETSHIFT_NAMESPACE
from netshift.kube import (
    Informer,
    Kube,
    configmap_path,
    nad_path,
    namespace_path,
    profile_path,
)
from netshift.nadpolicy import (
    OFF,
    POLICY_CONFIGMAP,
    NadPolicy,
    NadPolicyError,
    policy_from_configmap,
)
from netshift.policy import Profile, ProfileError, profile_from_object

log = logging.getLogger(__name__)


class InformerCaches:
    """List+watch caches of namespaces, NetworkProfiles and NADs (all namespaces), NAD policy.

    `nad_policy` is (namespace, name) of the policy ConfigMap; None: no policy, ever.
    """

    def __init__(
        self,
        kube: Kube,
        nad_policy: tuple[str, str] | None = (NETSHIFT_NAMESPACE, POLICY_CONFIGMAP),
    ) -> None:
        self._profiles_lock = threading.Lock()
        self._profiles_dirty = True
        self._profiles: list[Profile] = []
        self._rejected: set[tuple[str, str]] = set()
        self.namespaces = Informer(kube, namespace_path(), name="namespaces")
        self.profile_objects = Informer(
            kube, profile_path(), name="networkprofiles", on_event=self._profile_event
        )
        self.nad_objects = Informer(kube, nad_path(), name="network-attachment-definitions")
        self._informers: tuple[Informer, ...] = (
            self.namespaces,
            self.profile_objects,
            self.nad_objects,
        )
        self._policy_lock = threading.Lock()
        self._policy_dirty = True
        self._policy: NadPolicy | NadPolicyError = OFF
        self.policy_objects: Informer | None = None
        if nad_policy is not None:
            namespace, name = nad_policy
            self.policy_objects = Informer(
                kube,
                configmap_path(namespace),
                params={"fieldSelector": f"metadata.name={name}"},
                on_event=self._policy_event,
                name="nad-policy",
            )
            self._informers += (self.policy_objects,)

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

    def _policy_event(self, _kind: str, _obj: dict[str, Any]) -> None:
        self._policy_dirty = True

    def nad_policy(self) -> NadPolicy:
        if self.policy_objects is None:
            return OFF
        with self._policy_lock:
            if self._policy_dirty:
                self._policy_dirty = False
                objects = self.policy_objects.items()
                try:
                    self._policy = policy_from_configmap(objects[0] if objects else None)
                except NadPolicyError as err:
                    log.warning("the NAD policy ConfigMap is invalid: %s", err)
                    self._policy = err
            policy = self._policy
        if isinstance(policy, NadPolicyError):
            raise policy
        return policy

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
