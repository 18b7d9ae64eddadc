"""netshift's own processes on the local cluster, started by `netshift up` after the plane.

On a real cluster these run as the Deployments and DaemonSet in manifests/;
locally there is no container runtime, so they run as plain processes.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from localcluster.procs import Proc, http_ok, main_python
from webhook.registration import apply_webhook_configurations, webhook_configurations

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster


def local_procs(cluster: LocalCluster) -> list[Proc]:
    py = list(main_python())
    kc = str(cluster.kubeconfig)
    sim_dir = cluster.state_dir / "node"
    agent_dir = cluster.state_dir / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True)
    cluster_conf = sim_dir / "net.d" / "00-netshift-cluster.conflist"
    webhook_port, health_port = cluster.port("webhook"), cluster.port("webhook-health")
    return [
        Proc(
            "nodesim",
            [
                *py,
                "nodesim",
                f"--kubeconfig={kc}",
                f"--node={cluster.node}",
                f"--state-dir={sim_dir}",
                f"--subnet={cluster.pod_subnet}",
                f"--bridge={cluster.bridge}",
            ],
            healthy=lambda: _ready(cluster, "nodesim", sim_dir / "ready"),
        ),
        Proc(
            "agent",
            [
                *py,
                "agent",
                f"--kubeconfig={kc}",
                f"--node={cluster.node}",
                f"--records-dir={agent_dir / 'records'}",
                f"--cluster-network-conf={cluster_conf}",
                # The node simulator's namespaces, found like any runtime's: by path.
                "--netns-template=/var/run/netns/netshift-{uid}",
                f"--ready-file={agent_dir / 'ready'}",
                f"--timing-log={agent_dir / 'timings.jsonl'}",
                "--health-bind-address=127.0.0.1",
                f"--health-port={cluster.port('agent-health')}",
            ],
            healthy=lambda: _ready(cluster, "agent", agent_dir / "ready"),
        ),
        Proc(
            "webhook",
            [
                *py,
                "webhook",
                f"--kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--port={webhook_port}",
                f"--health-port={health_port}",
                "--tls-hosts=127.0.0.1",
            ],
            healthy=lambda: http_ok(f"http://127.0.0.1:{health_port}/readyz"),
            after_healthy=lambda: register_webhook(cluster, webhook_port),
        ),
        Proc(
            "controller",
            [
                *py,
                "controller",
                f"--kubeconfig={kc}",
                "--identity=netshift-local",
                f"--health-port={cluster.port('controller-health')}",
                "--health-bind-address=127.0.0.1",
                f"--audit-log={cluster.state_dir / 'logs' / 'rollout-audit.jsonl'}",
            ],
            healthy=lambda: _leads(cluster, "netshift-local"),
        ),
    ]


def _ready(cluster: LocalCluster, name: str, ready_file: Path) -> bool:
    """Ready once the running process itself wrote its pid into its ready file."""
    try:
        return ready_file.read_text().strip() == str(cluster.pid(name))
    except OSError:
        return False


def register_webhook(cluster: LocalCluster, port: int) -> None:
    """Point the apiserver at the local webhook by URL, trusting the CA the webhook made."""
    kube = cluster.kube()
    secret = kube.get("/api/v1/namespaces/netshift-system/secrets/netshift-webhook-tls")
    ca = base64.b64decode(secret["data"]["ca.crt"])
    objects = webhook_configurations(ca_bundle=ca, url=f"https://127.0.0.1:{port}")
    apply_webhook_configurations(kube, objects)


def _leads(cluster: LocalCluster, identity: str) -> bool:
    """The controller is up once it holds its Lease (one active replica)."""
    try:
        lease = cluster.kube().get(
            "/apis/coordination.k8s.io/v1/namespaces/netshift-system/leases/netshift-controller"
        )
    except Exception:
        return False
    return bool(lease.get("spec", {}).get("holderIdentity") == identity)
