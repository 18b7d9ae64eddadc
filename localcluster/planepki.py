"""The plane's certificates and kubeconfigs, made once in `<state>/pki/` and kept.

A CA; the apiserver's serving certificate (loopback, the `kubernetes` Service names
and address, plus every address at which a node's pods reach it); client
certificates for the admin, the controller-manager, the scheduler and the
apiserver's calls to kubelets; the service-account key pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from localcluster.procs import write_kubeconfig
from netshift import pki

APISERVER_NAMES = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]
APISERVER_IPS = ["127.0.0.1", "10.0.0.1"]  # loopback; the `kubernetes` Service's ClusterIP
# short name -> (common name, groups) of the clients the plane's own components use
CLIENTS = {
    "admin": ("netshift-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
}


def ensure(pki_dir: Path, serving_ips: Sequence[str] = ()) -> None:
    """Every file the plane needs, each made only when missing; the apiserver's serving
    certificate reissued when it lacks one of `serving_ips`."""
    if not (pki_dir / "admin.crt").exists():
        _make(pki_dir)
    _ensure_kubelet_client(pki_dir)
    for ip in serving_ips:
        _ensure_apiserver_ip(pki_dir, ip)


def load_ca(pki_dir: Path) -> pki.KeyPair:
    return pki.KeyPair.from_pem(
        (pki_dir / "ca.crt").read_bytes(), (pki_dir / "ca.key").read_bytes()
    )


def write_pair(directory: Path, stem: str, pair: pki.KeyPair) -> None:
    """`stem.key` and `stem.crt`, each replaced whole (a running reader never sees half)."""
    for suffix, data in ((".key", pair.key_pem), (".crt", pair.cert_pem)):
        tmp = directory / f".{stem}{suffix}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(directory / f"{stem}{suffix}")


def write_kubeconfigs(pki_dir: Path, state_dir: Path, server: str) -> Path:
    """The admin kubeconfig (returned) and the controller-manager's and scheduler's."""
    admin = state_dir / "kubeconfig"
    ca = pki_dir / "ca.crt"
    write_kubeconfig(admin, server, ca, pki_dir / "admin.crt", pki_dir / "admin.key", "admin")
    for short in ("controller-manager", "scheduler"):
        write_kubeconfig(
            state_dir / f"{short}.kubeconfig",
            server,
            ca,
            pki_dir / f"{short}.crt",
            pki_dir / f"{short}.key",
            short,
        )
    return admin


def _make(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    ca = pki.make_ca("netshift-local-ca")
    files: dict[str, bytes] = {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}
    serving = pki.issue(
        ca, "kube-apiserver", dns_names=APISERVER_NAMES, ip_addresses=APISERVER_IPS, server=True
    )
    files["apiserver.crt"], files["apiserver.key"] = serving.cert_pem, serving.key_pem
    for short, (cn, orgs) in CLIENTS.items():
        pair = pki.issue(ca, cn, organizations=orgs, client=True)
        files[f"{short}.crt"], files[f"{short}.key"] = pair.cert_pem, pair.key_pem
    sa_key = pki.new_key()
    files["sa.key"] = pki.KeyPair(ca.cert, sa_key).key_pem
    files["sa.pub"] = pki.public_key_pem(sa_key)
    for fname, data in files.items():
        (d / fname).write_bytes(data)
        (d / fname).chmod(0o600)


def _ensure_kubelet_client(pki_dir: Path) -> None:
    """The apiserver's client certificate for the kubelets (exec, logs, port-forward),
    added to a pki/ made before it existed."""
    if (pki_dir / "apiserver-kubelet-client.crt").exists():
        return
    pair = pki.issue(
        load_ca(pki_dir),
        "kube-apiserver-kubelet-client",
        organizations=["system:masters"],
        client=True,
    )
    write_pair(pki_dir, "apiserver-kubelet-client", pair)


def _ensure_apiserver_ip(pki_dir: Path, ip: str) -> None:
    """Reissue the apiserver's serving certificate if it lacks `ip` (pods reach it there).
    The apiserver reloads its serving certificate from the file while it runs."""
    cert = x509.load_pem_x509_certificate((pki_dir / "apiserver.crt").read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    if ip in ips:
        return
    pair = pki.issue(
        load_ca(pki_dir),
        "kube-apiserver",
        dns_names=san.get_values_for_type(x509.DNSName),
        ip_addresses=[*ips, ip],
        server=True,
    )
    write_pair(pki_dir, "apiserver", pair)
