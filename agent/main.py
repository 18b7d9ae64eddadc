"""`netshift agent`: the node agent (one per node; a DaemonSet on a real cluster)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from agent.netns import (
    CgroupResolver,
    ChainResolver,
    CriResolver,
    NetnsResolver,
    PathTemplateResolver,
)
from agent.plan import DEFAULT_RETRY, Retry
from agent.procsys import NET_SYSCTLS, make_net_sysctls_writable
from agent.reconcile import Agent, AgentSettings
from netshift.cni.nodeconf import DEFAULT_CONF_DIR
from netshift.keys import NETSHIFT_NAMESPACE
from netshift.kube import Kube
from netshift.metrics import HealthServer
from netshift.nadpolicy import POLICY_CONFIGMAP

log = logging.getLogger("netshift.agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, then in-cluster")
    parser.add_argument("--node", default=os.environ.get("NODE_NAME"), help="default: $NODE_NAME")
    parser.add_argument("--records-dir", default="/var/lib/netshift/records")
    parser.add_argument(
        "--cni-bin-dir", action="append", default=None, help="CNI plugin dir (repeatable)"
    )
    parser.add_argument(
        "--cluster-network-conf",
        default=None,
        help="CNI conf(list) of the cluster default network (Multus's clusterNetwork)",
    )
    parser.add_argument(
        "--node-conf-dir",
        default=DEFAULT_CONF_DIR,
        help="the node's Multus conf dir (its confDir): a NAD without spec.config is the CNI "
        'conf file of that name there ("" for none)',
    )
    parser.add_argument(
        "--netns-template",
        default=None,
        help="find pod namespaces by path, e.g. /var/run/netns/netshift-{uid} "
        "(fields: uid, namespace, name); otherwise from the pod's cgroup",
    )
    parser.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    parser.add_argument(
        "--cri-socket",
        default=None,
        help="ask the CRI runtime over its socket, e.g. unix:///run/containerd/containerd.sock",
    )
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument(
        "--health-port",
        type=int,
        default=0,
        help="plain-HTTP port for /healthz /readyz /metrics (0: none; the manifests use 9402)",
    )
    parser.add_argument("--health-bind-address", default="0.0.0.0")
    parser.add_argument(
        "--nad-policy-configmap",
        default=f"{NETSHIFT_NAMESPACE}/{POLICY_CONFIGMAP}",
        help='the cluster\'s NAD policy ConfigMap as "namespace/name" ("" for none)',
    )
    parser.add_argument("--resync-seconds", type=float, default=60.0)
    parser.add_argument(
        "--retry-base-seconds",
        type=float,
        default=DEFAULT_RETRY.base,
        help="a failed attachment is tried again after this, doubling after each failure",
    )
    parser.add_argument(
        "--retry-max-seconds",
        type=float,
        default=DEFAULT_RETRY.cap,
        help="at most this long between two attempts of a failed attachment",
    )
    parser.add_argument("--ready-file", default=None, help="written once the agent is ready")
    parser.add_argument(
        "--timing-log", default=None, help="append one JSON line per pod change (for bench/)"
    )
    parser.add_argument(
        "--release-all",
        action="store_true",
        help="DEL every recorded attachment (IPAM released) and exit: for a node going away",
    )


def build_resolver(args: argparse.Namespace) -> NetnsResolver:
    resolvers: list[NetnsResolver] = []
    if args.netns_template:
        resolvers.append(PathTemplateResolver(args.netns_template))
    if args.cri_socket:
        resolvers.append(CriResolver(args.cri_socket))
    if not args.netns_template:
        resolvers.append(CgroupResolver(cgroup_root=args.cgroup_root))
    return resolvers[0] if len(resolvers) == 1 else ChainResolver(resolvers)


def run(args: argparse.Namespace) -> int:
    if not args.node:
        raise SystemExit("netshift agent: --node (or $NODE_NAME) is required")
    try:
        if make_net_sysctls_writable():
            log.info("%s made writable for the CNI plugins (this container only)", NET_SYSCTLS)
    except OSError as err:
        log.warning("%s; plugins that write network sysctls will fail", err.strerror)
    timing_lock = threading.Lock()

    def on_timing(entry: dict[str, Any]) -> None:
        with timing_lock, open(args.timing_log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    agent = Agent(
        Kube.from_kubeconfig(args.kubeconfig),
        AgentSettings(
            node=args.node,
            plugin_dirs=tuple(args.cni_bin_dir or ["/opt/cni/bin", "/usr/lib/cni"]),
            records_dir=args.records_dir,
            cluster_network_conf=args.cluster_network_conf,
            node_conf_dir=args.node_conf_dir or None,
            workers=args.workers,
            resync_seconds=args.resync_seconds,
            retry=Retry(args.retry_base_seconds, args.retry_max_seconds),
            nad_policy=_namespaced(args.nad_policy_configmap),
        ),
        build_resolver(args),
        on_timing=on_timing if args.timing_log else None,
    )
    if args.release_all:
        left = agent.release_all()
        return 0 if left == 0 else 1
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health: HealthServer | None = None
    if args.health_port:
        health = HealthServer(
            agent.metrics.registry, args.health_bind_address, args.health_port, ready=agent.synced
        ).start()
    agent.start()
    if args.ready_file:
        Path(args.ready_file).write_text(str(os.getpid()))
    stop.wait()
    agent.stop()
    if health is not None:
        health.stop()
    return 0


def _namespaced(value: str) -> tuple[str, str] | None:
    if not value:
        return None
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise SystemExit(f"netshift agent: expected namespace/name, got {value!r}")
    return namespace, name
