"""netshift's webhook and controller as host processes, beside the node simulator.

On a real node they run as the Deployments in manifests/ (localcluster/realnode/deploy.py);
the node simulator runs no containers, so there they are plain processes of its node,
reaching the apiserver on loopback, the webhook registered by URL.
"""

from __future__ import annotations

import base64

from localcluster.plane import Plane
from localcluster.procs import Proc, http_ok, main_python
from localcluster.state import Ports
from netshift.kube import Kube, lease_path, secret_path
from webhook.registration import apply_webhook_configurations, webhook_configurations

CONTROLLER_IDENTITY = "netshift-local"
LEASE = lease_path("netshift-system", "netshift-controller")


def procs(plane: Plane, ports: Ports) -> list[Proc]:
    """The webhook (registered with the apiserver once healthy), then the controller."""
    py, kc = list(main_python()), str(plane.kubeconfig)
    webhook_port, health_port = ports("webhook"), ports("webhook-health")
    audit_log = plane.supervisor.log_dir / "rollout-audit.jsonl"
    return [
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
            after_healthy=lambda: register_webhook(plane.kube(), webhook_port),
        ),
        Proc(
            "controller",
            [
                *py,
                "controller",
                f"--kubeconfig={kc}",
                f"--identity={CONTROLLER_IDENTITY}",
                f"--health-port={ports('controller-health')}",
                "--health-bind-address=127.0.0.1",
                f"--audit-log={audit_log}",
            ],
            healthy=lambda: _leads(plane.kube(), CONTROLLER_IDENTITY),
        ),
    ]


def register_webhook(kube: Kube, port: int) -> None:
    """Point the apiserver at the local webhook by URL, trusting the CA the webhook made."""
    secret = kube.get(secret_path("netshift-system", "netshift-webhook-tls"))
    ca = base64.b64decode(secret["data"]["ca.crt"])
    objects = webhook_configurations(ca_bundle=ca, url=f"https://127.0.0.1:{port}")
    apply_webhook_configurations(kube, objects)


def _leads(kube: Kube, identity: str) -> bool:
    """The controller is up once it holds its Lease (one active replica)."""
    try:
        lease = kube.get(LEASE)
    except Exception:
        return False
    return bool(lease.get("spec", {}).get("holderIdentity") == identity)
