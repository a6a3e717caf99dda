"""The running operator against a real API server applies the feedback loop's Retune and Fallback requests.

The test writes the status patch the feedback pass writes (``feedback_patch`` on a decision) and
plays the kubelet for the Deployment's pods; the operator writes real versions of real ONNX Runtime
artifacts into the model repository and patches the Triton Deployment, across a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from honed.controller import names, operator_metrics
from honed.controller.feedback_loop import feedback_patch
from honed.controller.kube import DEPLOYMENTS, EVENTS, OPTIMIZED_MODELS, KubeClient
from honed.controller.settings import HonedSettings
from honed.controller.stored_repository import write_repository
from honed.feedback import Evaluation, Fallback, FeedbackState, Retune
from honed.serving.config import parse_config
from honed.serving.repository import CONFIG_FILE, DEPLOYMENT_FILE
from tests.fixtures.reports import candidate
from tests.integration.operator.harness import (
    StartOperator,
    eventually,
    finish_job,
    get_om,
    manifest,
    roll_out,
)
from tests.integration.operator.test_operator_flow import current_jobs, model_spec, phase, write_output

pytestmark = pytest.mark.slow
NAME = "tuned"


async def decide(api: KubeClient, namespace: str, decision: Retune | Fallback) -> None:
    """What the feedback pass writes for ``decision`` (its status patch), written the same way."""
    body = await get_om(api, namespace, NAME)
    evaluation = Evaluation(decision=decision, state=FeedbackState(), conditions=[], events=[])
    patch = feedback_patch(body, evaluation, datetime.now(UTC))
    assert "serving" in patch.status
    await api.patch(OPTIMIZED_MODELS, namespace, NAME, {"status": patch.status}, subresource="status")


async def winner_at(api: KubeClient, namespace: str, version: int) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body = await get_om(api, namespace, NAME)
        return body if (body["status"].get("winner") or {}).get("version") == version else None

    return await eventually(reached, what=f"winner version {version}")


def record(model_dir: Path, version: int) -> str:
    return (model_dir / str(version) / DEPLOYMENT_FILE).read_text()


async def test_retune_and_fallback_are_served_as_new_versions_across_a_restart(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    operator = await start_operator(write_repository)
    await api.create(OPTIMIZED_MODELS, namespace, manifest(NAME, model_spec(settings)))
    jobs = await current_jobs(api, namespace, NAME, 2)
    write_output(jobs["cpu"], [candidate("onnx-int8.onnxruntime", p50=2.0)])
    write_output(jobs["gpu"], [candidate("onnx-fp16.onnxruntime", p50=0.8)], device="cuda")
    await finish_job(api, jobs["cpu"])
    await finish_job(api, jobs["gpu"])
    await phase(api, namespace, NAME, "Deploying")
    await roll_out(api, namespace, f"{NAME}-triton")
    body = await phase(api, namespace, NAME, "Serving")
    assert body["status"]["winner"]["config"]["responseCache"] is True
    model_dir = Path(settings.artifact_store.removeprefix("file://")) / namespace / NAME / "repository" / NAME
    assert parse_config((model_dir / CONFIG_FILE).read_text()).response_cache.enable is True

    # Retune: the cache goes off in a new version of the same artifact; version 1 serves meanwhile.
    await decide(api, namespace, Retune(response_cache=False, reason="hit ratio 0.00 < 0.1"))
    body = await winner_at(api, namespace, 2)
    winner = body["status"]["winner"]
    assert (winner["name"], winner["pool"]) == ("onnx-fp16.onnxruntime", "gpu")
    assert winner["overrides"] == {"responseCache": False}
    assert body["status"]["endpoint"]["version"] == 1
    assert '"candidate": "onnx-fp16.onnxruntime"' in record(model_dir, 2)
    assert parse_config((model_dir / CONFIG_FILE).read_text()).response_cache.enable is False
    deployment = await api.get(DEPLOYMENTS, namespace, f"{NAME}-triton")
    assert deployment is not None
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][names.MODEL_VERSION] == "2"
    assert not any(a.startswith("--cache-config") for a in template["spec"]["containers"][0]["args"])
    await roll_out(api, namespace, f"{NAME}-triton")

    async def serves(version: int) -> bool:
        status = (await get_om(api, namespace, NAME))["status"]
        return bool(status.get("phase") == "Serving" and status["endpoint"]["version"] == version)

    await eventually(lambda: serves(2), what="version 2 serving")

    # A restarted operator re-derives the same desired version: nothing new is written.
    await operator.close()
    passes = operator_metrics.REGISTRY.get_sample_value("honed_reconciles_total", {"result": "ok"}) or 0
    await start_operator(write_repository)

    async def passes_done() -> bool:
        done = operator_metrics.REGISTRY.get_sample_value("honed_reconciles_total", {"result": "ok"}) or 0
        return done >= passes + 1

    # Its first pass (kopf's resume); later ones wait for a change or the resync.
    await eventually(passes_done, what="the new operator's first pass")
    assert sorted(p.name for p in model_dir.iterdir() if p.name.isdigit()) == ["1", "2"]
    status = (await get_om(api, namespace, NAME))["status"]
    assert status["winner"]["version"] == 2 and status["serving"]["overrides"] == {"responseCache": False}

    # Fallback: the runner-up on the other pool becomes the winner as version 3.
    await decide(api, namespace, Fallback(candidate="onnx-int8.onnxruntime", pool="cpu", reason="p99 120 ms > 90 ms"))
    body = await winner_at(api, namespace, 3)
    winner = body["status"]["winner"]
    assert (winner["name"], winner["pool"], winner["reason"]) == ("onnx-int8.onnxruntime", "cpu", "FallbackFromSLO")
    assert winner["fallbackFrom"] == "onnx-fp16.onnxruntime on gpu" and "overrides" not in winner
    assert "serving" not in body["status"]
    optimized = next(c for c in body["status"]["conditions"] if c["type"] == "Optimized")
    assert optimized["reason"] == "FallbackFromSLO"
    assert '"candidate": "onnx-int8.onnxruntime"' in record(model_dir, 3)
    assert parse_config((model_dir / CONFIG_FILE).read_text()).response_cache.enable is True
    deployment = await api.get(DEPLOYMENTS, namespace, f"{NAME}-triton")
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["labels"][names.POOL] == "cpu"
    await roll_out(api, namespace, f"{NAME}-triton")
    await eventually(lambda: serves(3), what="version 3 serving")
    wanted = {("Normal", "Retuned"), ("Warning", "FallbackFromSLO")}

    async def posted() -> bool:
        # Events are posted after the status patch that caused them, so they may trail it a little.
        return wanted <= {(e["type"], e["reason"]) for e in await api.list(EVENTS, namespace, {})}

    await eventually(posted, what=f"Events {sorted(wanted)}")
