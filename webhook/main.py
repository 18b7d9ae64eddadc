"""`netshift webhook`: run the admission webhook.

TLS material comes from one of two places:
- managed (default): a CA and serving certificate netshift creates and keeps
  in the Secret `--tls-secret` (created if missing and allowed), renewed before
  expiry, its CA bundle patched into the webhook configurations named
  `--webhook-config-name`;
- files: `--tls-cert-file` and `--tls-key-file` (e.g. a cert-manager Secret
  mounted into the pod), re-read every `--tls-check-interval` seconds.
Either way a changed certificate is loaded without a restart.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from netshift.kube import Kube
from netshift.nadpolicy import POLICY_CONFIGMAP
from webhook.app import (
    MAX_BODY_BYTES,
    WebhookSettings,
    create_app,
    create_health_app,
    readiness_tick,
)
from webhook.certs import (
    CertWatcher,
    FileCertSource,
    KubeSecretStore,
    SecretCertManager,
    ServingMaterial,
    service_dns_names,
    split_hosts,
)
from webhook.informers import InformerCaches
from webhook.metrics import WebhookMetrics
from webhook.registration import DEFAULT_CONFIG_NAME, DEFAULT_NAMESPACE, DEFAULT_SERVICE
from webhook.server import ReloadableTLS, WebhookServer, bind
from webhook.validate import DEFAULT_GLOBAL_NAMESPACES, ValidationOptions
from webhook.workers import ReadinessBoard, Workers, default_workers

log = logging.getLogger(__name__)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    namespace = os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE
    p = parser
    p.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, then in-cluster)")
    p.add_argument("--bind-address", default="0.0.0.0", help="address of both listeners")
    p.add_argument("--port", type=int, default=8443, help="HTTPS port for /mutate and /validate")
    p.add_argument(
        "--health-port",
        type=int,
        default=8081,
        help="plain-HTTP port for /healthz /readyz /metrics (0: none; they are on the HTTPS port too)",
    )
    tls = p.add_argument_group("TLS")
    tls.add_argument("--tls-cert-file", help="serving certificate chain (file mode)")
    tls.add_argument("--tls-key-file", help="serving key (file mode)")
    tls.add_argument(
        "--tls-secret",
        default="netshift-webhook-tls",
        help="Secret holding the managed CA and certificate (managed mode)",
    )
    tls.add_argument("--tls-secret-namespace", default=namespace)
    tls.add_argument(
        "--service-name", default=DEFAULT_SERVICE, help="Service DNS names in the SANs"
    )
    tls.add_argument("--service-namespace", default=namespace)
    tls.add_argument(
        "--tls-hosts",
        default="",
        help="extra SANs, comma-separated DNS names and IPs (e.g. 127.0.0.1 for a URL webhook)",
    )
    tls.add_argument(
        "--webhook-config-name",
        default=DEFAULT_CONFIG_NAME,
        help='Mutating/ValidatingWebhookConfiguration to patch the caBundle into ("": none)',
    )
    tls.add_argument("--cert-days", type=int, default=90, help="serving certificate lifetime")
    tls.add_argument("--ca-days", type=int, default=3650, help="CA lifetime")
    tls.add_argument(
        "--tls-check-interval",
        type=float,
        default=30.0,
        help="seconds between checks of the Secret or files for a new or due certificate",
    )
    pol = p.add_argument_group("policy")
    pol.add_argument(
        "--namespace-isolation",
        action="store_true",
        help="deny references to NADs of other namespaces (except global ones and profile networks)",
    )
    pol.add_argument(
        "--nad-policy-configmap",
        default=POLICY_CONFIGMAP,
        help="ConfigMap (in --nad-policy-namespace) holding the NAD policy; absent: policy off "
        '("": never read one)',
    )
    pol.add_argument("--nad-policy-namespace", default=namespace)
    pol.add_argument(
        "--global-namespaces",
        default=",".join(DEFAULT_GLOBAL_NAMESPACES),
        help="namespaces whose NADs any pod may use under --namespace-isolation",
    )
    p.add_argument(
        "--shutdown-delay",
        type=float,
        default=0.0,
        help="on SIGTERM, report not-ready but keep serving this many seconds (in-cluster: 5)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="worker processes sharing both ports, each with its own caches and TLS "
        "watcher (default: $NETSHIFT_WEBHOOK_WORKERS, else 1)",
    )
    p.add_argument(
        "--metrics-dir",
        type=Path,
        default=None,
        help="with several workers: directory of their metric files, emptied at start "
        "(default: $PROMETHEUS_MULTIPROC_DIR, else a temporary one)",
    )
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    lim.add_argument(
        "--cache-wait",
        type=float,
        default=2.0,
        help="seconds a request waits for a namespace the cache has not seen yet",
    )


def tls_source(args: argparse.Namespace, kube: Kube) -> tuple[Callable[[], ServingMaterial], str]:
    """The function that yields current TLS material, and a description of it."""
    if args.tls_cert_file or args.tls_key_file:
        if not (args.tls_cert_file and args.tls_key_file):
            raise SystemExit("--tls-cert-file and --tls-key-file go together")
        files = FileCertSource(args.tls_cert_file, args.tls_key_file)
        return files.read, f"files {args.tls_cert_file}, {args.tls_key_file}"
    dns, ips = split_hosts(
        [*service_dns_names(args.service_name, args.service_namespace), *_csv(args.tls_hosts)]
    )
    manager = SecretCertManager(
        KubeSecretStore(kube, args.tls_secret_namespace, args.tls_secret),
        dns_names=dns,
        ip_addresses=ips,
        cert_days=args.cert_days,
        ca_days=args.ca_days,
        kube=kube,
        webhook_config_name=args.webhook_config_name or None,
    )
    return manager.reconcile, f"Secret {args.tls_secret_namespace}/{args.tls_secret}"


def _first_material(source: Callable[[], ServingMaterial], what: str) -> ServingMaterial:
    delay = 1.0
    while True:
        try:
            return source()
        except Exception as err:
            log.warning("no TLS material from %s yet (%s); retrying in %.0fs", what, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def run(args: argparse.Namespace) -> int:
    # Sockets, metrics directory and readiness board first, in this process: the
    # workers inherit them (webhook/workers.py).
    sock = bind(args.bind_address, args.port)
    health_sock = bind(args.bind_address, args.health_port) if args.health_port else None
    workers = Workers.prepare(args.workers, args.metrics_dir)
    return workers.run(lambda index: _serve(args, sock, health_sock, workers.board, index))


def _serve(
    args: argparse.Namespace,
    sock: socket.socket,
    health_sock: socket.socket | None,
    board: ReadinessBoard,
    index: int,
) -> int:
    """One worker: its own client, TLS context, certificate watcher and caches."""
    kube = Kube.from_kubeconfig(args.kubeconfig)
    metrics = WebhookMetrics()
    tls = ReloadableTLS(metrics)
    source, what = tls_source(args, kube)
    tls.load(_first_material(source, what))

    nad_policy = (
        (args.nad_policy_namespace, args.nad_policy_configmap)
        if args.nad_policy_configmap
        else None
    )
    caches = InformerCaches(kube, nad_policy=nad_policy)
    caches.start()
    settings = WebhookSettings(
        caches=caches,
        options=ValidationOptions(
            namespace_isolation=args.namespace_isolation,
            global_namespaces=frozenset(_csv(args.global_namespaces)),
        ),
        metrics=metrics,
        tls_ready=lambda: tls.loaded,
        max_body_bytes=args.max_body_bytes,
        cache_wait=args.cache_wait,
        board=board,
        worker=index,
    )
    # Every worker serves the health port too: its /readyz reads the board and its
    # /metrics merges the workers' files, so any of them answers for the replica.
    server = WebhookServer(
        create_app(settings),
        tls,
        sock,
        health_app=create_health_app(settings) if health_sock else None,
        health_sock=health_sock,
        shutdown_delay=args.shutdown_delay,
        tick=readiness_tick(settings),
    )
    settings.stopping = server.stopping.is_set
    watcher = CertWatcher(source, server.reload, args.tls_check_interval)
    watcher.start()
    log.info(
        "webhook worker %d serving https on %s:%d (TLS from %s), health on %s",
        index,
        args.bind_address,
        server.port,
        what,
        f"http port {server.health_port}" if health_sock else "the https port",
    )
    try:
        server.run(handle_signals=True)
    finally:
        watcher.stop()
        caches.stop()
    return 0
