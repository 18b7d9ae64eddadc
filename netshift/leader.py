"""Leader election on a coordination.k8s.io/v1 Lease: one active controller at a time.

The rules are those of client-go's leader election:
- a candidate takes the Lease when it is free (no holder) or when its record
  has not changed for `lease_duration` seconds *as measured on the candidate's
  own clock* since it first saw that record, so clock skew between machines
  does not matter;
- every write is a PUT carrying the resourceVersion that was read, so of two
  candidates racing for a free Lease exactly one wins (the other gets 409);
- the leader renews every `renew_interval`; when it has not managed to renew
  for `renew_deadline` (< lease_duration) it stops leading, before any other
  candidate may take over. `is_leader()` checks that deadline itself, so a
  leader whose renew thread is stuck stops patching all the same;
- `stop(release=True)` gives the Lease up (empty holder) so that a standby
  takes over at once instead of after the lease duration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from netshift.kube import ApiError, Kube, lease_path, now_rfc3339

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_interval: float = 5.0,
        retry_interval: float = 2.0,
        on_started: Callable[[], None] | None = None,
        on_stopped: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_interval * 2 <= lease_duration:
            raise ValueError(
                f"renew interval {renew_interval}s must be at most half the lease duration "
                f"{lease_duration}s, so that a leader notices a failed renewal in time"
            )
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_interval = renew_interval
        self.retry_interval = retry_interval
        # Give up leading one renew interval before anyone else may take over.
        self.renew_deadline = lease_duration - renew_interval
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._clock = clock
        self._lock = threading.Lock()
        self._leading = False
        self._renewed_at = 0.0
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._attempt_started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return lease_path(self.namespace, self.name)

    def is_leader(self) -> bool:
        with self._lock:
            return self._leading and self._clock() < self._renewed_at + self.renew_deadline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_interval + 10)
        was_leading = self._set_leading(False)
        if release and was_leading:
            self.release()

    # -- one attempt ---------------------------------------------------------

    def _lease_body(self, acquire_time: str, transitions: int, rv: str | None) -> dict[str, Any]:
        now = now_rfc3339()
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_duration)),
                "acquireTime": acquire_time,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards."""
        now = self._clock()
        self._attempt_started = now
        try:
            lease = self.kube.get(self.path)
        except ApiError as err:
            if err.status != 404:
                raise
            body = self._lease_body(now_rfc3339(), 0, None)
            try:
                created = self.kube.create(lease_path(self.namespace), body)
            except ApiError as create_err:
                if create_err.status == 409:  # another candidate was faster
                    return False
                raise
            self._observe(created, now)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(lease, now)
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False
        ours = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquire = str(spec.get("acquireTime") or "") if ours else ""
        body = self._lease_body(
            acquire or now_rfc3339(),
            transitions,
            str((lease.get("metadata") or {}).get("resourceVersion", "")),
        )
        try:
            updated = self.kube.put(self.path, body)
        except ApiError as err:
            if err.status == 409:  # someone else wrote the Lease since we read it
                return False
            raise
        self._observe(updated, now)
        if not ours:
            log.info("acquired Lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    def _observe(self, lease: dict[str, Any], now: float) -> None:
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = now

    def release(self) -> None:
        """Hand the Lease over at once: clear the holder if it is still us."""
        try:
            lease = self.kube.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            body = dict(lease)
            body["spec"] = {
                **spec,
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": now_rfc3339(),
            }
            self.kube.put(self.path, body)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as err:  # the standby takes over after expiry instead
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, err)

    # -- the loop --------------------------------------------------------------

    def _set_leading(self, leading: bool) -> bool:
        """Set the state; return the previous one. Callbacks run outside the lock."""
        with self._lock:
            before = self._leading
            self._leading = leading
            if leading:
                # Counted from the start of the winning attempt: the conservative end.
                self._renewed_at = self._attempt_started
        if leading and not before and self._on_started is not None:
            self._on_started()
        if before and not leading and self._on_stopped is not None:
            self._on_stopped()
        return before

    def _attempt(self) -> bool | None:
        """True: holds the Lease; False: someone else does; None: the attempt failed."""
        try:
            return self.try_acquire_or_renew()
        except Exception as err:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, err)
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                leading = self._leading
            if not leading:
                if self._attempt():
                    log.info("leading as %s", self.identity)
                    self._set_leading(True)
                    continue
                self._stop.wait(self.retry_interval)
                continue
            if self._stop.wait(self.renew_interval):
                return
            while not self._stop.is_set():
                result = self._attempt()
                if result:
                    with self._lock:
                        self._renewed_at = self._attempt_started
                    break
                if result is False:
                    log.warning("lost Lease %s/%s to another holder", self.namespace, self.name)
                    self._set_leading(False)
                    break
                with self._lock:
                    expired = self._clock() >= self._renewed_at + self.renew_deadline
                if expired:
                    log.warning(
                        "could not renew Lease %s/%s for %.0fs; stepping down",
                        self.namespace,
                        self.name,
                        self.renew_deadline,
                    )
                    self._set_leading(False)
                    break
                self._stop.wait(self.retry_interval)
