"""The OptimizedModel spec and the optimizer request: defaults, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from honed.api.durations import format_duration, parse_duration
from honed.api.request import OptimizeRequest, RequestModel, load_request
from honed.api.spec import Dtype, SpecError, parse_spec
from honed.errors import InputError
from honed.optimizer.options import OptimizeOptions
from honed.optimizer.tensors import TRITON_DTYPES, TensorSpec

MINIMAL = {"model": {"uri": "s3://models/resnet50/model.onnx"}, "targets": [{"pool": "cpu"}]}


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.model.format == "onnx"
    assert spec.search.objective == "latency"
    assert spec.search.batch_sizes == [1, 8]
    assert spec.search.time_budget_seconds() == 1200
    assert spec.validation.max_metric_drop == 0.01
    assert spec.serving.replicas == 1 and spec.serving.response_cache
    assert spec.pools() == ["cpu"]


def test_camel_case_manifest_round_trips() -> None:
    manifest = {
        "model": {
            "uri": "pvc://models/bert/model.onnx",
            "format": "onnx",
            "credentialsSecret": "models-s3",
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [-1, 128]}],
        },
        "validation": {"dataUri": "s3://models/bert/val.npz", "metric": "cosine", "maxMetricDrop": 0.02},
        "search": {
            "objective": "cost",
            "latencyBudgetMs": 20,
            "batchSizes": [1, 8, 32],
            "timeBudget": "1h30m",
        },
        "targets": [{"pool": "cpu"}, {"pool": "gpu"}],
        "serving": {"replicas": 2, "dynamicBatching": {"maxQueueDelayMicroseconds": 500}},
        "feedback": {"enabled": True, "p99LatencyMs": 50},
    }
    spec = parse_spec(manifest)
    assert spec.search.time_budget_seconds() == 5400
    assert spec.serving.dynamic_batching.max_queue_delay_microseconds == 500
    wire = spec.to_wire()
    assert wire["model"]["credentialsSecret"] == "models-s3"
    assert wire["search"]["latencyBudgetMs"] == 20
    assert parse_spec(wire) == spec


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"model": {"uri": "ftp://x/model.onnx"}}, "spec.model.uri", "pattern"),
        ({"model": {"uri": "s3://m/x.onnx", "format": "keras"}}, "spec.model.format", "onnx"),
        ({"search": {"batchSizes": [1, 0]}}, "spec.search.batchSizes[1]", "greater than or equal to 1"),
        ({"search": {"timeBudget": "twenty minutes"}}, "spec.search.timeBudget", "pattern"),
        ({"search": {"objective": "speed"}}, "spec.search.objective", "latency"),
        ({"validation": {"maxMetricDrop": -0.1}}, "spec.validation.maxMetricDrop", "greater than or equal"),
        ({"targets": []}, "spec.targets", "at least 1"),
        ({"targets": [{"pool": "cpu"}, {"pool": "cpu"}]}, "spec.targets[1].pool", "listed twice"),
        ({"search": {"batchsizes": [1]}}, "spec.search.batchsizes", "not permitted"),
        (
            {"model": {"uri": "s3://m/x.onnx", "inputs": [{"name": "x", "shape": [-1, 0]}]}},
            "spec.model.inputs[0].shape",
            "never 0",
        ),
        ({"model": {"uri": "pvc://models/../../etc/passwd"}}, "spec.model.uri", "'..' path segment"),
        ({"model": {"uri": "file:///store/a/../../etc/passwd"}}, "spec.model.uri", "'..' path segment"),
        ({"validation": {"dataUri": "s3://b/../x.npz"}}, "spec.validation.dataUri", "'..' path segment"),
        ({"model": {"uri": "pvc:///etc/passwd"}}, "spec.model.uri", "pvc://CLAIM/path"),
        ({"model": {"uri": "pvc://models"}}, "spec.model.uri", "pvc://CLAIM/path"),
        ({"model": {"uri": "pvc://Models_A/m.onnx"}}, "spec.model.uri", "pvc://CLAIM/path"),
        ({"search": {"timeBudget": "0m"}}, "spec.search.timeBudget", "longer than 0s"),
        ({"feedback": {"interval": "0s", "p99LatencyMs": 5}}, "spec.feedback.interval", "longer than 0s"),
        ({"search": {"batchSizes": [1, 8, 1]}}, "spec.search.batchSizes", "listed twice (entry 2)"),
        ({"search": {"precisions": ["fp16", "fp16"]}}, "spec.search.precisions", "listed twice"),
        (
            {"model": {"uri": "s3://m/x.onnx", "inputs": [{"name": "x"}, {"name": "x"}]}},
            "spec.model.inputs",
            "declared twice",
        ),
        ({"validation": {"metric": "top1", "maxMetricDrop": 5}}, "spec.validation.maxMetricDrop", "fraction"),
        ({"validation": {"metric": "cosine", "maxMetricDrop": 2.5}}, "spec.validation.maxMetricDrop", "(2)"),
        ({"feedback": {"enabled": True}}, "spec.feedback.p99LatencyMs", "needs p99LatencyMs"),
        (
            {"search": {"latencyBudgetMs": 80}, "feedback": {"enabled": True, "p99LatencyMs": 50}},
            "spec.search.latencyBudgetMs",
            "above feedback.p99LatencyMs",
        ),
    ],
)
def test_invalid_spec_names_the_field(patch: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**MINIMAL, **patch})
    assert caught.value.field == field
    assert words in caught.value.message
    assert caught.value.reason == "InvalidSpec"


@pytest.mark.parametrize(
    "patch",
    [
        {"model": {"uri": "pvc://models/resnet/..model.onnx"}},  # '..' inside a name is a name
        {"validation": {"metric": "rmse", "maxMetricDrop": 5}},  # unbounded metrics take any drop
        {"search": {"latencyBudgetMs": 80}, "feedback": {"p99LatencyMs": 50}},  # no loop, no conflict
        {"search": {"timeBudget": "500ms"}},
    ],
)
def test_near_misses_are_valid(patch: dict[str, Any]) -> None:
    parse_spec({**MINIMAL, **patch})


def test_spec_that_is_not_an_object() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(None)
    assert caught.value.field == "spec"


def test_api_dtypes_match_the_engine_dtypes() -> None:
    assert set(Dtype.__args__) == set(TRITON_DTYPES)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("20m", 1200), ("1h30m", 5400), ("250ms", 0.25)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_says_the_form() -> None:
    with pytest.raises(ValueError, match="like 90s, 20m or 1h30m"):
        parse_duration("5 minutes")
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0s"


def test_request_file_round_trip(tmp_path: Path) -> None:
    request = OptimizeRequest(model=RequestModel(uri="file:///m.onnx"), batch_sizes=[1, 4], device="cuda")
    path = tmp_path / "request.json"
    request.write(path)
    assert json.loads(path.read_text())["schema"] == "honed.request/v1"
    assert load_request(path) == request


def test_request_errors_name_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no request file"):
        load_request(tmp_path / "missing.json")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": {"uri": "file:///m.onnx"}, "device": "tpu"}))
    with pytest.raises(InputError, match="device"):
        load_request(path)
    path.write_text(json.dumps({"schema": "honed.request/v0", "model": {"uri": "file:///m.onnx"}}))
    with pytest.raises(InputError, match=r"expected .honed\.request/v1."):
        load_request(path)


def test_request_as_engine_options() -> None:
    request = OptimizeRequest(
        model=RequestModel(uri="file:///models/m.onnx", inputs=[{"name": "x", "shape": [-1, 4]}]),
        data_uri="s3://data/val.npz",
        precisions=["fp32", "int8"],
        time_budget_s=90,
    )
    options = OptimizeOptions.from_request(request, out=Path("/tmp/o"))
    assert (
        options.model == "/models/m.onnx" and options.data == "s3://data/val.npz"
    )  # fetched by the CLI, not folded by Path
    assert options.inputs == [TensorSpec(name="x", dtype="float32", shape=[-1, 4])]
    assert options.precisions == ["fp32", "int8"] and options.time_budget_s == 90
    assert options.out == Path("/tmp/o")
    # left out of the request: the one set of defaults, the same a local run gets
    local = OptimizeOptions(model="m.onnx")
    assert (options.backends, options.metric, options.batch_sizes) == (local.backends, None, local.batch_sizes)
