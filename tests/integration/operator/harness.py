"""Harness for the operator against a real API server (envtest: no scheduler, no kubelet).

The Job, ReplicaSet and Deployment controllers are real: they create Pods, which stay Pending.
Tests play the kubelet on those Pods (a terminated container, a ready one) and the controllers
then finish the Job or count the Deployment's replicas ready themselves.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import kopf
import pytest
import pytest_asyncio

from honed.artifacts import ArtifactStore
from honed.controller import handlers
from honed.controller.apply import RepositoryWriter
from honed.controller.kube import DEPLOYMENTS, JOBS, OPTIMIZED_MODELS, PODS, KubeClient
from honed.controller.settings import HonedSettings, Pool
from tests.fixtures.k8s import kubeconfig_login

Login = Callable[[], kopf.ConnectionInfo]


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
        resync_interval_s=300.0,
        triton_image="nvcr.io/nvidia/tritonserver:test",
    )


@pytest.fixture()
def login(k8s_kubeconfig: Path) -> Login:
    return kubeconfig_login(k8s_kubeconfig)


@pytest_asyncio.fixture()
async def api(login: Login) -> AsyncIterator[KubeClient]:
    """A client for the test itself (creating resources, playing the kubelet)."""
    client = KubeClient(login)
    yield client
    await client.close()


class RunningOperator:
    """The operator in its own thread and event loop, as in production.

    kopf cancels every task created in its loop after it started when it stops, which would
    include the test's own tasks; a separate loop keeps the two apart.
    """

    def __init__(
        self,
        login: Login,
        namespace: str,
        settings: HonedSettings,
        writer: RepositoryWriter,
    ) -> None:
        self.operator = handlers.Operator(settings, login, writer, namespaces=[namespace])
        self.namespace = namespace
        self.stop = threading.Event()
        self.error: BaseException | None = None
        kopf_settings = kopf.OperatorSettings()
        handlers.configure(kopf_settings, settings)
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
                    namespaces=[self.namespace],
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
async def start_operator(login: Login, namespace: str, settings: HonedSettings) -> AsyncIterator[StartOperator]:
    running: list[RunningOperator] = []

    async def start(writer: RepositoryWriter) -> RunningOperator:
        operator = RunningOperator(login, namespace, settings, writer)
        running.append(operator)
        return operator

    yield start
    for operator in running:
        if operator.running:
            await operator.close()


T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: T | None = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last saw {last!r}")


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An OptimizedModel; the namespace comes from the request's path."""
    return {"apiVersion": "honed.dev/v1alpha1", "kind": "OptimizedModel", "metadata": {"name": name}, "spec": spec}


async def get_om(api: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    body = await api.get(OPTIMIZED_MODELS, namespace, name)
    assert body is not None
    return body


async def condition(api: KubeClient, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    body = await get_om(api, namespace, name)
    return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


async def jobs_of(api: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    return await api.list(JOBS, namespace, {"honed.dev/optimizedmodel": name})


def out_dir(job: dict[str, Any]) -> Path:
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    out = command[command.index("--out") + 1]
    assert out.startswith("file://")
    return Path(out.removeprefix("file://"))


def stamp() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def job_finished(job: dict[str, Any]) -> str | None:
    """ "Complete" or "Failed" once the Job controller has decided, else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


async def terminate_pod(api: KubeClient, pod: dict[str, Any], *, exit_code: int, message: str = "") -> None:
    """Play the kubelet: the pod's container ran and exited with ``exit_code``."""
    now = stamp()
    container = pod["spec"]["containers"][0]
    terminated = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "message": message,
        "startedAt": now,
        "finishedAt": now,
    }
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "startTime": now,
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }
    meta = pod["metadata"]
    await api.patch(PODS, meta["namespace"], meta["name"], {"status": status}, subresource="status")


async def run_job_pods(api: KubeClient, job: dict[str, Any], *, exit_code: int, message: str = "") -> str:
    """Every pod the Job controller starts for ``job`` exits with ``exit_code`` until it decides.

    One pod for a success or a failure its podFailurePolicy ends at once; a retried failure
    (backoffLimit) takes one pod per attempt, as the controller creates them.
    """
    meta = job["metadata"]
    namespace, name = meta["namespace"], meta["name"]

    async def decided() -> str | None:
        current = await api.get(JOBS, namespace, name)
        assert current is not None, f"Job {name} is gone"
        finished = job_finished(current)
        if finished is None:
            for pod in await api.list(PODS, namespace, {"job-name": name}):
                if (pod.get("status") or {}).get("phase") in (None, "Pending", "Running"):
                    await terminate_pod(api, pod, exit_code=exit_code, message=message)
        return finished

    return str(await eventually(decided, what=f"Job {name} finished by its controller"))


async def finish_job(api: KubeClient, job: dict[str, Any], *, message: str = "") -> None:
    """The Job's pod succeeds with ``message`` as its termination message; the Job completes."""
    assert await run_job_pods(api, job, exit_code=0, message=message) == "Complete"


async def fail_job(api: KubeClient, job: dict[str, Any], *, exit_code: int, pod_message: str) -> None:
    """The Job's pods fail with ``exit_code``; the Job controller fails the Job (its own reason)."""
    assert await run_job_pods(api, job, exit_code=exit_code, message=pod_message) == "Failed"


async def make_ready(api: KubeClient, pod: dict[str, Any]) -> None:
    """Play the kubelet: the pod runs and every container passes its readiness probe."""
    now = stamp()
    conditions = [
        {"type": kind, "status": "True", "lastTransitionTime": now}
        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    statuses = [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        for c in pod["spec"]["containers"]
    ]
    status = {"phase": "Running", "startTime": now, "conditions": conditions, "containerStatuses": statuses}
    meta = pod["metadata"]
    await api.patch(PODS, meta["namespace"], meta["name"], {"status": status}, subresource="status")


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def roll_out(api: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """Every pod the ReplicaSet controller creates for the Deployment becomes ready, until the
    Deployment controller reports every replica of the latest spec updated and ready."""

    async def rolled_out() -> dict[str, Any] | None:
        deployment = await api.get(DEPLOYMENTS, namespace, name)
        assert deployment is not None, f"Deployment {name} is gone"
        for pod in await api.list(PODS, namespace, deployment["spec"]["selector"]["matchLabels"]):
            if not pod_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                await make_ready(api, pod)
        replicas = deployment["spec"]["replicas"]
        status = deployment.get("status") or {}
        done = (
            status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
            and status.get("replicas") == replicas
            and status.get("updatedReplicas") == replicas
            and status.get("readyReplicas") == replicas
            and status.get("availableReplicas") == replicas
        )
        return deployment if done else None

    return await eventually(rolled_out, what=f"Deployment {name} rolled out by its controllers")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def store_of(settings: HonedSettings) -> ArtifactStore:
    return ArtifactStore(settings.artifact_store)
