"""Harness for the operator against kmock (an emulated Kubernetes API); tests play the kubelet.

kmock keeps objects, merges patches and streams watch events, but assigns no uid,
resourceVersion or generation; ``Cluster`` adds those so owner references, kopf's bookkeeping
and rollout checks (observedGeneration >= generation) behave as they do on a real API server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import kmock
import kopf
import pytest
import pytest_asyncio
from kmock._internal import enums

from honed.artifacts import ArtifactStore
from honed.controller import handlers
from honed.controller.apply import RepositoryWriter
from honed.controller.kube import DEPLOYMENTS, JOBS, OPTIMIZED_MODELS, PODS, KubeClient
from honed.settings import HonedSettings, Pool

NAMESPACE = "ml"


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    """kmock plus the metadata a real API server maintains."""

    async def _handle(self, request: kmock.Request) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", datetime.now(UTC).isoformat().replace("+00:00", "Z"))
                meta["resourceVersion"] = "1"
                meta["generation"] = 1
            elif request.action == enums.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    current = self.objects[key].get("metadata", {})
                    meta["resourceVersion"] = str(int(current.get("resourceVersion") or 0) + 1)
                    if request.subresource is None and "spec" in data:
                        meta["generation"] = int(current.get("generation") or 0) + 1
        return await super()._handle(request)


RESOURCES = {
    "honed.dev/v1alpha1/optimizedmodels": ("OptimizedModel", True, {"status"}),
    "batch/v1/jobs": ("Job", True, {"status"}),
    "apps/v1/deployments": ("Deployment", True, {"status"}),
    "v1/pods": ("Pod", True, {"status"}),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/services": ("Service", True, set()),
    "v1/events": ("Event", True, set()),
    "v1/namespaces": ("Namespace", False, set()),
}


@pytest_asyncio.fixture()
async def cluster() -> AsyncIterator[Cluster]:
    emulator = Cluster()
    for key, (kind, namespaced, subresources) in RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            verbs={"list", "watch", "get", "create", "patch", "delete"},
            subresources=subresources,
        )
    async with emulator, kmock.Server(emulator):
        yield emulator


def pools() -> list[Pool]:
    return [
        Pool(name="cpu", image="honed/optimizer-cpu:test", device="cpu", price_per_hour=0.5),
        Pool(name="gpu", image="honed/optimizer-gpu:test", device="cuda", price_per_hour=3.0),
    ]


@pytest.fixture()
def settings(tmp_path: Path) -> HonedSettings:
    return HonedSettings(
        pools=pools(),
        artifact_store=f"file://{tmp_path}/store",
        reconcile_interval_s=0.5,
        triton_image="nvcr.io/nvidia/tritonserver:test",
    )


@pytest_asyncio.fixture()
async def api(cluster: Cluster) -> AsyncIterator[KubeClient]:
    """A client for the test itself (creating resources, playing the kubelet)."""
    client = KubeClient(lambda: kopf.ConnectionInfo(server=str(cluster.url)))
    yield client
    await client.close()


class RunningOperator:
    """The operator in its own thread and event loop, as in production.

    kopf cancels every task created in its loop after it started when it stops, which would
    include the test's own tasks; a separate loop keeps the two apart (kmock serves over TCP).
    """

    def __init__(self, cluster: Cluster, settings: HonedSettings, writer: RepositoryWriter) -> None:
        self.operator = handlers.Operator(settings, lambda: kopf.ConnectionInfo(server=str(cluster.url)), writer)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        kopf_settings = kopf.OperatorSettings()
        handlers.configure(kopf_settings)
        kopf_settings.scanning.disabled = True
        kopf_settings.watching.reconnect_backoff = 0.1
        self.kopf_settings = kopf_settings
        self.thread = threading.Thread(target=self._run, name="honed-operator", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=handlers.build_registry(self.operator),
                    settings=self.kopf_settings,
                    namespaces=[NAMESPACE],
                    standalone=True,
                    stop_flag=self.stop,
                )
            )
        except BaseException as exc:  # reported by close()
            self.error = exc

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    async def close(self) -> None:
        self.stop.set()
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive(), "the operator did not stop"
        if self.error is not None:
            raise self.error


StartOperator = Callable[..., Awaitable[RunningOperator]]


@pytest_asyncio.fixture()
async def start_operator(cluster: Cluster, settings: HonedSettings) -> AsyncIterator[StartOperator]:
    running: list[RunningOperator] = []

    async def start(writer: RepositoryWriter) -> RunningOperator:
        operator = RunningOperator(cluster, settings, writer)
        running.append(operator)
        return operator

    yield start
    for operator in running:
        if operator.running:
            await operator.close()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last saw {last!r}")


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "honed.dev/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


async def get_om(api: KubeClient, name: str) -> dict[str, Any]:
    body = await api.get(OPTIMIZED_MODELS, NAMESPACE, name)
    assert body is not None
    return body


async def condition(api: KubeClient, name: str, type_: str) -> dict[str, Any] | None:
    body = await get_om(api, name)
    return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


async def jobs_of(api: KubeClient, name: str) -> list[dict[str, Any]]:
    return await api.list(JOBS, NAMESPACE, {"honed.dev/optimizedmodel": name})


def out_dir(job: dict[str, Any]) -> Path:
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    out = command[command.index("--out") + 1]
    assert out.startswith("file://")
    return Path(out.removeprefix("file://"))


async def finish_job(api: KubeClient, job: dict[str, Any], *, message: str = "") -> None:
    """Play the Job controller: mark the Job complete (its report must already be written)."""
    name = job["metadata"]["name"]
    await create_pod(api, job, terminated={"exitCode": 0, "reason": "Completed", "message": message})
    status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    await api.patch(JOBS, NAMESPACE, name, {"status": status}, subresource="status")


async def fail_job(api: KubeClient, job: dict[str, Any], *, reason: str, message: str, pod_message: str) -> None:
    await create_pod(api, job, terminated={"exitCode": 1, "reason": "Error", "message": pod_message})
    status = {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}],
    }
    await api.patch(JOBS, NAMESPACE, job["metadata"]["name"], {"status": status}, subresource="status")


async def create_pod(api: KubeClient, job: dict[str, Any], *, terminated: dict[str, Any]) -> None:
    name = job["metadata"]["name"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-x1", "namespace": NAMESPACE, "labels": {"job-name": name}},
        "status": {"containerStatuses": [{"name": "optimizer", "state": {"terminated": terminated}}]},
    }
    await api.create(PODS, NAMESPACE, pod)


async def roll_out(api: KubeClient, name: str) -> dict[str, Any]:
    """Play the Deployment controller and kubelet: every replica of the latest spec is ready."""
    deployment = await api.get(DEPLOYMENTS, NAMESPACE, name)
    assert deployment is not None
    replicas = deployment["spec"]["replicas"]
    status = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    await api.patch(DEPLOYMENTS, NAMESPACE, name, {"status": status}, subresource="status")
    return deployment


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def store_of(settings: HonedSettings) -> ArtifactStore:
    return ArtifactStore(settings.artifact_store)
