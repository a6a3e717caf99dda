"""Malformed OptimizedModel manifests against the real API server and the running operator.

Each is refused where it is first known to be wrong: by the CRD schema (a 422 whose message
names the field), or by the operator (phase Failed, a reason of its own, a message naming the
field and the fix). Never a crash, never a generic reason. Long names work: children are cut
to 63 characters with a hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from honed.controller.kube import EVENTS, JOBS, OPTIMIZED_MODELS, KubeClient, KubeError
from honed.controller.settings import HonedSettings, Pool
from tests.integration.operator.harness import StartOperator, eventually, get_om, manifest, pools

pytestmark = pytest.mark.slow

GOOD: dict[str, Any] = {"model": {"uri": "s3://models/resnet50/model.onnx"}, "targets": [{"pool": "cpu"}]}


def spec(**parts: Any) -> dict[str, Any]:
    """GOOD with top-level parts replaced, or merged one level down for dicts."""
    out = {**GOOD}
    for key, value in parts.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


# (id, metadata.name, spec, field path the 422 names, words of the message)
REFUSED_BY_SCHEMA: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("targets-not-a-list", "m", spec(targets="cpu"), "spec.targets", "must be of type array"),
    ("targets-empty", "m", spec(targets=[]), "spec.targets", "at least 1 item"),
    ("targets-missing", "m", without("targets"), "spec.targets", "Required value"),
    ("model-missing", "m", without("model"), "spec.model", "Required value"),
    ("uri-missing", "m", spec(model={"uri": None}), "spec.model.uri", "Required value"),
    ("uri-scheme", "m", spec(model={"uri": "ftp://host/m.onnx"}), "spec.model.uri", "should match"),
    ("uri-no-scheme", "m", spec(model={"uri": "models/m.onnx"}), "spec.model.uri", "should match"),
    ("uri-pvc-dotdot", "m", spec(model={"uri": "pvc://models/../../etc/passwd"}), "spec.model.uri", "'..'"),
    ("uri-file-dotdot", "m", spec(model={"uri": "file:///store/../etc/passwd"}), "spec.model.uri", "'..'"),
    ("uri-pvc-no-claim", "m", spec(model={"uri": "pvc:///etc/passwd"}), "spec.model.uri", "pvc://CLAIM/path"),
    ("uri-too-long", "m", spec(model={"uri": "s3://b/" + "x" * 2100}), "spec.model.uri", "Too long"),
    ("data-uri-dotdot", "m", spec(validation={"dataUri": "pvc://data/../x.npz"}), "spec.validation.dataUri", "'..'"),
    ("format", "m", spec(model={"uri": GOOD["model"]["uri"], "format": "tflite"}), "spec.model.format", "onnx"),
    (
        "secret-name",
        "m",
        spec(model={"uri": "s3://b/m", "credentialsSecret": "My_Secret"}),
        "spec.model.credentialsSecret",
        "should match",
    ),
    (
        "input-dtype",
        "m",
        spec(model={"uri": "s3://b/m", "inputs": [{"name": "x", "dtype": "float8"}]}),
        "spec.model.inputs[0].dtype",
        "Unsupported value",
    ),
    (
        "input-shape-negative",
        "m",
        spec(model={"uri": "s3://b/m", "inputs": [{"name": "x", "shape": [-2, 3]}]}),
        "spec.model.inputs[0].shape[0]",
        "greater than or equal to -1",
    ),
    (
        "input-shape-zero",
        "m",
        spec(model={"uri": "s3://b/m", "inputs": [{"name": "x", "shape": [1, 0]}]}),
        "spec.model.inputs[0].shape",
        "never 0",
    ),
    (
        "input-shape-string",
        "m",
        spec(model={"uri": "s3://b/m", "inputs": [{"name": "x", "shape": "1,3,224,224"}]}),
        "spec.model.inputs[0].shape",
        "must be of type array",
    ),
    (
        "input-name-empty",
        "m",
        spec(model={"uri": "s3://b/m", "inputs": [{"name": ""}]}),
        "spec.model.inputs[0].name",
        "at least 1 chars",
    ),
    (
        "input-duplicate",
        "m",
        spec(model={"uri": "s3://b/m", "inputs": [{"name": "x"}, {"name": "x"}]}),
        "spec.model.inputs[1]",
        "Duplicate value",
    ),
    ("metric", "m", spec(validation={"metric": "f1"}), "spec.validation.metric", "Unsupported value"),
    (
        "drop-negative",
        "m",
        spec(validation={"maxMetricDrop": -0.1}),
        "spec.validation.maxMetricDrop",
        "greater than or equal to 0",
    ),
    (
        "drop-string",
        "m",
        spec(validation={"maxMetricDrop": "1%"}),
        "spec.validation.maxMetricDrop",
        "must be of type number",
    ),
    (
        "drop-beyond-top1",
        "m",
        spec(validation={"metric": "top1", "maxMetricDrop": 5}),
        "spec.validation.maxMetricDrop",
        "fractions up to 1",
    ),
    (
        "drop-beyond-cosine",
        "m",
        spec(validation={"metric": "cosine", "maxMetricDrop": 3}),
        "spec.validation.maxMetricDrop",
        "at most 2",
    ),
    ("objective", "m", spec(search={"objective": "fastest"}), "spec.search.objective", "Unsupported value"),
    ("latency-budget-zero", "m", spec(search={"latencyBudgetMs": 0}), "spec.search.latencyBudgetMs", "greater than 0"),
    (
        "batch-huge",
        "m",
        spec(search={"batchSizes": [1, 100000]}),
        "spec.search.batchSizes[1]",
        "less than or equal to 4096",
    ),
    ("batch-zero", "m", spec(search={"batchSizes": [0]}), "spec.search.batchSizes[0]", "greater than or equal to 1"),
    ("batch-empty", "m", spec(search={"batchSizes": []}), "spec.search.batchSizes", "at least 1 item"),
    ("batch-duplicate", "m", spec(search={"batchSizes": [8, 8]}), "spec.search.batchSizes[1]", "Duplicate value"),
    ("precision", "m", spec(search={"precisions": ["int4"]}), "spec.search.precisions[0]", "Unsupported value"),
    ("backend", "m", spec(search={"backends": ["tflite"]}), "spec.search.backends[0]", "Unsupported value"),
    ("time-budget-words", "m", spec(search={"timeBudget": "20 minutes"}), "spec.search.timeBudget", "should match"),
    ("time-budget-zero", "m", spec(search={"timeBudget": "0m"}), "spec.search.timeBudget", "longer than 0s"),
    ("time-budget-days", "m", spec(search={"timeBudget": "1d"}), "spec.search.timeBudget", "should match"),
    ("pool-uppercase", "m", spec(targets=[{"pool": "GPU"}]), "spec.targets[0].pool", "should match"),
    ("pool-duplicate", "m", spec(targets=[{"pool": "cpu"}, {"pool": "cpu"}]), "spec.targets[1]", "Duplicate value"),
    ("replicas-negative", "m", spec(serving={"replicas": -1}), "spec.serving.replicas", "greater than or equal to 0"),
    ("replicas-huge", "m", spec(serving={"replicas": 1000}), "spec.serving.replicas", "less than or equal to 100"),
    (
        "max-batch-huge",
        "m",
        spec(serving={"dynamicBatching": {"maxBatchSize": 100000}}),
        "spec.serving.dynamicBatching.maxBatchSize",
        "less than or equal to 4096",
    ),
    (
        "queue-delay-negative",
        "m",
        spec(serving={"dynamicBatching": {"maxQueueDelayMicroseconds": -5}}),
        "spec.serving.dynamicBatching.maxQueueDelayMicroseconds",
        "greater than or equal to 0",
    ),
    (
        "cache-size-zero",
        "m",
        spec(serving={"cacheSizeMib": 0}),
        "spec.serving.cacheSizeMib",
        "greater than or equal to 1",
    ),
    ("feedback-without-p99", "m", spec(feedback={"enabled": True}), "spec.feedback.p99LatencyMs", "needs p99LatencyMs"),
    (
        "feedback-interval",
        "m",
        spec(feedback={"p99LatencyMs": 50, "interval": "every minute"}),
        "spec.feedback.interval",
        "should match",
    ),
    (
        "feedback-interval-zero",
        "m",
        spec(feedback={"p99LatencyMs": 50, "interval": "0s"}),
        "spec.feedback.interval",
        "longer than 0s",
    ),
    (
        "failure-ratio",
        "m",
        spec(feedback={"maxFailureRatio": 2}),
        "spec.feedback.maxFailureRatio",
        "less than or equal to 1",
    ),
    (
        "budget-over-slo",
        "m",
        spec(search={"latencyBudgetMs": 80}, feedback={"enabled": True, "p99LatencyMs": 50}),
        "spec.search.latencyBudgetMs",
        "above feedback.p99LatencyMs",
    ),
    ("unknown-field", "m", spec(search={"objectve": "cost"}), "spec.search.objectve", "unknown field"),
    ("unknown-top-field", "m", {**GOOD, "modle": {"uri": "s3://b/m"}}, "spec.modle", "unknown field"),
    ("name-leading-digit", "1-model", GOOD, "metadata.name", "start with a lowercase letter"),
    ("name-with-dot", "my.model", GOOD, "metadata.name", "no dots"),
]


@pytest.mark.parametrize(
    ("name", "body", "field", "words"), [case[1:] for case in REFUSED_BY_SCHEMA], ids=[c[0] for c in REFUSED_BY_SCHEMA]
)
async def test_the_schema_refuses_with_the_field(
    api: KubeClient, namespace: str, name: str, body: dict[str, Any], field: str, words: str
) -> None:
    # Strict: what kubectl apply does by default; without it the API server drops unknown fields.
    with pytest.raises(KubeError) as refused:
        await api.create(OPTIMIZED_MODELS, namespace, manifest(name, body), field_validation="Strict")
    message = str(refused.value)
    unknown = words == "unknown field"
    assert refused.value.status == (400 if unknown else 422), message
    assert (f'unknown field "{field}"' if unknown else field) in message, message
    assert words in message, message
    assert await api.get(OPTIMIZED_MODELS, namespace, name) is None


# (metadata.name, spec, reason, words of the message) — valid to the schema, not to this operator.
LONG_NAME = "m" * 200 + "-" + "a" * 52  # 253 characters, the most a name can have
REFUSED_BY_OPERATOR: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("unknown-pool", spec(targets=[{"pool": "cpu"}, {"pool": "tpu"}]), "UnknownPool",
     ["spec.targets[1].pool: unknown pool 'tpu'", "known pools: cpu, gpu, spot"]),
    ("cost-unpriced", spec(search={"objective": "cost"}, targets=[{"pool": "cpu"}, {"pool": "spot"}]),
     "PoolWithoutPrice", ["spec.search.objective: cost needs a pricePerHour", "spot has none", "use latency"]),
    ("trt-on-cpu", spec(search={"backends": ["tensorrt"]}), "NoBackendForPool",
     ["spec.search.backends: none of tensorrt runs on pool 'cpu'", "onnxruntime, openvino, torch"]),
    ("openvino-on-gpu", spec(search={"backends": ["openvino"]}, targets=[{"pool": "cpu"}, {"pool": "gpu"}]),
     "NoBackendForPool", ["on pool 'gpu' (spec.targets[1], device cuda", "leave backends empty"]),
    ("model-missing", spec(model={"uri": "file:///nowhere/model.onnx"}), "ModelUnreachable",
     ["spec.model.uri: no file at /nowhere/model.onnx"]),
]  # fmt: skip


@pytest.fixture()
def settings(tmp_path: Path) -> HonedSettings:
    # The harness's pools and one without a price.
    return HonedSettings(
        pools=[*pools(), Pool(name="spot", image="honed/optimizer-cpu:test", device="cpu")],
        artifact_store=f"file://{tmp_path}/store",
        resync_interval_s=300.0,
        triton_image="nvcr.io/nvidia/tritonserver:test",
    )


async def test_the_operator_fails_what_the_schema_lets_through_and_serves_long_names(
    api: KubeClient, namespace: str, start_operator: StartOperator
) -> None:
    await start_operator(lambda *_: None)
    for name, body, _, _ in REFUSED_BY_OPERATOR:
        await api.create(OPTIMIZED_MODELS, namespace, manifest(name, body), field_validation="Strict")
    await api.create(OPTIMIZED_MODELS, namespace, manifest(LONG_NAME, GOOD), field_validation="Strict")

    async def all_decided() -> dict[str, dict[str, Any]] | None:
        bodies = {name: await get_om(api, namespace, name) for name, *_ in REFUSED_BY_OPERATOR}
        done = all((b.get("status") or {}).get("phase") == "Failed" for b in bodies.values())
        return bodies if done else None

    bodies = await eventually(all_decided, what="every malformed model Failed")
    for name, _, reason, words in REFUSED_BY_OPERATOR:
        optimized = next(c for c in bodies[name]["status"]["conditions"] if c["type"] == "Optimized")
        assert (optimized["status"], optimized["reason"]) == ("False", reason), (name, optimized)
        for word in words:
            assert word in optimized["message"], (name, optimized["message"])
    owners = {j["metadata"]["labels"]["honed.dev/optimizedmodel"][:20] for j in await api.list(JOBS, namespace, {})}
    assert owners <= {"m" * 20}, f"a refused model got a Job: {owners}"

    # The longest name a resource can have: children are cut to 63 characters with a hash.
    async def optimizing() -> list[dict[str, Any]] | None:
        body = await get_om(api, namespace, LONG_NAME)
        jobs = await api.list(JOBS, namespace, {})
        return jobs if (body.get("status") or {}).get("phase") == "Optimizing" and jobs else None

    (job,) = await eventually(optimizing, what="the long-named model optimizing")
    assert len(job["metadata"]["name"]) <= 63 and job["metadata"]["name"].startswith("m" * 40)

    async def event_posted() -> bool:
        events = await api.list(EVENTS, namespace, {}, field_selector=f"involvedObject.name={LONG_NAME}")
        return any(e["reason"] == "Optimizing" for e in events)

    await eventually(event_posted, what="an Event about the long-named model")
