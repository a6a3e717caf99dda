"""The running operator (kopf) against a real API server: bad input and faults before anything is served."""

from __future__ import annotations

from typing import Any

import pytest

from honed.artifacts import ArtifactStore
from honed.controller.kube import EVENTS, OPTIMIZED_MODELS, KubeClient, KubeError
from honed.controller.reconcile_data import RepositoryWrite
from honed.controller.settings import HonedSettings
from tests.integration.operator.harness import (
    StartOperator,
    condition,
    eventually,
    fail_job,
    get_om,
    jobs_of,
    manifest,
)

pytestmark = pytest.mark.slow


def no_repository(store: ArtifactStore, write: RepositoryWrite, settings: HonedSettings) -> None:
    raise AssertionError("these tests never select a winner, so nothing is written to a repository")


def model_file(settings: HonedSettings) -> str:
    """A model URI that exists (the operator checks file:// URIs before starting Jobs)."""
    path = settings.artifact_store.removeprefix("file://").rsplit("/", 1)[0] + "/model.onnx"
    with open(path, "wb") as handle:
        handle.write(b"not parsed by the operator")
    return f"file://{path}"


async def test_invalid_spec_gets_a_condition_naming_the_field(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    await start_operator(no_repository)
    # What the CRD schema can say, the API server refuses itself, naming the field.
    refused = {"model": {"uri": model_file(settings)}, "search": {"batchSizes": [0]}, "targets": [{"pool": "cpu"}]}
    with pytest.raises(KubeError, match=r"spec.search.batchSizes\[0\]: Invalid value: 0"):
        await api.create(OPTIMIZED_MODELS, namespace, manifest("refused", refused))
    # A 0 in a shape passes the items' minimum of -1; a CEL rule on the list refuses it.
    model = {"uri": model_file(settings), "inputs": [{"name": "x", "shape": [0, 4]}]}
    with pytest.raises(KubeError, match=r"spec.model.inputs\[0\].shape: Invalid value: .*never 0"):
        await api.create(OPTIMIZED_MODELS, namespace, manifest("zero", {"model": model, "targets": [{"pool": "cpu"}]}))
    # What only the operator knows (which backends its pools run) it reports.
    search = {"backends": ["tensorrt"]}
    bad = {"model": {"uri": model_file(settings)}, "search": search, "targets": [{"pool": "cpu"}]}
    await api.create(OPTIMIZED_MODELS, namespace, manifest("bad", bad))
    cond = await eventually(lambda: condition(api, namespace, "bad", "Optimized"), what="the Optimized condition")
    assert (cond["status"], cond["reason"]) == ("False", "NoBackendForPool")
    assert cond["message"].startswith("spec.search.backends: none of tensorrt runs on pool 'cpu'")
    body = await get_om(api, namespace, "bad")
    assert body["status"]["phase"] == "Failed"
    assert body["status"]["observedGeneration"] == 1
    assert await jobs_of(api, namespace, "bad") == []

    async def warned() -> bool:
        events = await api.list(EVENTS, namespace, {})
        return any(e["reason"] == "NoBackendForPool" and e["type"] == "Warning" for e in events)

    await eventually(warned, what="a Warning Event NoBackendForPool")


async def test_unknown_pool_lists_the_known_pools(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    await start_operator(no_repository)
    spec = {"model": {"uri": model_file(settings)}, "targets": [{"pool": "cpu"}, {"pool": "tpu"}]}
    await api.create(OPTIMIZED_MODELS, namespace, manifest("tpu", spec))
    cond = await eventually(lambda: condition(api, namespace, "tpu", "Optimized"), what="the Optimized condition")
    assert cond["reason"] == "UnknownPool"
    assert cond["message"] == "spec.targets[1].pool: unknown pool 'tpu'; known pools: cpu, gpu"
    assert await jobs_of(api, namespace, "tpu") == []


async def test_unreachable_model_uri(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    await start_operator(no_repository)
    spec = {"model": {"uri": "file:///nonexistent/model.onnx"}, "targets": [{"pool": "cpu"}]}
    await api.create(OPTIMIZED_MODELS, namespace, manifest("lost", spec))
    cond = await eventually(lambda: condition(api, namespace, "lost", "Optimized"), what="the Optimized condition")
    assert cond["reason"] == "ModelUnreachable"
    assert cond["message"] == "spec.model.uri: no file at /nonexistent/model.onnx"
    assert await jobs_of(api, namespace, "lost") == []


async def test_every_pool_failing_fails_the_resource_with_each_pods_message(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    await start_operator(no_repository)
    spec = {"model": {"uri": model_file(settings)}, "targets": [{"pool": "cpu"}, {"pool": "gpu"}]}
    await api.create(OPTIMIZED_MODELS, namespace, manifest("doomed", spec))

    async def two_jobs() -> list[dict[str, Any]]:
        found = await jobs_of(api, namespace, "doomed")
        return found if len(found) == 2 else []

    jobs = {j["metadata"]["labels"]["honed.dev/pool"]: j for j in await eventually(two_jobs, what="two Jobs")}
    # Exit code 2 is the engine's "bad input": the podFailurePolicy fails the Job at once.
    await fail_job(
        api, jobs["cpu"], exit_code=2, pod_message="honed optimize: model input 'x' has no shape; pass --input"
    )
    # A crash with no message: retried once, then the backoff limit.
    await fail_job(api, jobs["gpu"], exit_code=137, pod_message="")

    async def failed() -> dict[str, Any] | None:
        body = await get_om(api, namespace, "doomed")
        return body if body.get("status", {}).get("phase") == "Failed" else None

    body = await eventually(failed, what="phase Failed")
    status = body["status"]
    optimized = next(c for c in status["conditions"] if c["type"] == "Optimized")
    assert optimized["reason"] == "AllPoolsFailed"
    assert "cpu: PodFailurePolicy: Container optimizer for pod" in optimized["message"]
    assert "pass --input" in optimized["message"]
    assert "gpu: BackoffLimitExceeded: Job has reached the specified backoff limit" in optimized["message"]
    assert {p["pool"]: p["phase"] for p in status["pools"]} == {"cpu": "Failed", "gpu": "Failed"}
    assert status["lastOptimization"]["outcome"] == "Failed"
    assert "winner" not in status and "endpoint" not in status
