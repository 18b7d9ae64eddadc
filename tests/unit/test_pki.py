"""Certificates made with cryptography verify as a TLS client would verify them."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from netshift import pki


def test_serving_cert_has_ip_and_dns_sans_and_is_signed_by_the_ca() -> None:
    ca = pki.make_ca("test-ca")
    leaf = pki.issue(ca, "svc", dns_names=["svc.ns.svc"], ip_addresses=["127.0.0.1"], server=True)
    sans = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    pub = ca.cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(leaf.cert.signature, leaf.cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


def test_client_cert_carries_the_organisation_for_rbac_groups() -> None:
    ca = pki.make_ca("test-ca")
    admin = pki.issue(ca, "admin", organizations=["system:masters"], client=True)
    orgs = admin.cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    again = pki.KeyPair.from_pem(admin.cert_pem, admin.key_pem)
    assert again.cert == admin.cert
