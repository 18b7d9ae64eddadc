"""The webhook's TLS material: managed CA and serving certificate, rotation, and live reload
into a running server without failing the requests already in flight."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from localcluster.samples import deployment_pod, pod_review
from netshift import pki
from webhook.app import WebhookSettings, create_app
from webhook.caches import StaticCaches
from webhook.certs import (
    CertError,
    CertWatcher,
    FileCertSource,
    MemorySecretStore,
    SecretCertManager,
    ServingMaterial,
    service_dns_names,
    split_hosts,
)
from webhook.server import ReloadableTLS, WebhookServer, bind

DNS = service_dns_names("netshift-webhook", "netshift-system")


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    # Certificates are dated by netshift.pki; keep its idea of "now" on the same clock.
    monkeypatch.setattr(pki, "_now", c)
    return c


def manager(store: MemorySecretStore, clock: Clock, **kw: object) -> SecretCertManager:
    return SecretCertManager(
        store,
        dns_names=DNS,
        ip_addresses=["127.0.0.1"],
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def leaf(material: ServingMaterial) -> x509.Certificate:
    return material.certificate()


def bundle(material: ServingMaterial) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(material.ca_bundle)


def test_service_names_cover_every_form_the_apiserver_may_use() -> None:
    assert DNS == [
        "netshift-webhook",
        "netshift-webhook.netshift-system",
        "netshift-webhook.netshift-system.svc",
        "netshift-webhook.netshift-system.svc.cluster.local",
    ]
    assert split_hosts(["127.0.0.1", "a.b", "::1", "a.b", "[fd00::2]"]) == (
        ["a.b"],
        ["127.0.0.1", "::1", "fd00::2"],
    )


def test_managed_certificate_has_the_sans_and_its_chain_verifies(clock: Clock) -> None:
    material = manager(MemorySecretStore(), clock).reconcile()
    cert = leaf(material)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == DNS
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    store = Store(bundle(material))
    for name in (
        x509.DNSName("netshift-webhook.netshift-system.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ):
        verifier = PolicyBuilder().store(store).time(clock.now).build_server_verifier(name)
        chain = verifier.verify(cert, [])
        assert chain[-1] == bundle(material)[0]


def test_reconcile_is_idempotent(clock: Clock) -> None:
    store = MemorySecretStore()
    first = manager(store, clock).reconcile()
    again = manager(store, clock).reconcile()
    assert again == first and store.writes == 1


def test_two_replicas_end_up_with_the_same_material(clock: Clock) -> None:
    store = MemorySecretStore()
    a, b = manager(store, clock), manager(store, clock)
    real_read = store.read
    # b reads, then a writes before b does: b's write conflicts and b adopts a's material.
    stale = real_read()
    calls = {"n": 0}

    def racing_read() -> tuple[dict[str, bytes], dict[str, str], str | None]:
        calls["n"] += 1
        return stale if calls["n"] == 1 else real_read()

    store.read = racing_read  # type: ignore[method-assign]
    a_material = a.reconcile()
    assert a_material == ServingMaterial(
        store.data["tls.crt"], store.data["tls.key"], store.data["ca.crt"]
    )
    assert b.reconcile() == a_material
    assert store.writes == 1


def test_serving_certificate_is_renewed_before_expiry_under_the_same_ca(clock: Clock) -> None:
    store = MemorySecretStore()
    m = manager(store, clock, cert_days=90)
    first = m.reconcile()
    clock.advance(days=50)
    assert m.reconcile() == first  # more than a third of its life left
    clock.advance(days=11)
    renewed = m.reconcile()
    assert leaf(renewed).serial_number != leaf(first).serial_number
    assert renewed.ca_bundle == first.ca_bundle  # the apiserver trusts it at once


def test_serving_certificate_is_reissued_when_the_wanted_names_change(clock: Clock) -> None:
    store = MemorySecretStore()
    first = manager(store, clock).reconcile()
    wider = SecretCertManager(
        store, dns_names=DNS, ip_addresses=["127.0.0.1", "10.0.0.7"], clock=clock
    ).reconcile()
    assert leaf(wider).serial_number != leaf(first).serial_number
    assert wider.ca_bundle == first.ca_bundle


def test_ca_rotation_trusts_the_new_ca_before_using_it(clock: Clock) -> None:
    store = MemorySecretStore()
    m = manager(store, clock, ca_days=300, cert_days=30)
    first = m.reconcile()
    old_ca = bundle(first)[0]
    clock.advance(days=201)  # less than a third of the CA's life left
    step1 = m.reconcile()
    cas = bundle(step1)
    assert len(cas) == 2 and cas[0] == old_ca  # new CA trusted, old one still signs
    leaf(step1).verify_directly_issued_by(old_ca)
    clock.advance(minutes=6)  # the apiserver has seen the new caBundle by now
    step2 = m.reconcile()
    new_ca = bundle(step2)[0]
    assert new_ca == cas[1] and old_ca in bundle(step2)  # old CA kept while it is valid
    leaf(step2).verify_directly_issued_by(new_ca)
    assert m.reconcile() == step2
    clock.advance(days=100)  # the old CA has expired: it leaves the bundle
    assert old_ca not in bundle(m.reconcile())


def test_a_broken_secret_is_repaired(clock: Clock) -> None:
    store = MemorySecretStore()
    first = manager(store, clock).reconcile()
    store.data["tls.key"] = pki.make_ca("unrelated").key_pem  # no longer matches tls.crt
    repaired = manager(store, clock).reconcile()
    assert leaf(repaired).serial_number != leaf(first).serial_number
    assert repaired.ca_bundle == first.ca_bundle


def test_file_source_rejects_a_certificate_with_the_wrong_key(tmp_path: Path) -> None:
    ca = pki.make_ca("ca")
    a = pki.issue(ca, "a", ip_addresses=["127.0.0.1"], server=True)
    b = pki.issue(ca, "b", ip_addresses=["127.0.0.1"], server=True)
    (tmp_path / "tls.crt").write_bytes(a.cert_pem)
    (tmp_path / "tls.key").write_bytes(b.key_pem)
    with pytest.raises(CertError, match="does not match"):
        FileCertSource(tmp_path / "tls.crt", tmp_path / "tls.key").read()


# --- a real server on 127.0.0.1 ----------------------------------------------


def serving(ca: pki.KeyPair) -> ServingMaterial:
    pair = pki.issue(
        ca, "webhook", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True
    )
    return ServingMaterial(pair.cert_pem, pair.key_pem, ca.cert_pem)


@pytest.fixture
def ca() -> pki.KeyPair:
    return pki.make_ca("webhook-test-ca")


@pytest.fixture
def server(ca: pki.KeyPair) -> Iterator[WebhookServer]:
    caches = StaticCaches({"team-a": {}})
    tls = ReloadableTLS()
    tls.load(serving(ca))
    srv = WebhookServer(create_app(WebhookSettings(caches=caches)), tls, bind("127.0.0.1", 0))
    srv.start_in_thread()
    yield srv
    srv.stop_thread()


def client_context(ca: pki.KeyPair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    return ctx


def connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def peer_serial(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def post_head(length: int) -> bytes:
    return (
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_rotation_reaches_new_connections_while_an_in_flight_request_completes(
    server: WebhookServer, ca: pki.KeyPair
) -> None:
    ctx = client_context(ca)
    body = json.dumps(pod_review(deployment_pod(), namespace="team-a", uid="in-flight")).encode()
    inflight = connect(server.port, ctx)
    old_serial = peer_serial(inflight)
    inflight.sendall(post_head(len(body)) + body[: len(body) // 2])  # request half sent

    rotated = serving(ca)
    assert server.reload(rotated)
    new_serial = rotated.certificate().serial_number
    assert new_serial != old_serial
    fresh = connect(server.port, ctx)
    assert peer_serial(fresh) == new_serial
    fresh.close()

    inflight.sendall(body[len(body) // 2 :])  # the old connection finishes its request
    status, answer = read_response(inflight)
    assert status == 200
    assert json.loads(answer)["response"] == {"uid": "in-flight", "allowed": True}
    assert peer_serial(inflight) == old_serial
    # ... and keeps serving on its keep-alive connection.
    inflight.sendall(post_head(len(body)) + body)
    assert read_response(inflight)[0] == 200
    inflight.close()


def test_reloading_the_same_pair_is_a_no_op(server: WebhookServer, ca: pki.KeyPair) -> None:
    material = serving(ca)
    assert server.reload(material)
    assert not server.reload(material)


def test_a_bad_pair_is_refused_and_the_old_certificate_stays(
    server: WebhookServer, ca: pki.KeyPair
) -> None:
    good = connect(server.port, client_context(ca))
    serial = peer_serial(good)
    good.close()
    a, b = serving(ca), serving(ca)
    with pytest.raises(ValueError, match="does not match"):
        server.reload(ServingMaterial(a.cert_pem, b.key_pem))
    assert peer_serial(connect(server.port, client_context(ca))) == serial


def test_tls_below_1_2_is_refused(server: WebhookServer, ca: pki.KeyPair) -> None:
    assert server.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    ctx = client_context(ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        connect(server.port, ctx)


def test_only_http_1_1_is_negotiated(server: WebhookServer, ca: pki.KeyPair) -> None:
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    sock = connect(server.port, ctx)
    assert sock.selected_alpn_protocol() == "http/1.1"
    sock.close()


def test_https_admission_round_trip_with_httpx(server: WebhookServer, ca: pki.KeyPair) -> None:
    with httpx.Client(verify=client_context(ca), trust_env=False) as http:
        r = http.post(
            f"https://127.0.0.1:{server.port}/validate",
            json=pod_review(deployment_pod(), namespace="team-a", uid="u1"),
        )
        assert r.status_code == 200 and r.json()["response"]["uid"] == "u1"
        assert http.get(f"https://127.0.0.1:{server.port}/healthz").status_code == 200


def test_mounted_files_are_reloaded_when_the_secret_volume_changes(
    server: WebhookServer, ca: pki.KeyPair, tmp_path: Path
) -> None:
    # kubelet updates a Secret volume by pointing the ..data symlink at a new directory.
    def publish(material: ServingMaterial, version: int) -> None:
        target = tmp_path / f"..v{version}"
        target.mkdir()
        (target / "tls.crt").write_bytes(material.cert_pem)
        (target / "tls.key").write_bytes(material.key_pem)
        link = tmp_path / "..data.tmp"
        link.symlink_to(target.name)
        os.replace(link, tmp_path / "..data")

    first = serving(ca)
    publish(first, 1)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).symlink_to(f"..data/{name}")
    source = FileCertSource(tmp_path / "tls.crt", tmp_path / "tls.key")
    watcher = CertWatcher(source.read, server.reload, interval=0.05)
    watcher.check()
    ctx = client_context(ca)
    assert peer_serial(connect(server.port, ctx)) == first.certificate().serial_number
    watcher.start()
    try:
        second = serving(ca)
        publish(second, 2)
        deadline = time.monotonic() + 5
        while peer_serial(connect(server.port, ctx)) != second.certificate().serial_number:
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            time.sleep(0.05)
    finally:
        watcher.stop()


def test_listening_sockets_are_tcp_so_connections_get_nodelay() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is TCP; without it every
    # keep-alive admission request waited 40 ms for a delayed ACK.
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
