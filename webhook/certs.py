"""The webhook's TLS material: a self-managed CA and serving certificate kept in a Secret,
or certificate files mounted from elsewhere (e.g. cert-manager), reloaded when they change.

Managed mode (`SecretCertManager`) is level-triggered: every `reconcile()` reads
the Secret, decides what is missing or due, writes it back with the Secret's
resourceVersion (so two replicas never overwrite each other; the loser re-reads
and adopts the winner's material) and patches the CA bundle into the
Mutating/ValidatingWebhookConfiguration of the configured name.

Rotation:
- The serving certificate is re-issued when less than `renew_fraction` of its
  lifetime is left, when its SANs no longer cover the wanted names, or when it
  was not signed by the current CA. The CA bundle does not change, so the
  apiserver trusts the new certificate at once.
- The CA is rotated in two steps so that no handshake ever fails: a new CA is
  first only *added* to the bundle (recorded in the Secret as next-ca with a
  timestamp); once `ca_propagation` has passed — time for the apiserver to see
  the new caBundle — it becomes the signer and a serving certificate is issued
  from it. Old CAs stay in the bundle until they expire.

Secret layout (type Opaque, so an empty one can be pre-created by the
manifests and the webhook needs no `create` permission on Secrets):
`tls.crt`, `tls.key` (serving pair), `ca.crt` (bundle, signer first),
`ca.key` (signer key), optionally `next-ca.crt` / `next-ca.key` and the
annotation `netshift.io/next-ca-since`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from netshift import pki
from netshift.kube import ApiError, Kube, secret_path, webhook_configuration_path

log = logging.getLogger(__name__)

NEXT_CA_SINCE_KEY = "netshift.io/next-ca-since"
MUTATING_PATH = webhook_configuration_path("mutating")
VALIDATING_PATH = webhook_configuration_path("validating")


class CertError(ValueError):
    """TLS material that cannot be used (unparsable, key does not match, expired)."""


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the apiserver may use to reach a webhook Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split host names into (DNS names, IP addresses), dropping duplicates, keeping order."""
    dns: list[str] = []
    ips: list[str] = []
    for host in hosts:
        host = host.strip().strip("[]")
        if not host:
            continue
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            if host not in dns:
                dns.append(host)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


@dataclass(frozen=True)
class ServingMaterial:
    """A serving certificate chain and key (PEM), and the CA bundle that verifies it."""

    cert_pem: bytes
    key_pem: bytes
    ca_bundle: bytes = b""

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert_pem + b"\0" + self.key_pem).hexdigest()


def check_pair(cert_pem: bytes, key_pem: bytes) -> x509.Certificate:
    """Parse a certificate and its key and check that they belong together."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as err:
        raise CertError(f"unreadable certificate or key: {err}") from None
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, fmt) != key.public_key().public_bytes(enc, fmt):
        raise CertError("the private key does not match the certificate")
    return cert


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _lifetime_left(cert: x509.Certificate, now: dt.datetime) -> float:
    """Fraction of the certificate's lifetime still ahead (negative once expired)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    total = (end - start).total_seconds()
    return (end - now).total_seconds() / total if total > 0 else -1.0


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    dns = set(ext.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return dns, ips


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem) if pem.strip() else []
    except ValueError:
        return []


_PEM = serialization.Encoding.PEM
_SHA256 = hashes.SHA256()


def _load_ca(cert_pem: bytes, key_pem: bytes) -> pki.KeyPair | None:
    """The first certificate of a bundle with its key, or None if they are unusable."""
    certs = _load_certs(cert_pem)
    if not certs or not key_pem:
        return None
    try:
        check_pair(certs[0].public_bytes(_PEM), key_pem)
        return pki.KeyPair.from_pem(certs[0].public_bytes(_PEM), key_pem)
    except (CertError, ValueError):
        return None


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(_PEM) for c in certs)


class SecretStore(Protocol):
    """Where managed TLS material is kept: `read` gives (data, annotations, version)."""

    def read(self) -> tuple[dict[str, bytes], dict[str, str], str | None]: ...

    def write(
        self, data: Mapping[str, bytes], annotations: Mapping[str, str], version: str | None
    ) -> None:
        """Store atomically; raise `Conflict` when `version` is no longer current."""


class Conflict(Exception):
    """Someone else wrote the Secret since we read it."""


class KubeSecretStore:
    """A Secret in the apiserver; optimistic concurrency through resourceVersion.

    Writes keep what others put on the Secret (labels, kubectl's annotations,
    its type): only `data` and netshift's annotations change.
    """

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.path = secret_path(namespace, name)
        self._last: dict[str, Any] | None = None

    def read(self) -> tuple[dict[str, bytes], dict[str, str], str | None]:
        try:
            obj = self.kube.get(self.path)
        except ApiError as err:
            if err.status == 404:
                self._last = None
                return {}, {}, None
            raise
        self._last = obj
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        annotations = dict((obj.get("metadata") or {}).get("annotations") or {})
        return data, annotations, str(obj["metadata"]["resourceVersion"])

    def write(
        self, data: Mapping[str, bytes], annotations: Mapping[str, str], version: str | None
    ) -> None:
        encoded = {k: base64.b64encode(v).decode() for k, v in sorted(data.items())}
        last = self._last
        try:
            if version is None:
                body: dict[str, Any] = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "labels": {"app.kubernetes.io/name": "netshift"},
                        "annotations": dict(annotations),
                    },
                    "data": encoded,
                }
                self.kube.create(secret_path(self.namespace), body)
            else:
                if last is None or str(last["metadata"].get("resourceVersion")) != version:
                    raise Conflict("the Secret read last is not the one being replaced")
                metadata = {**last["metadata"], "annotations": dict(annotations)}
                metadata["resourceVersion"] = version
                self.kube.put(self.path, {**last, "metadata": metadata, "data": encoded})
        except ApiError as err:
            if err.status == 409:
                raise Conflict(str(err)) from None
            raise


class MemorySecretStore:
    """An in-memory store with the same conflict semantics (tests, local tools)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.annotations: dict[str, str] = {}
        self.version: int | None = None
        self.writes = 0

    def read(self) -> tuple[dict[str, bytes], dict[str, str], str | None]:
        version = None if self.version is None else str(self.version)
        return dict(self.data), dict(self.annotations), version

    def write(
        self, data: Mapping[str, bytes], annotations: Mapping[str, str], version: str | None
    ) -> None:
        current = None if self.version is None else str(self.version)
        if version != current:
            raise Conflict(f"version {version} is not current ({current})")
        self.data = dict(data)
        self.annotations = dict(annotations)
        self.version = (self.version or 0) + 1
        self.writes += 1


class SecretCertManager:
    """Keep a CA and serving certificate in a Secret, current and trusted (see module doc)."""

    def __init__(
        self,
        store: SecretStore,
        *,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
        common_name: str = "netshift-webhook",
        cert_days: int = 90,
        ca_days: int = 3650,
        renew_fraction: float = 1 / 3,
        ca_propagation: dt.timedelta = dt.timedelta(minutes=5),
        kube: Kube | None = None,
        webhook_config_name: str | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        if not dns_names and not ip_addresses:
            raise ValueError("a serving certificate needs at least one DNS name or IP address")
        self.store = store
        self.dns_names = list(dict.fromkeys(dns_names))
        self.ip_addresses = [str(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ip_addresses)]
        self.common_name = common_name
        self.cert_days = cert_days
        self.ca_days = ca_days
        self.renew_fraction = renew_fraction
        self.ca_propagation = ca_propagation
        self.kube = kube
        self.webhook_config_name = webhook_config_name
        self.clock = clock

    def reconcile(self) -> ServingMaterial:
        """Bring the Secret up to date (creating, renewing, rotating) and return its material."""
        for _ in range(5):
            data, annotations, version = self.store.read()
            new_data, new_annotations, why = self._desired(data, annotations)
            if why:
                try:
                    self.store.write(new_data, new_annotations, version)
                except Conflict:
                    log.info("webhook TLS secret changed under us; re-reading")
                    continue
                log.info("webhook TLS secret updated: %s", "; ".join(why))
            material = ServingMaterial(new_data["tls.crt"], new_data["tls.key"], new_data["ca.crt"])
            self._patch_ca_bundle(material.ca_bundle)
            return material
        raise RuntimeError("webhook TLS secret kept changing; giving up for this round")

    # -- decisions (pure over the Secret's content and the clock) -----------

    def _new_ca(self) -> pki.KeyPair:
        return pki.make_ca(f"{self.common_name}-ca {self.clock():%Y%m%d%H%M%S}", days=self.ca_days)

    def _desired(
        self, data: Mapping[str, bytes], annotations: Mapping[str, str]
    ) -> tuple[dict[str, bytes], dict[str, str], list[str]]:
        now = self.clock()
        why: list[str] = []
        out = dict(data)
        notes = dict(annotations)
        signer = _load_ca(data.get("ca.crt", b""), data.get("ca.key", b""))
        bundle = [c for c in _load_certs(data.get("ca.crt", b"")) if c.not_valid_after_utc > now]
        if signer is None or signer.cert.not_valid_after_utc <= now:
            signer = self._new_ca()
            bundle = [signer.cert]
            out.pop("next-ca.crt", None)
            out.pop("next-ca.key", None)
            notes.pop(NEXT_CA_SINCE_KEY, None)
            why.append("created a CA")
        nxt = _load_ca(data.get("next-ca.crt", b""), data.get("next-ca.key", b""))
        since = _parse_time(notes.get(NEXT_CA_SINCE_KEY))
        if nxt is not None and since is not None and now - since >= self.ca_propagation:
            # The new CA has been in the bundle long enough: it becomes the signer.
            signer = nxt
            nxt = None
            out.pop("next-ca.crt", None)
            out.pop("next-ca.key", None)
            notes.pop(NEXT_CA_SINCE_KEY, None)
            why.append("promoted the next CA")
        elif nxt is None and _lifetime_left(signer.cert, now) < self.renew_fraction:
            nxt = self._new_ca()
            out["next-ca.crt"] = nxt.cert_pem
            out["next-ca.key"] = nxt.key_pem
            notes[NEXT_CA_SINCE_KEY] = now.isoformat()
            why.append("started a CA rotation")
        # Bundle: the signer first, then the next CA (trusted ahead of use), then old CAs.
        ordered = [signer.cert]
        if nxt is not None:
            ordered.append(nxt.cert)
        for cert in bundle:
            if all(cert.fingerprint(_SHA256) != o.fingerprint(_SHA256) for o in ordered):
                ordered.append(cert)
        out["ca.crt"] = _pem(ordered)
        out["ca.key"] = signer.key_pem
        if out["ca.crt"] != data.get("ca.crt") and not why:
            why.append("dropped expired CAs from the bundle")

        reason = self._serving_problem(data, signer.cert, now)
        if reason:
            pair = pki.issue(
                signer,
                self.common_name,
                dns_names=self.dns_names,
                ip_addresses=self.ip_addresses,
                server=True,
                days=self.cert_days,
            )
            out["tls.crt"] = pair.cert_pem
            out["tls.key"] = pair.key_pem
            why.append(f"issued a serving certificate ({reason})")
        return out, notes, why

    def _serving_problem(
        self, data: Mapping[str, bytes], signer: x509.Certificate, now: dt.datetime
    ) -> str | None:
        cert_pem, key_pem = data.get("tls.crt", b""), data.get("tls.key", b"")
        if not cert_pem or not key_pem:
            return "none yet"
        try:
            cert = check_pair(cert_pem, key_pem)
        except CertError as err:
            return str(err)
        if not _signed_by(cert, signer):
            return "not signed by the current CA"
        if _lifetime_left(cert, now) < self.renew_fraction:
            return f"expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
        dns, ips = _sans(cert)
        missing = [n for n in self.dns_names if n not in dns]
        missing += [ip for ip in self.ip_addresses if ip not in ips]
        if missing:
            return "SANs lack " + ", ".join(missing)
        return None

    # -- caBundle -----------------------------------------------------------

    def _patch_ca_bundle(self, ca_bundle: bytes) -> None:
        if self.kube is None or not self.webhook_config_name:
            return
        for base in (MUTATING_PATH, VALIDATING_PATH):
            try:
                patch_ca_bundle(self.kube, f"{base}/{self.webhook_config_name}", ca_bundle)
            except ApiError as err:
                if err.status == 404:
                    log.debug("%s/%s not registered yet", base, self.webhook_config_name)
                else:
                    log.warning("could not patch caBundle into %s: %s", base, err)


def patch_ca_bundle(kube: Kube, path: str, ca_bundle: bytes) -> bool:
    """Set caBundle on every webhook of one configuration; True when something changed."""
    obj = kube.get(path)
    encoded = base64.b64encode(ca_bundle).decode()
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(obj.get("webhooks") or []):
        if (hook.get("clientConfig") or {}).get("caBundle") == encoded:
            continue
        # The test pins the index to the webhook we read, in case the list changed meanwhile.
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
        ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded})
    if not ops:
        return False
    kube.patch_json(path, ops)
    log.info("patched caBundle into %s", path)
    return True


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class FileCertSource:
    """A certificate and key in files (e.g. a mounted kubernetes.io/tls Secret).

    Secret volumes are updated by swapping a symlink, so change detection reads
    the content rather than trusting modification times. A half-updated pair
    (certificate and key not matching) is ignored until both are consistent.
    """

    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)

    def read(self) -> ServingMaterial:
        try:
            cert_pem = self.cert_file.read_bytes()
            key_pem = self.key_file.read_bytes()
        except OSError as err:
            raise CertError(f"cannot read TLS files: {err}") from None
        check_pair(cert_pem, key_pem)
        return ServingMaterial(cert_pem, key_pem)


def describe(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cn[0].value) if cn else "?"
    return f"{name} serial {cert.serial_number:x} until {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"


class CertWatcher:
    """Re-reads TLS material every `interval` seconds and hands changes to `apply`.

    `source` is `SecretCertManager.reconcile` (which also renews and rotates) or
    `FileCertSource.read`. Failures are logged and retried; the certificate in
    use stays in use until a good replacement is found.
    """

    def __init__(
        self,
        source: Callable[[], ServingMaterial],
        apply: Callable[[ServingMaterial], object],
        interval: float,
    ) -> None:
        self.source = source
        self.apply = apply
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        try:
            self.apply(self.source())
        except Exception as err:
            log.warning("TLS material check failed (keeping the current certificate): %s", err)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.check()

        self._thread = threading.Thread(target=loop, name="tls-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
