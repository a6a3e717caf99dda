import argparse
from pathlib import Path

import numpy as np
import pytest

from honed.cli import build_parser
from honed.errors import InputError
from honed.optimizer.cli import options_from_args, time_budget
from honed.optimizer.data import check_arrays, synthesize
from honed.optimizer.report import Report
from honed.optimizer.tensors import TensorSpec, parse_input_option


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["optimize", *argv])


def test_cli_options_map_to_typed_options(tmp_path: Path) -> None:
    args = parse(
        "m.onnx",
        "--batch-sizes",
        "8,1,8",
        "--precisions",
        "fp32,int8",
        "--time-budget",
        "1h30m",
        "--input",
        "ids:int64:-1,128",
        "--objective",
        "throughput",
        "--latency-budget-ms",
        "20",
    )
    options = options_from_args(args)
    assert options.batch_sizes == [1, 8]
    assert options.time_budget_s == 5400
    assert options.inputs == [TensorSpec(name="ids", dtype="int64", shape=[-1, 128])]
    assert options.objective == "throughput" and options.latency_budget_ms == 20


def test_request_file_overrides_flags(tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(
        '{"schema": "honed.request/v1", "model": {"uri": "file:///m/x.onnx", "format": "onnx"},'
        ' "batch_sizes": [4], "time_budget_s": 120, "precisions": ["fp32"]}'
    )
    options = options_from_args(parse("--request", str(request)))
    assert options.model == "/m/x.onnx" and options.batch_sizes == [4] and options.time_budget_s == 120
    assert options.precisions == ["fp32"]


def test_flags_and_a_request_left_at_defaults_ask_for_the_same_search(tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text('{"schema": "honed.request/v1", "model": {"uri": "file:///m/x.onnx"}}')
    from_request = options_from_args(parse("--request", str(request), "--out", str(tmp_path)))
    from_flags = options_from_args(parse("/m/x.onnx", "--out", str(tmp_path)))
    assert from_request.search_fields() == from_flags.search_fields()
    assert from_flags.batch_sizes == [1, 8] and from_flags.time_budget_s == 600 and from_flags.objective == "latency"
    assert from_request.out == tmp_path  # --out still applies with --request


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["m.onnx", "--batch-sizes", "0"], "--batch-sizes"),
        (["m.onnx", "--precisions", "int4"], "--precisions"),
        (["m.onnx", "--backends", "onnxruntime,tensorflow"], "--backends: .* \\(got 'tensorflow'\\)"),
        (["m.onnx", "--max-metric-drop", "-1"], "--max-metric-drop"),
        ([], "no model"),
    ],
)
def test_bad_options_name_the_field(argv: list[str], field: str) -> None:
    with pytest.raises(InputError, match=field):
        options_from_args(parse(*argv))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600), ("45", 45), ("250ms", 0.25)])
def test_time_budget(text: str, seconds: float) -> None:
    assert time_budget(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-5m", "1d", "10 m"])
def test_bad_time_budget_names_the_form(bad: str) -> None:
    with pytest.raises(InputError, match="time budget"):
        time_budget(bad)


def test_input_option_parsing() -> None:
    assert parse_input_option("x:fp32:batch,3,224,224").shape == [-1, 3, 224, 224]
    for bad in ("x:float32", "x:complex64:1", "x:float32:0"):
        with pytest.raises(InputError):
            parse_input_option(bad)


def test_data_checks_and_casts(tmp_path: Path) -> None:
    spec = [TensorSpec(name="x", dtype="float32", shape=[-1, 4])]
    ds = check_arrays(
        {"whatever": np.ones((3, 4), dtype=np.float64), "labels": np.arange(3)},
        spec,
        tmp_path / "d.npz",
        None,
    )
    assert ds.feeds["x"].dtype == np.float32 and ds.samples == 3 and ds.labels is not None
    with pytest.raises(InputError, match="labels"):
        check_arrays({"x": np.ones((3, 4)), "labels": np.arange(2)}, spec, tmp_path / "d.npz", None)
    with pytest.raises(InputError, match="float32"):
        check_arrays({"x": np.array([["a"] * 4] * 3)}, spec, tmp_path / "d.npz", None)


def test_synthesized_token_ids_stay_inside_the_vocabulary() -> None:
    specs = [
        TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1]),
        TensorSpec(name="attention_mask", dtype="int64", shape=[-1, -1]),
        TensorSpec(name="token_type_ids", dtype="int64", shape=[-1, -1]),
    ]
    ds = synthesize(specs, 8, {"input_ids": 30})
    assert ds.feeds["input_ids"].max() < 30 and ds.feeds["input_ids"].shape == (8, 16)
    assert (ds.feeds["attention_mask"] == 1).all() and (ds.feeds["token_type_ids"] == 0).all()


def test_report_schema_key_is_schema() -> None:
    fields = Report.model_json_schema(by_alias=True)["properties"]
    assert "schema" in fields and "winner" in fields and "baseline" in fields
