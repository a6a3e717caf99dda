"""The only place the operator talks to the Kubernetes API (besides kopf's own watching).

Built on the official ``kubernetes`` client, logged in with the same ``kopf.ConnectionInfo`` kopf
uses (kopf's documented piggybacking: one login for both, redone after a 401). A 409 on create
and a 404 on delete count as success (someone, maybe our previous life, already did it); updates
are JSON merge patches; lists use the server's label selector.

Requests go through the client's ``ApiClient`` with the resource's own path and come back as the
API's JSON (as the client's own ``CustomObjectsApi`` does): the reconcile code works on plain
dicts, and the typed models would drop fields they do not know and turn timestamps into datetimes.
The client is synchronous, so every call runs in a worker thread and the event loop stays free.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kopf
import urllib3
from kubernetes import client as k8s
from kubernetes.watch.watch import iter_resp_lines

from honed.controller import operator_metrics

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "honed-operator"
# A watch that heard nothing (not even a bookmark) this long after the server should have ended it died silently.
WATCH_GRACE_S = 60.0


@dataclass(frozen=True)
class Resource:
    """A kind the operator reads or writes, and the plural that names it in URL paths."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """The resource's URL path; ``namespace=None`` is the collection across all namespaces."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/{self.plural}" if namespace is None else f"{base}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


JOBS = Resource("batch/v1", "Job", "jobs")
PODS = Resource("v1", "Pod", "pods")
CONFIGMAPS = Resource("v1", "ConfigMap", "configmaps")
SERVICES = Resource("v1", "Service", "services")
EVENTS = Resource("v1", "Event", "events")
DEPLOYMENTS = Resource("apps/v1", "Deployment", "deployments")
OPTIMIZED_MODELS = Resource("honed.dev/v1alpha1", "OptimizedModel", "optimizedmodels")
RESOURCES = {
    (r.api_version, r.kind): r for r in (JOBS, PODS, CONFIGMAPS, SERVICES, EVENTS, DEPLOYMENTS, OPTIMIZED_MODELS)
}


def resource_of(api_version: str, kind: str) -> Resource:
    """The ``Resource`` of a manifest's apiVersion and kind; KeyError for a kind honed does not write."""
    return RESOURCES[(api_version, kind)]


class KubeError(Exception):
    """A request the API server refused (``status`` is its HTTP status; 0 when it did not answer)."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


_METHODS = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "patch": "PATCH", "delete": "DELETE"}
# Objects per page of a LIST: a cluster-wide list of 1,000 models' pods stays a few small responses.
LIST_PAGE = 500


class RateLimiter:
    """client-go's token bucket: ``qps`` requests a second on average, bursts of up to ``burst``.

    A request reserves a token and waits until it is due; the tokens go negative while requests
    queue, so waiters are served in order. Thread-safe: the cache's watch threads take tokens too.
    """

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps


class Expired(Exception):
    """The resourceVersion a watch or a list continued from is gone (HTTP 410): list again."""


class WatchStream:
    """One watch request's events as dicts; ``interrupt()`` from another thread ends the iteration."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield each event (BOOKMARKs included); raise Expired on a 410 ERROR, KubeError on another."""
        try:
            for line in iter_resp_lines(self._response):
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise Expired(status.get("message") or "resourceVersion too old")
                    raise KubeError(int(status.get("code") or 0), "GET", "watch", str(status.get("message")))
                yield event
        finally:
            self._response.close()  # in the reading thread: closing holds the buffer's lock

    def interrupt(self) -> None:
        """End a read blocked on the stream at once, from another thread.

        Closing the response from another thread would wait for the reader's lock (up to the
        watch's timeout); shutting the socket down does not.
        """
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _message(exc: k8s.ApiException) -> str:
    """The Status message of a refusal (its ``message`` field), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or exc.body or "no message")


def _pem(data: str | bytes) -> bytes:
    """PEM bytes from kubeconfig's ``*-data`` fields (base64 of PEM) or from PEM itself (login handlers)."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        return raw


def _path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> str | None:
    return None if path is None else os.fsdecode(path)


class KubeClient:
    """Async facade over the kubernetes client; ``login`` returns fresh credentials (called again after a 401).

    ``timeout_s`` bounds each request (a watch reads for longer); ``qps`` and ``burst`` limit the
    request rate as client-go does (``RateLimiter``), the cache's blocking calls included.
    """

    def __init__(
        self,
        login: Callable[[], kopf.ConnectionInfo],
        *,
        timeout_s: float = 30.0,
        qps: float = 100.0,
        burst: int = 200,
    ) -> None:
        self._login = login
        self._timeout = timeout_s
        self.limiter = RateLimiter(qps, burst)
        # Called with every object the server returns from a create or a patch: the cache keeps
        # the operator's own writes without waiting for their watch events.
        self.on_write: Callable[[Resource, dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self._api: k8s.ApiClient | None = None
        self._files: str | None = None  # a private directory for certificate data given inline

    def _configuration(self, info: kopf.ConnectionInfo) -> k8s.Configuration:
        config = k8s.Configuration(host=info.server.rstrip("/"))
        config.verify_ssl = not info.insecure
        # This client version takes certificates (the CA's too) only from files.
        config.ssl_ca_cert = _path(info.ca_path) or self._file("ca.crt", info.ca_data)
        config.cert_file = _path(info.certificate_path) or self._file("client.crt", info.certificate_data)
        config.key_file = _path(info.private_key_path) or self._file("client.key", info.private_key_data)
        if info.token:
            config.api_key = {"BearerToken": info.token}
            config.api_key_prefix = {"BearerToken": info.scheme or "Bearer"}
        elif info.username and info.password:
            basic = urllib3.util.make_headers(basic_auth=f"{info.username}:{info.password}")
            config.api_key = {"BearerToken": basic["authorization"]}
        if info.proxy_url or not info.trust_env:
            # As kopf's own connection: the login's proxy, and the environment's only when trusted.
            config.proxy = info.proxy_url
        return config

    def _file(self, name: str, data: str | bytes | None) -> str | None:
        if not data:
            return None
        if self._files is None:
            self._files = tempfile.mkdtemp(prefix="honed-kube-")  # mode 0700
        path = os.path.join(self._files, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(_pem(data))
        return path

    def _client(self) -> k8s.ApiClient:
        with self._lock:
            if self._api is None:
                api = k8s.ApiClient(self._configuration(self._login()))
                api.user_agent = USER_AGENT
                self._api = api
            return self._api

    def _logout(self, stale: k8s.ApiClient) -> None:
        with self._lock:
            if self._api is stale:
                self._api = None
        stale.close()

    async def close(self) -> None:
        """Close the connection pool and remove the certificate files written for inline data."""
        with self._lock:
            api, self._api = self._api, None
            files, self._files = self._files, None
        if api is not None:
            await asyncio.to_thread(api.close)
        if files is not None:
            shutil.rmtree(files, ignore_errors=True)

    def _call(
        self,
        verb: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        content_type: str,
        *,
        resource: str = "",
        stream_timeout_s: float | None = None,
    ) -> Any:
        """One request, in a worker thread; a 401 logs in again once (an expired or rotated token).

        With ``stream_timeout_s`` the open response is returned unread (a watch), and the read
        timeout is that long instead of the usual request timeout.
        """
        method = _METHODS[verb]
        for attempt in (1, 2):
            api = self._client()
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = content_type
            try:
                # The raw body, parsed here: the client's own deserializer would turn timestamps
                # into datetimes and drop fields its models do not know.
                response = api.call_api(
                    path,
                    method,
                    query_params=query or None,
                    header_params=headers,
                    body=body,
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _preload_content=False,
                    _request_timeout=self._timeout if stream_timeout_s is None else (self._timeout, stream_timeout_s),
                )
                operator_metrics.API_REQUESTS.labels(verb=verb, resource=resource, code=str(response.status)).inc()
                if stream_timeout_s is not None:
                    return response
                raw = response.data
                return json.loads(raw) if raw else None
            except k8s.ApiException as exc:
                operator_metrics.API_REQUESTS.labels(verb=verb, resource=resource, code=str(exc.status or 0)).inc()
                if exc.status == 401 and attempt == 1:
                    log.info("the API server refused our credentials (401); logging in again")
                    self._logout(api)
                    continue
                if exc.status == 403:
                    # RBAC says "User ... cannot <verb> resource ..."; a namespace being deleted
                    # refuses new objects with a 403 too, which no role change would fix.
                    hint = "; grant it in the operator's RBAC role" if " cannot " in _message(exc) else ""
                    log.error("forbidden: the operator may not %s %s: %s%s", verb, path, _message(exc), hint)
                raise KubeError(int(exc.status or 0), method, path, _message(exc)) from exc
            except urllib3.exceptions.HTTPError as exc:
                operator_metrics.API_REQUESTS.labels(verb=verb, resource=resource, code="0").inc()
                raise KubeError(0, method, path, f"no answer from the API server: {exc}") from exc
        raise AssertionError("unreachable")  # the loop returns, raises, or retries once

    async def _request(
        self,
        verb: str,
        path: str,
        *,
        resource: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        await self.charge()
        return await asyncio.to_thread(self._call, verb, path, query or [], body, content_type, resource=resource)

    async def charge(self) -> None:
        """Take a token, waiting while the bucket is empty.

        Before each request, and for a request kopf sent on the operator's behalf (its finalizer),
        so that the operator as a whole keeps to HONED_API_QPS.
        """
        delay = self.limiter.reserve()
        if delay > 0:
            operator_metrics.API_THROTTLED_SECONDS.inc(delay)
            await asyncio.sleep(delay)

    def _blocking(self, verb: str, path: str, query: list[tuple[str, str]], *, resource: str, **kw: Any) -> Any:
        """A request from a thread of its own (the cache's watchers), under the same rate limit."""
        delay = self.limiter.reserve()
        if delay > 0:
            operator_metrics.API_THROTTLED_SECONDS.inc(delay)
            time.sleep(delay)
        return self._call(verb, path, query, None, "application/json", resource=resource, **kw)

    def list_all(
        self, resource: Resource, namespace: str | None, *, labels: str = "", fields: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """Every matching object and the list's resourceVersion, in pages (blocking: for a thread)."""
        items: list[dict[str, Any]] = []
        query = [("limit", str(LIST_PAGE))]
        query += [("labelSelector", labels)] if labels else []
        query += [("fieldSelector", fields)] if fields else []
        token = ""
        while True:
            page = query + ([("continue", token)] if token else [])
            try:
                payload = self._blocking("list", resource.path(namespace), page, resource=resource.plural)
            except KubeError as exc:
                if exc.status == 410:
                    raise Expired(str(exc)) from exc
                raise
            items.extend(dict(item) for item in payload.get("items") or [])
            meta = payload.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_s: int,
        labels: str = "",
        fields: str = "",
    ) -> WatchStream:
        """Changes after ``resource_version``; the server ends the request after ``timeout_s``."""
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
        ]
        query += [("labelSelector", labels)] if labels else []
        query += [("fieldSelector", fields)] if fields else []
        response = self._blocking(
            "watch",
            resource.path(namespace),
            query,
            resource=resource.plural,
            stream_timeout_s=timeout_s + WATCH_GRACE_S,
        )
        return WatchStream(response)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server has it now; None when it does not exist (404)."""
        try:
            return dict(await self._request("get", resource.path(namespace, name), resource=resource.plural))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, resource: Resource, namespace: str, labels: dict[str, str], *, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects matching ``labels`` (and ``field_selector``, e.g. an Event's involvedObject), server-side."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        query = [("labelSelector", selector)] if selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        try:
            payload = await self._request("list", resource.path(namespace), resource=resource.plural, query=query)
        except KubeError as exc:
            if exc.status == 404:  # the kind is not served (e.g. the CRD is not installed yet)
                return []
            raise
        items = payload.get("items") if isinstance(payload, dict) else None
        return [dict(item) for item in items or []]

    async def create(
        self, resource: Resource, namespace: str, body: dict[str, Any], *, field_validation: str | None = None
    ) -> bool:
        """Create ``body``; False when it already exists (409), which callers treat as done.

        ``field_validation="Strict"`` (kubectl's default) refuses unknown fields instead of dropping them.
        """
        query = [("fieldValidation", field_validation)] if field_validation else []
        try:
            created = await self._request(
                "create", resource.path(namespace), resource=resource.plural, query=query, body=body
            )
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        self._written(resource, created)
        return True

    def _written(self, resource: Resource, obj: Any) -> None:
        if self.on_write is not None and isinstance(obj, dict) and obj.get("metadata"):
            self.on_write(resource, obj)

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """JSON merge patch; None when the object is gone (404) or changed under us (409).

        A merge patch only conflicts when it carries a resourceVersion that is no longer current;
        the level-based loop then recomputes the patch from the fresh object on its next pass, so
        a conflict is logged and left to that pass instead of failing this one.
        """
        path = resource.path(namespace, name, subresource)
        try:
            label = resource.plural if subresource is None else f"{resource.plural}/{subresource}"
            payload = await self._request("patch", path, resource=label, body=body, content_type=MERGE_PATCH)
        except KubeError as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                log.warning("%s; the next pass patches the fresh object", exc)
                return None
            raise
        self._written(resource, payload)
        return dict(payload) if isinstance(payload, dict) else {}

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job takes its pods along); False when already gone."""
        query = [("propagationPolicy", "Background")]
        try:
            await self._request("delete", resource.path(namespace, name), resource=resource.plural, query=query)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True
