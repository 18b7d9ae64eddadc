"""Kubernetes access for every netshift component: a raw-JSON client and a watch-fed cache.

The generated models of the `kubernetes` package are slow to build and hide
unknown fields, so netshift talks JSON: the package is used only for what it is
good at (reading a kubeconfig or the in-cluster service account and holding a
TLS connection pool).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from netshift.keys import PROFILE_GROUP, PROFILE_PLURAL, PROFILE_VERSION

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer of the apiserver, with its Status message."""

    def __init__(self, status: int, reason: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body


class Kube:
    """A thin JSON client over one apiserver connection pool (thread-safe)."""

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        self._cfg = configuration
        self._api = k8s_client.ApiClient(configuration)
        self._pool: urllib3.PoolManager = self._api.rest_client.pool_manager
        self.host: str = str(configuration.host).rstrip("/")

    @classmethod
    def from_kubeconfig(cls, path: str | None = None) -> Kube:
        cfg = k8s_client.Configuration()
        path = path or os.environ.get("KUBECONFIG")
        if path:
            k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=cfg)
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(client_configuration=cfg)
        # Loopback apiservers must never be reached through a proxy variable.
        cfg.proxy = None
        return cls(cfg)

    # -- plumbing ---------------------------------------------------------

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "netshift"}
        if self._cfg.refresh_api_key_hook is not None:
            self._cfg.refresh_api_key_hook(self._cfg)
        # A kubeconfig's token sits under "authorization"; the in-cluster loader (a pod's
        # ServiceAccount token, refreshed by the hook above) puts it under "BearerToken".
        token = self._cfg.get_api_key_with_prefix(
            "authorization"
        ) or self._cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _url(self, path: str, params: Mapping[str, str] | None) -> str:
        url = self.host + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        data = None if body is None else json.dumps(body).encode()
        resp = self._pool.request(
            method,
            self._url(path, params),
            body=data,
            headers=self._headers(content_type if data is not None else None),
            timeout=urllib3.Timeout(connect=5.0, read=timeout),
            retries=False,
        )
        return _decode(resp.status, resp.data)

    def get(self, path: str, **params: str) -> JSON:
        return self.request("GET", path, params=params)

    def get_text(self, path: str, timeout: float = 30.0) -> str:
        """A non-JSON GET (an apiserver's /metrics); ApiError on an error status."""
        resp = self._pool.request(
            "GET",
            self._url(path, None),
            headers={**self._headers(), "Accept": "text/plain"},
            timeout=urllib3.Timeout(connect=5.0, read=timeout),
            retries=False,
        )
        if resp.status >= 300:
            _decode(resp.status, resp.data)  # raises with the apiserver's message
        return bytes(resp.data).decode(errors="replace")

    def create(self, path: str, body: Mapping[str, Any], **params: str) -> JSON:
        return self.request("POST", path, params=params, body=body)

    def put(self, path: str, body: Mapping[str, Any]) -> JSON:
        return self.request("PUT", path, body=body)

    def patch_merge(self, path: str, body: Mapping[str, Any], **params: str) -> JSON:
        return self.request(
            "PATCH", path, params=params, body=body, content_type="application/merge-patch+json"
        )

    def patch_json(self, path: str, ops: Sequence[Mapping[str, Any]], **params: str) -> JSON:
        return self.request(
            "PATCH", path, params=params, body=list(ops), content_type="application/json-patch+json"
        )

    def delete(self, path: str, body: Mapping[str, Any] | None = None, **params: str) -> JSON:
        return self.request("DELETE", path, params=params, body=body)

    def watch(
        self,
        path: str,
        resource_version: str,
        opened: Callable[[urllib3.BaseHTTPResponse], None] | None = None,
        **params: str,
    ) -> Iterator[JSON]:
        """Yield watch events ({"type", "object"}) until the server closes the stream.

        `opened` gets the streaming response as soon as it is open: its ``shutdown()``
        ends the watch from another thread (the reader then gets an error).
        """
        query = dict(params)
        timeout_seconds = int(query.pop("timeoutSeconds", "300"))
        query.update(
            watch="true",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout_seconds),
        )
        resp = self._pool.request(
            "GET",
            self._url(path, query),
            headers=self._headers(),
            preload_content=False,
            timeout=urllib3.Timeout(connect=5.0, read=timeout_seconds + 30),
            retries=False,
        )
        if opened is not None:
            opened(resp)
        try:
            if resp.status >= 300:
                _decode(resp.status, resp.read())
            buf = b""
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except BaseException:
            resp.close()  # cut short (shut down, or a broken stream): not back into the pool
            raise
        else:
            resp.release_conn()


def _decode(status: int, data: bytes) -> JSON:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {"message": data[:500].decode(errors="replace")}
    if status >= 300:
        raise ApiError(
            status,
            str(body.get("reason", "")) if isinstance(body, dict) else "",
            str(body.get("message", "")) if isinstance(body, dict) else str(body),
            body,
        )
    return body if isinstance(body, dict) else {"items": body}


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Informer:
    """A list+watch cache of one resource collection, kept in a background thread.

    Level-triggered users read `items()`/`get()`; edge users get `on_event(type, obj)`
    for ADDED/MODIFIED/DELETED (a re-list replays ADDED for every object and
    DELETED for the ones that vanished meanwhile).
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        on_event: Callable[[str, JSON], None] | None = None,
        name: str = "",
    ) -> None:
        self._kube = kube
        self._path = path
        self._params = dict(params or {})
        self._on_event = on_event
        self.name = name or path
        self._items: dict[str, JSON] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: urllib3.BaseHTTPResponse | None = None  # the watch in flight

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching. The watch request in flight ends now, not at its next event: an
        apiserver's graceful shutdown waits for every open request, a stopped watch too."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            _shut(stream)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end after `stop`; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _opened(self, stream: urllib3.BaseHTTPResponse) -> None:
        with self._lock:
            self._stream = stream
        if self._stop.is_set():  # stopped while the request was being sent
            _shut(stream)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def get(self, key: str) -> JSON | None:
        with self._lock:
            return self._items.get(key)

    def items(self) -> list[JSON]:
        with self._lock:
            return list(self._items.values())

    def _emit(self, kind: str, obj: JSON) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, obj)
        except Exception:
            log.exception("informer %s: event handler failed", self.name)

    def _relist(self) -> str:
        listing = self._kube.get(self._path, **self._params)
        fresh = {object_key(o): o for o in listing.get("items", [])}
        with self._lock:
            gone = [o for k, o in self._items.items() if k not in fresh]
            self._items = fresh
        for obj in gone:
            self._emit("DELETED", obj)
        for obj in fresh.values():
            self._emit("ADDED", obj)
        self._synced.set()
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    def _run(self) -> None:
        backoff = 0.2
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._relist()
                rv = self._watch(rv)
                backoff = 0.2
            except ApiError as err:
                if err.status == 410:
                    rv = ""
                    continue
                backoff = self._back_off(err, backoff)
            except Exception as err:  # connection reset, apiserver restart, ...
                if self._stop.is_set():
                    return
                backoff = self._back_off(err, backoff)

    def _watch(self, rv: str) -> str:
        """Apply one watch stream from `rv`; the resourceVersion to go on from ("" = relist)."""
        try:
            return self._apply_stream(rv)
        finally:
            with self._lock:
                self._stream = None

    def _apply_stream(self, rv: str) -> str:
        for event in self._kube.watch(self._path, rv, self._opened, **self._params):
            if self._stop.is_set():
                return rv
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                # 410 Gone: our resourceVersion is too old; start over with a list.
                return ""
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if kind != "BOOKMARK":
                self._apply(str(kind), obj)
        return rv

    def _apply(self, kind: str, obj: JSON) -> None:
        key = object_key(obj)
        with self._lock:
            if kind == "DELETED":
                self._items.pop(key, None)
            else:
                self._items[key] = obj
        self._emit(kind, obj)

    def _back_off(self, err: Exception, backoff: float) -> float:
        """Log, wait `backoff` (cut short by stop), return the next, doubled up to 10 s."""
        log.warning("informer %s: %s; retrying in %.1fs", self.name, err, backoff)
        self._stop.wait(backoff)
        return min(backoff * 2, 10.0)


def _shut(stream: urllib3.BaseHTTPResponse) -> None:
    """End a streaming response from another thread (its reader gets an error at once)."""
    with contextlib.suppress(OSError):  # already closed
        stream.shutdown()


def patch_annotations(kube: Kube, path: str, changes: Mapping[str, str | None]) -> JSON:
    """Merge-patch only the given annotation keys (None deletes one); never a whole-object update."""
    return kube.patch_merge(path, {"metadata": {"annotations": dict(changes)}})


# -- API paths ----------------------------------------------------------------------
# The one home of the REST paths of the kinds netshift reads and writes. For a
# namespaced kind, `namespace=None` is every namespace (to list or watch); for any
# kind, `name=None` is the collection (to list, watch or create in).

CORE_V1: Final = "/api/v1"
NAD_GROUP_VERSION: Final = "k8s.cni.cncf.io/v1"
LEASE_GROUP_VERSION: Final = "coordination.k8s.io/v1"
APPS_V1: Final = "apps/v1"
ADMISSION_V1: Final = "admissionregistration.k8s.io/v1"
APIEXTENSIONS_V1: Final = "apiextensions.k8s.io/v1"
# Only running pods matter to a rollout: the controller and `netshift plan` ask the
# apiserver to filter the rest out.
RUNNING_PODS: Final[Mapping[str, str]] = {"fieldSelector": "status.phase=Running"}


def api_path(
    group_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The path of a kind's collection or object; `group_version` "" is the core group."""
    base = f"/apis/{group_version}" if group_version else CORE_V1
    if namespace is not None:
        base = f"{base}/namespaces/{namespace}"
    path = f"{base}/{plural}"
    if name:
        path = f"{path}/{name}"
        if subresource:
            path = f"{path}/{subresource}"
    return path


def pod_path(namespace: str | None = None, name: str | None = None) -> str:
    return api_path("", "pods", namespace, name)


def nad_path(namespace: str | None = None, name: str | None = None) -> str:
    return api_path(NAD_GROUP_VERSION, "network-attachment-definitions", namespace, name)


def profile_path(name: str | None = None, subresource: str | None = None) -> str:
    """A NetworkProfile (cluster-scoped); `subresource="status"` is where its status is written."""
    return api_path(f"{PROFILE_GROUP}/{PROFILE_VERSION}", PROFILE_PLURAL, None, name, subresource)


def crd_path(name: str | None = None) -> str:
    """A CustomResourceDefinition; its name is `<plural>.<group>`."""
    return api_path(APIEXTENSIONS_V1, "customresourcedefinitions", None, name)


def profile_crd_path() -> str:
    """The NetworkProfile CRD: deleting it is how netshift is uninstalled."""
    return crd_path(f"{PROFILE_PLURAL}.{PROFILE_GROUP}")


def namespace_path(name: str | None = None) -> str:
    return api_path("", "namespaces", None, name)


def node_path(name: str | None = None, subresource: str | None = None) -> str:
    return api_path("", "nodes", None, name, subresource)


def configmap_path(namespace: str, name: str | None = None) -> str:
    return api_path("", "configmaps", namespace, name)


def secret_path(namespace: str, name: str | None = None) -> str:
    return api_path("", "secrets", namespace, name)


def service_path(namespace: str, name: str | None = None) -> str:
    return api_path("", "services", namespace, name)


def event_path(namespace: str) -> str:
    return api_path("", "events", namespace)


def lease_path(namespace: str, name: str | None = None) -> str:
    return api_path(LEASE_GROUP_VERSION, "leases", namespace, name)


def deployment_path(namespace: str, name: str | None = None) -> str:
    return api_path(APPS_V1, "deployments", namespace, name)


def webhook_configuration_path(kind: str, name: str | None = None) -> str:
    """`kind`: "mutating" or "validating"."""
    return api_path(ADMISSION_V1, f"{kind}webhookconfigurations", None, name)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_event(
    kube: Kube,
    obj: Mapping[str, Any],
    reason: str,
    message: str,
    type_: str = "Normal",
    component: str = "netshift",
    at: str | None = None,
    instance: str | None = None,
) -> None:
    """Create a core/v1 Event about `obj` (that happened `at`, default now); failures are
    logged, never raised. `instance` is the reporting instance (default: this host's name);
    the agent passes its node's name, which its admission policy requires."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    stamp = at or now_rfc3339()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'obj')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": component, **({"host": instance} if instance else {})},
        "reportingComponent": component,
        "reportingInstance": instance or os.uname().nodename,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        kube.create(event_path(namespace), event)
    except Exception as err:
        log.warning("could not record event %s on %s: %s", reason, object_key(obj), err)


_EventArgs = tuple[Mapping[str, Any], str, str, str, str]


class EventSender:
    """Records Events from one background thread, off the caller's critical path.

    The queue is bounded (`limit`): when it is full a Normal Event is dropped (logged,
    counted in `dropped`) and a Warning is recorded by the caller itself, so the queue
    never loses a Warning. `flush` waits for what is queued (shutdown, tests).
    """

    def __init__(
        self, kube: Kube, component: str, limit: int = 1000, instance: str | None = None
    ) -> None:
        self.kube = kube
        self.component = component
        self.instance = instance
        self.limit = limit
        self.dropped = 0
        self._queue: collections.deque[_EventArgs] = collections.deque()
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def send(
        self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        args = (obj, reason, message, type_, now_rfc3339())
        with self._cond:
            if len(self._queue) < self.limit:
                self._queue.append(args)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="events", daemon=True)
                    self._thread.start()
                self._cond.notify_all()
                return
            if type_ == "Normal":
                self.dropped += 1
        if type_ == "Normal":
            log.warning("event queue full: dropped %s on %s", reason, object_key(obj))
            return
        self._record(args)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued Event was recorded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _record(self, args: _EventArgs) -> None:
        obj, reason, message, type_, at = args
        record_event(
            self.kube, obj, reason, message, type_, self.component, at=at, instance=self.instance
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                self._cond.wait_for(lambda: bool(self._queue))
                args = self._queue.popleft()
                self._busy = True
            self._record(args)


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)


def has_default_service_account(kube: Kube, namespace: str) -> bool:
    """Pods are refused in a namespace until the controller-manager made its default ServiceAccount."""
    try:
        kube.get(api_path("", "serviceaccounts", namespace, "default"))
        return True
    except ApiError:
        return False
