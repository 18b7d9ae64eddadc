"""What both demos share: the demo's networks, its profile, idempotent creation, the table.

`netshift demo` runs on the local cluster's real node (localcluster/realdemo.py) or
on the node simulator (localcluster/simdemo.py); both move namespace `netshift-demo`
from network old-cni to new-cni through the same NetworkProfile.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netshift import podstatus
from netshift.keys import SELECTED_LABEL
from netshift.kube import ApiError, Kube, namespace_path, pod_path

NS = "netshift-demo"
PROFILE = "netshift-demo"
DEMO_LABEL = "netshift.io/demo"
# (NAD name, bridge, first three octets of its /24)
OLD = ("old-cni", "nsdemo-old", "10.251.1")
NEW = ("new-cni", "nsdemo-new", "10.251.2")


def selected(kube: Kube, namespace: str) -> bool:
    """Whether the namespace carries netshift.io/selected: from then on its new pods go
    through the webhook (the controller labels it once the profile selects it)."""
    labels = kube.get(namespace_path(namespace))["metadata"].get("labels") or {}
    return labels.get(SELECTED_LABEL) == "true"


def bridge_nad(
    namespace: str, name: str, bridge: str, subnet: str | Sequence[str], ipam_dir: Path
) -> dict[str, Any]:
    """A NAD for a bridge network with a gateway and a default route, no masquerading;
    `subnet`: one CIDR or one per IP family (a range and a default route each)."""
    subnets = [subnet] if isinstance(subnet, str) else list(subnet)
    versions = [ipaddress.ip_network(s).version for s in subnets]
    config = {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": s}] for s in subnets],
                    "routes": [{"dst": "0.0.0.0/0" if v == 4 else "::/0"} for v in versions],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": json.dumps(config)},
    }


def profile(default_network: str, max_concurrent: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "netshift.io/v1alpha1",
        "kind": "NetworkProfile",
        "metadata": {"name": PROFILE},
        "spec": {
            "namespaceSelector": {"matchLabels": {DEMO_LABEL: "true"}},
            "defaultNetwork": default_network,
            "mode": "Default",
            "rollout": {
                "existingPods": "Live",
                "maxConcurrent": max_concurrent,
                "oldDefault": "Keep",
            },
        },
    }


def apply(kube: Kube, path: str, obj: dict[str, Any]) -> None:
    """Create `obj`; one that exists already (a previous --keep run) is fine."""
    try:
        kube.create(path, obj)
    except ApiError as err:
        if err.status != 409:
            raise


def switched_count(kube: Kube, namespace: str, network: str, selector: str) -> int:
    """Pods whose agent reports `network` as their default network."""
    pods = kube.get(pod_path(namespace), labelSelector=selector)["items"]
    done = 0
    for pod in pods:
        st = podstatus.parse_status(pod["metadata"].get("annotations") or {})
        if st and st.default_network == network:
            done += 1
    return done


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
