"""The only place the operator talks to the Kubernetes API (besides kopf's own watching).

A thin aiohttp client over kopf's login result: a 409 on create and a 404 on delete count as
success (someone, maybe our previous life, already did it), updates are JSON merge patches,
lists filter labels on the client too (label selectors are a server-side optimization only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import kopf

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
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
    return RESOURCES[(api_version, kind)]


class KubeError(Exception):
    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def _labels_match(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())


class KubeClient:
    """Async Kubernetes client; ``login`` returns fresh credentials (called again after a 401)."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo], *, timeout_s: float = 30.0) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._server = ""

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self._login()
            self._server = info.server.rstrip("/")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": "honed-operator"},
                timeout=self._timeout,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, path: str, *, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        for attempt in (1, 2):
            session = self._open()
            headers = {"Content-Type": content_type} if body is not None else {}
            async with session.request(method, self._server + path, json=body, headers=headers) as response:
                if response.status == 401 and attempt == 1:
                    await self.close()  # expired token: log in again once
                    continue
                try:
                    payload = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    payload = None
                return response.status, payload
        raise AssertionError("unreachable")  # the loop returns or retries once

    @staticmethod
    def _check(status: int, method: str, path: str, payload: Any) -> None:
        if status >= 400:
            message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
            raise KubeError(status, method, path, message)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        path = resource.path(namespace, name)
        status, payload = await self._request("GET", path)
        if status == 404:
            return None
        self._check(status, "GET", path, payload)
        return dict(payload)

    async def list(self, resource: Resource, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        path = resource.path(namespace) + "?" + urlencode({"labelSelector": selector})
        status, payload = await self._request("GET", path)
        if status == 404:
            return []
        self._check(status, "GET", path, payload)
        items = payload.get("items") or [] if isinstance(payload, dict) else []
        return [item for item in items if _labels_match(item, labels)]

    async def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> bool:
        """Create ``body``; False when it already exists (409), which callers treat as done."""
        path = resource.path(namespace)
        status, payload = await self._request("POST", path, body=body)
        if status == 409:
            return False
        self._check(status, "POST", path, payload)
        return True

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """JSON merge patch; None when the object is gone (404)."""
        path = resource.path(namespace, name, subresource)
        status, payload = await self._request("PATCH", path, body=body, content_type=MERGE_PATCH)
        if status == 404:
            return None
        self._check(status, "PATCH", path, payload)
        return dict(payload) if isinstance(payload, dict) else {}

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job takes its pods along); False when already gone."""
        path = resource.path(namespace, name) + "?" + urlencode({"propagationPolicy": "Background"})
        status, payload = await self._request("DELETE", path)
        if status == 404:
            return False
        self._check(status, "DELETE", path, payload)
        return True
