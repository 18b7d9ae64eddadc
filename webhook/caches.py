"""What admission decisions read: namespaces, NetworkProfiles, NADs, the NAD policy; watch-fed.

Admission never calls the apiserver: a live lookup per request is what made
other injectors take seconds per pod under load. `webhook.informers.InformerCaches`
keeps list+watch caches (netshift.kube.Informer); `StaticCaches` holds the same data
in memory for unit tests and the benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from netshift.annotations import NetworkRef
from netshift.nadpolicy import OFF, NadPolicy, NadPolicyError
from netshift.policy import Profile


class Caches(Protocol):
    """Read-only view of the cluster state that admission depends on."""

    def synced(self) -> bool: ...

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """The namespace's labels, or None when the namespace is not (yet) known."""

    def profiles(self) -> Sequence[Profile]:
        """Every valid NetworkProfile (invalid ones are left out and logged)."""

    def nad_exists(self, ref: NetworkRef) -> bool: ...

    def nad_policy(self) -> NadPolicy:
        """The cluster's NAD policy (OFF when there is none); NadPolicyError when unreadable."""


class StaticCaches:
    """Caches filled by hand: unit tests, fuzzing, the benchmark."""

    def __init__(
        self,
        namespaces: Mapping[str, Mapping[str, str]] | None = None,
        profiles: Iterable[Profile] = (),
        nads: Iterable[NetworkRef | str] = (),
        *,
        synced: bool = True,
        nad_policy: NadPolicy | NadPolicyError = OFF,
    ) -> None:
        self.namespaces: dict[str, dict[str, str]] = {
            k: dict(v) for k, v in (namespaces or {}).items()
        }
        self.profile_list: list[Profile] = list(profiles)
        self.nads: set[NetworkRef] = {_as_ref(n) for n in nads}
        self.is_synced = synced
        self.policy = nad_policy

    def synced(self) -> bool:
        return self.is_synced

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        return self.namespaces.get(name)

    def profiles(self) -> Sequence[Profile]:
        return self.profile_list

    def nad_exists(self, ref: NetworkRef) -> bool:
        return ref in self.nads

    def nad_policy(self) -> NadPolicy:
        if isinstance(self.policy, NadPolicyError):
            raise self.policy
        return self.policy


def _as_ref(value: NetworkRef | str) -> NetworkRef:
    if isinstance(value, NetworkRef):
        return value
    namespace, _, name = value.partition("/")
    return NetworkRef(namespace, name)
