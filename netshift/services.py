"""netshift's own processes on the local cluster, started by `netshift up` after the plane.

On a real cluster these run as the Deployments and DaemonSet in manifests/;
locally there is no container runtime, so they run as plain processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netshift.localcluster import LocalCluster, Proc


def local_procs(cluster: LocalCluster) -> list[Proc]:
    from netshift.localcluster import Proc, main_python

    py = list(main_python())
    kc = str(cluster.kubeconfig)
    sim_dir = cluster.state_dir / "node"
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
            healthy=lambda: (sim_dir / "ready").exists(),
        ),
    ]
