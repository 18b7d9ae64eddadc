"""`netshift controller`: run the rollout controller (one active replica through a Lease).

Every replica keeps its caches warm; only the holder of the Lease writes. On
SIGTERM/SIGINT the controller stops patching first and then gives the Lease
up, so a standby takes over at once. `--health-port` serves /healthz, /readyz
(caches synced; a warm standby is ready too) and /metrics (controller/metrics.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from types import FrameType

from controller.audit import AuditLog
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, ControllerOptions
from controller.rollout import Settings
from netshift.keys import SYSTEM_NAMESPACES
from netshift.kube import Kube
from netshift.leader import LeaderElector
from netshift.metrics import HealthServer

log = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "netshift-controller"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, then in-cluster)")
    p.add_argument(
        "--health-port",
        type=int,
        default=0,
        help="plain-HTTP port for /healthz /readyz /metrics (0: none; the manifests use 8081)",
    )
    p.add_argument("--health-bind-address", default="0.0.0.0", help="address of the health port")
    p.add_argument("--workers", type=int, default=4, help="profiles reconciled in parallel")
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        help="reconcile every rollout this often even without events",
    )
    p.add_argument("--audit-log", help="append one JSON line per pod start and settle to this file")
    p.add_argument(
        "--pod-timeout",
        type=float,
        default=600.0,
        help="seconds after its patch that a pod without an agent report counts as failed",
    )
    p.add_argument(
        "--orphan-max-concurrent",
        type=int,
        default=5,
        help="pods in flight at once when handing back the pods of a deleted profile",
    )
    p.add_argument(
        "--exclude-namespaces",
        default=",".join(SYSTEM_NAMESPACES),
        help="namespaces whose pods are never patched (comma-separated)",
    )
    p.add_argument(
        "--no-network-check",
        dest="check_networks",
        action="store_false",
        help="patch pods even when a NetworkAttachmentDefinition they would need is missing",
    )
    le = p.add_argument_group("leader election")
    le.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold a Lease so that only one replica writes (--no-leader-elect: always write)",
    )
    le.add_argument(
        "--lease-namespace", default=os.environ.get("POD_NAMESPACE") or "netshift-system"
    )
    le.add_argument("--lease-name", default=DEFAULT_LEASE_NAME)
    le.add_argument("--identity", default=None, help="holder identity (default: hostname_pid)")
    le.add_argument("--lease-duration", type=float, default=15.0, help="seconds")
    le.add_argument("--renew-interval", type=float, default=5.0, help="seconds")
    le.add_argument("--retry-interval", type=float, default=2.0, help="seconds")


def run(args: argparse.Namespace) -> int:
    kube = Kube.from_kubeconfig(args.kubeconfig)
    identity = args.identity or default_identity()
    audit = AuditLog(args.audit_log) if args.audit_log else None
    options = ControllerOptions(
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        settings=Settings(
            pod_timeout=args.pod_timeout, orphan_max_concurrent=args.orphan_max_concurrent
        ),
        excluded_namespaces=_csv(args.exclude_namespaces),
        check_networks=args.check_networks,
    )
    elector: LeaderElector | None = None

    def leading() -> bool:
        return elector is None or elector.is_leader()

    metrics = ControllerMetrics()
    controller = Controller(kube, options, is_leader=leading, audit=audit, metrics=metrics)
    health: HealthServer | None = None
    if args.health_port:
        health = HealthServer(
            metrics.registry, args.health_bind_address, args.health_port, ready=controller.synced
        ).start()
        log.info("controller health and metrics on http port %d", health.port)
    if args.leader_elect:
        elector = LeaderElector(
            kube,
            args.lease_namespace,
            args.lease_name,
            identity,
            lease_duration=args.lease_duration,
            renew_interval=args.renew_interval,
            retry_interval=args.retry_interval,
            on_started=controller.enqueue_all,
        )

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    controller.start()
    if not controller.wait_synced(60):
        log.warning("caches not synced after 60s; carrying on, the workers start once they are")
    if elector is not None:
        log.info(
            "controller %s: caches synced; campaigning for Lease %s/%s",
            identity,
            args.lease_namespace,
            args.lease_name,
        )
        elector.start()
    else:
        log.info("controller %s: caches synced; leader election off", identity)
        controller.enqueue_all()
    stop.wait()
    # Stop writing before the Lease is given up: the successor must never overlap us.
    controller.stop()
    if elector is not None:
        elector.stop(release=True)
    if audit is not None:
        audit.close()
    if health is not None:
        health.stop()
    return 0
