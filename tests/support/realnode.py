"""Helpers of the real-node tier: busybox pods and workloads, probes, what a failure shows.

The real-node cluster itself (the plane plus kubelet + containerd + Multus, netshift as
pods) is the session fixture `real_cluster` of tests/realnode/conftest.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster import realnode
from localcluster.cluster import LocalCluster
from netshift.kube import ApiError, Kube, wait_for

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def webhook_endpoints(kube: Kube) -> int:
    """Ready endpoints behind the webhook's Service (what the apiserver's calls reach)."""
    slices = kube.get(
        "/apis/discovery.k8s.io/v1/namespaces/netshift-system/endpointslices",
        labelSelector="kubernetes.io/service-name=netshift-webhook",
    )["items"]
    return sum(
        1
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
    )


def webhook_serving(cluster: LocalCluster, kube: Kube, timeout: float = 90) -> None:
    """Every test starts with the webhook serving: it admits every pod and NAD (failurePolicy
    Fail). A wait for it is reported as a warning with what the cluster showed; not serving
    after `timeout` fails the test (with the diagnostics tests/realnode/conftest.py attaches)."""
    started = time.monotonic()
    if webhook_endpoints(kube):
        return
    seen = diagnostics(cluster)
    wait_for(lambda: webhook_endpoints(kube) > 0, timeout, what="a ready webhook endpoint")
    warnings.warn(
        f"the webhook had no ready endpoint for {time.monotonic() - started:.0f}s "
        f"before this test; the cluster then:\n{seen[:3000]}",
        stacklevel=2,
    )


# -- helpers ---------------------------------------------------------------------------


def busybox_pod(
    name: str,
    *,
    command: list[str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels or {"app": name},
            "annotations": annotations or {},
        },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": realnode.image_name("BUSYBOX_IMAGE"),
                    "imagePullPolicy": "Never",
                    "command": command or ["sleep", "100000"],
                }
            ],
        },
    }


def client_pod(name: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod to ping from (ExecPing): netshift's image, which has the Python its ping runs
    on, and ICMP datagram sockets allowed for every group (a sysctl Kubernetes counts safe)."""
    pod = busybox_pod(name, labels=labels)
    pod["spec"]["containers"][0]["image"] = realnode.image_name("NETSHIFT_IMAGE")
    pod["spec"]["securityContext"] = {
        "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}]
    }
    return pod


def create_running(kube: Kube, namespace: str, pod: dict[str, Any], timeout: float = 60) -> Any:
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    name = pod["metadata"]["name"]

    def running() -> Any:
        got = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        statuses = got.get("status", {}).get("containerStatuses", [])
        if got.get("status", {}).get("phase") == "Running" and all(
            s.get("ready") for s in statuses
        ):
            return got
        return None

    return wait_for(running, timeout, what=f"pod {namespace}/{name} Running")


def exec_in(cluster: LocalCluster, namespace: str, pod: str, *argv: str) -> str:
    return cluster.kubectl("-n", namespace, "exec", pod, "--", *argv, timeout=60).stdout


def ipv4_of(cluster: LocalCluster, namespace: str, pod: str, ifname: str) -> list[str]:
    """The IPv4 addresses of `ifname` in the pod, read with `ip` inside the container."""
    done = cluster.kubectl(
        "-n",
        namespace,
        "exec",
        pod,
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        ifname,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        return []
    return [line.split()[3].split("/")[0] for line in done.stdout.splitlines() if " inet " in line]


def network_status(pod: dict[str, Any]) -> list[dict[str, Any]]:
    raw = pod.get("metadata", {}).get("annotations", {}).get(NETWORK_STATUS, "[]")
    value = json.loads(raw)
    return value if isinstance(value, list) else []


def store_addresses(store: Path) -> set[str]:
    """The addresses host-local holds in one store (one file per address, per network dir)."""
    found: set[str] = set()
    if not store.exists():
        return found
    for path in store.rglob("*"):
        if path.is_file():
            with contextlib.suppress(ValueError):
                found.add(str(ipaddress.ip_address(path.name)))
    return found


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def diagnostics(cluster: LocalCluster) -> str:
    """What a failed real-node test leaves for the reader: pods, events, netshift's logs.

    Attached to the failure report (tests/realnode/conftest.py) so that a red CI run says why a
    component was unreachable, not only that it was.
    """
    parts: list[str] = []

    def run(title: str, *args: str) -> None:
        try:
            done = cluster.kubectl(*args, check=False, timeout=30)
            text = (done.stdout + done.stderr).strip()
        except Exception as err:  # a diagnostic must not hide the failure itself
            text = f"({err})"
        parts.append(f"--- {title}\n{text}")

    run("pods", "get", "pods", "-A", "-o", "wide")
    run("node conditions", "get", "nodes", "-o", "jsonpath={..conditions}")
    run("endpoints of netshift-system", "-n", "netshift-system", "get", "endpointslices")
    run("recent events", "get", "events", "-A", "--sort-by=.lastTimestamp")
    for app in ("webhook", "agent", "controller"):
        selector = f"app.kubernetes.io/component={app}"
        tail = 80 if app == "agent" else 25  # the agent's log says what each pod went through
        run(
            f"{app} logs",
            *("-n", "netshift-system", "logs", "-l", selector, f"--tail={tail}", "--prefix"),
        )
        run(
            f"{app} logs of the previous container",
            *("-n", "netshift-system", "logs", "-l", selector, "--tail=15", "--prefix"),
            "--previous",
        )
    # The tail of every event list is what matters; keep the whole report readable.
    return "\n".join(p if len(p) < 6000 else p[:1500] + "\n…\n" + p[-4000:] for p in parts)


# -- networks, workloads and probes for the switch, fault and bad-input tests ---------------


def wait_webhook_injects(kube: Kube, namespace: str, key: str, timeout: float = 60) -> None:
    """Until a pod created in `namespace` comes back with annotation `key` (the webhook's
    caches follow a new profile through a watch); the probe pod is deleted (never Runs:
    its node is unset by a nodeSelector nobody matches)."""
    pod = busybox_pod("inject-probe")
    pod["spec"]["nodeSelector"] = {"netshift.io/no-such-node": "true"}

    def injected() -> bool:
        made = kube.create(f"/api/v1/namespaces/{namespace}/pods", pod, dryRun="All")
        return key in made["metadata"].get("annotations", {})

    eventually(injected, timeout, f"the webhook to inject {key} in {namespace}")


def deployment(
    name: str, replicas: int, *, command: list[str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    labels = labels or {"app": name}
    template = busybox_pod(name, command=command, labels=labels)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }


HTTPD = [
    "sh",
    "-c",
    'mkdir -p /www && echo "served-by-$(hostname)" > /www/index.html && '
    "exec httpd -f -p 8080 -h /www",
]


def running_pods(kube: Kube, namespace: str, selector: str, n: int) -> list[dict[str, Any]] | None:
    """The `n` pods of `selector`, once all of them Run with ready containers."""
    items: list[dict[str, Any]] = kube.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector
    )["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    ready = [
        p
        for p in live
        if p.get("status", {}).get("phase") == "Running"
        and all(s.get("ready") for s in p["status"].get("containerStatuses", []))
    ]
    return ready if len(ready) == n == len(live) else None


def settled_on(pod: dict[str, Any], network: str) -> bool:
    """The agent acted on the pod's current wish, converged, and reports `network` as default."""
    from netshift import podstatus

    annotations = pod["metadata"].get("annotations") or {}
    st = podstatus.parse_status(annotations)
    return (
        st is not None
        and st.default_network == network
        and podstatus.is_settled(annotations) == (True, False)
    )


def default_route(cluster: LocalCluster, namespace: str, pod: str) -> str:
    """The pod's IPv4 default route, read with `ip route` inside the container."""
    out = exec_in(cluster, namespace, pod, "ip", "-4", "route", "show", "default")
    return out.strip()


def service(kube: Kube, namespace: str, name: str, selector: dict[str, str]) -> str:
    svc = kube.create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "metadata": {"name": name},
            "spec": {
                "selector": selector,
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )
    return str(svc["spec"]["clusterIP"])


class HttpLoop:
    """GETs of `url` from the host, one after the other on fresh connections, until stopped;
    a request fails on an error, a 2 s timeout or a body that is not a pod's page."""

    def __init__(self, url: str) -> None:
        import threading
        import urllib.request

        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.served_by: set[str] = set()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._opener.open(self.url, timeout=2) as resp:
                    body = resp.read().decode().strip()
                if body.startswith("served-by-"):
                    self.ok += 1
                    self.served_by.add(body)
                else:
                    self.failures.append(f"body {body[:60]!r}")
            except OSError as err:
                self.failures.append(f"{type(err).__name__}: {err}")
            self._stop.wait(0.01)

    def wait_ok(self, n: int, timeout: float = 60) -> None:
        """Until `n` requests succeeded (kube-proxy programs the Service once its
        EndpointSlice exists); failures before that are not counted."""
        eventually(lambda: self.ok >= n, timeout, f"{n} answers from {self.url}")
        self.failures.clear()

    def stop(self) -> tuple[int, list[str]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.ok, list(self.failures)


class ExecPing:
    """A 10 ms ping from a real container (a `client_pod`) through `kubectl exec`, counting
    lost echoes exactly by sequence number, as localcluster.probe.SeqPing does from a netns:
    a lost echo is a sequence number missing between the first and the last one received.

    The ping is localcluster.probe.PINGER, not busybox's: busybox's socket keeps 18 echoes
    of a burst (neighbour discovery holding a flow's first echoes makes one) and drops the
    rest, which were counted here as lost (the IPv6 loss of issue 20)."""

    def __init__(self, cluster: LocalCluster, namespace: str, pod: str, target: str) -> None:
        import re
        import subprocess
        import threading

        from localcluster import binaries
        from localcluster.probe import container_ping_argv
        from localcluster.procs import clean_env

        self.cluster, self.namespace, self.pod, self.target = cluster, namespace, pod, target
        self._seen: set[int] = set()
        self.arrived: dict[int, float] = {}  # seq -> time.monotonic() of its echo
        self.pid: int | None = None
        self._cond = threading.Condition()
        self._pattern = re.compile(r"seq=(\d+) ttl=")
        self.proc = subprocess.Popen(
            [
                binaries.find("kubectl"),
                f"--kubeconfig={cluster.kubeconfig}",
                *("-n", namespace, "exec", pod, "--"),
                # The shell's pid is the ping's (exec): stop() interrupts this ping alone.
                *("sh", "-c", 'echo "pid $$"; exec "$@"', "sh"),
                *container_ping_argv(target),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = self._pattern.search(line)
            with self._cond:
                if m:
                    self._seen.add(int(m.group(1)))
                    self.arrived[int(m.group(1))] = time.monotonic()
                elif line.startswith("pid ") and self.pid is None:
                    self.pid = int(line.split()[1])
                self._cond.notify_all()

    def wait_first(self, timeout: float = 20.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._seen), timeout)

    def settle(self, echoes: int = 20, timeout: float = 10.0) -> bool:
        with self._cond:
            mark = max(self._seen, default=0)
            return self._cond.wait_for(lambda: max(self._seen, default=0) >= mark + echoes, timeout)

    def socket_drops(self) -> int:
        """Packets the pod's ICMP and raw sockets of both families dropped (receive buffer
        full): echoes that came back but could not be counted. The last column of
        /proc/net/{icmp,icmp6,raw,raw6}."""
        out = self.cluster.kubectl(
            *("-n", self.namespace, "exec", self.pod, "--", "cat"),
            *(f"/proc/net/{table}" for table in ("icmp", "icmp6", "raw", "raw6")),
        ).stdout
        rows = (line.split() for line in out.splitlines())
        return sum(int(row[-1]) for row in rows if row and row[0].rstrip(":").isdigit())

    def stop(self) -> tuple[int, list[int]]:
        """(echoes counted, lost sequence numbers)."""
        import subprocess

        # SIGINT to this ping inside the container; `kubectl exec` then ends with it.
        if self.pid is not None:
            self.cluster.kubectl(
                *("-n", self.namespace, "exec", self.pod, "--"),
                *("sh", "-c", f"kill -INT {self.pid}"),
                check=False,
            )
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        with self._cond:
            if not self._seen:
                return 0, []
            low, high = min(self._seen), max(self._seen)
            return high - low + 1, sorted(set(range(low, high + 1)) - self._seen)


def pod_deleted(kube: Kube, namespace: str, name: str) -> bool:
    try:
        kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except ApiError as err:
        return err.status == 404
    return False
