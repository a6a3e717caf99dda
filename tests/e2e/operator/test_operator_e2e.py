"""End to end: an OptimizedModel on two pools becomes a Triton endpoint answering with the winner.

The API server and its controllers are real (envtest); a local kubelet runs the pods. The Jobs
run the real `honed optimize` on a real ONNX model, the operator selects across the two pools'
real reports, writes the real repository, and a real Triton serves it; the answer is checked
against the winner's own runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from honed.artifacts import ArtifactStore
from honed.controller.kube import OPTIMIZED_MODELS, KubeClient
from honed.controller.settings import HonedSettings, Pool
from honed.controller.stored_repository import write_repository
from honed.optimizer.artifact import load_runner
from tests.e2e.operator.kubelet import Kubelet
from tests.fixtures.serving_artifacts import FEATURES, mlp_onnx
from tests.integration.operator.harness import StartOperator, eventually, get_om, manifest

# A node, images and a whole optimization: the test waits up to 300 s for Serving after its setup.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture()
def settings(tmp_path: Path) -> HonedSettings:
    # Two pools on this one machine; the second is priced higher, so cost favours the first
    # unless its measured throughput is far lower.
    return HonedSettings(
        pools=[
            Pool(name="cpu-small", image="honed/optimizer-cpu:e2e", device="cpu", price_per_hour=0.2),
            Pool(name="cpu-large", image="honed/optimizer-cpu:e2e", device="cpu", price_per_hour=0.9),
        ],
        artifact_store=f"file://{tmp_path}/store",
        resync_interval_s=300.0,
        triton_packaging="runtime",  # the local Triton has only the python backend
    )


async def test_optimized_model_reaches_ready_and_serves_the_winner(
    api: KubeClient,
    namespace: str,
    start_operator: StartOperator,
    settings: HonedSettings,
    tmp_path: Path,
    start_triton: Any,
) -> None:
    model = mlp_onnx(tmp_path / "mlp.onnx", seed=3)
    spec = {
        "model": {"uri": f"file://{model}"},
        "validation": {"metric": "cosine", "maxMetricDrop": 0.01},
        "search": {
            "objective": "cost",
            "batchSizes": [1, 8],
            "precisions": ["fp32", "int8"],
            "backends": ["onnxruntime"],
            "timeBudget": "2m",
        },
        "targets": [{"pool": "cpu-small"}, {"pool": "cpu-large"}],
        "serving": {"replicas": 1},
    }
    await start_operator(write_repository)
    kubelet = Kubelet(api, namespace, tmp_path / "pods", start_triton)
    (tmp_path / "pods").mkdir()
    playing = asyncio.create_task(kubelet.run())
    try:
        await api.create(OPTIMIZED_MODELS, namespace, manifest("mlp", spec))

        async def ready() -> dict[str, Any] | None:
            if playing.done():
                playing.result()  # a failing kubelet fails the test with its own error
            body = await get_om(api, namespace, "mlp")
            status = body.get("status", {})
            ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            if status.get("phase") == "Failed":
                pytest.fail(f"the resource failed: {status}; job logs: {kubelet.job_logs}")
            return body if status.get("phase") == "Serving" and ready.get("status") == "True" else None

        body = await eventually(ready, timeout=300, what="phase Serving with Ready=True")
    finally:
        playing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await playing

    status = body["status"]
    assert {p["pool"]: p["phase"] for p in status["pools"]} == {
        "cpu-small": "Succeeded",
        "cpu-large": "Succeeded",
    }
    winner = status["winner"]
    assert winner["version"] == 1 and status["endpoint"]["version"] == 1
    assert {c["pool"] for c in status["candidates"]} == {"cpu-small", "cpu-large"}
    best = status["candidates"][0]
    assert best["verdict"] == "winner" and (best["pool"], best["name"]) == (winner["pool"], winner["name"])
    costs = [c["costPerMillion"] for c in status["candidates"] if c["verdict"] in ("winner", "eligible")]
    assert costs == sorted(costs)  # the cost objective ranks by price per million inferences

    # Ask the served model, through Triton, and compare with the winner run by its own runtime.
    assert kubelet.server is not None
    client = triton_http.InferenceServerClient(url=kubelet.server.endpoints.http)
    features = np.random.default_rng(7).standard_normal((3, FEATURES)).astype(np.float32)
    request = triton_http.InferInput("features", list(features.shape), "FP32")
    request.set_data_from_numpy(features)
    answer = client.infer(status["endpoint"]["model"], [request], model_version=str(status["endpoint"]["version"]))
    served = answer.as_numpy("scores")

    artifact = ArtifactStore(winner["artifact"]).local_path()
    assert artifact is not None
    expected = load_runner(artifact).run({"features": features})[0]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
