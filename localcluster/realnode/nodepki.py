"""The real node's certificates (signed by the plane's CA) and kubeconfigs.

The kubelet authenticates as `system:node:<name>` in group `system:nodes` (what the
Node authorizer knows a kubelet by) and serves on the node's address; kube-proxy is
`system:kube-proxy`, bound to system:node-proxier by the apiserver's default policy.
"""

from __future__ import annotations

from collections.abc import Callable

from localcluster import planepki
from localcluster.plane import Plane
from localcluster.procs import write_kubeconfig
from localcluster.realnode.layout import Layout
from netshift import pki


def ensure(layout: Layout, plane: Plane, *, name: str, node_ip: str) -> None:
    """Each certificate made once; the kubeconfigs written every time (the apiserver's
    port is the plane's)."""
    ca = planepki.load_ca(plane.pki_dir)
    kpki = layout.kubelet_pki
    kpki.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Callable[[], pki.KeyPair]] = {
        "kubelet-client": lambda: pki.issue(
            ca, f"system:node:{name}", organizations=["system:nodes"], client=True
        ),
        "kubelet-serving": lambda: pki.issue(
            ca, name, dns_names=[name], ip_addresses=[node_ip, "127.0.0.1"], server=True
        ),
        "kube-proxy": lambda: pki.issue(ca, "system:kube-proxy", client=True),
    }
    for stem, make in wanted.items():
        if not (kpki / f"{stem}.crt").exists():
            planepki.write_pair(kpki, stem, make())
    write_kubeconfig(
        layout.kubelet_dir / "kubeconfig",
        plane.server,
        plane.ca_file,
        kpki / "kubelet-client.crt",
        kpki / "kubelet-client.key",
        f"system:node:{name}",
    )
    write_kubeconfig(
        layout.proxy_dir / "kubeconfig",
        plane.server,
        plane.ca_file,
        kpki / "kube-proxy.crt",
        kpki / "kube-proxy.key",
        "system:kube-proxy",
    )
