"""`honed optimize` on PyTorch factories as users write them: transformers models as they come,
dict and tuple outputs (flattened into named tensors), and the errors for what cannot be served."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from honed.optimizer.artifact import load_runner
from honed.optimizer.report import load_report
from honed.optimizer.sources import load_source
from honed.optimizer.tensors import parse_input_option
from honed.serving.config import parse_config
from honed.serving.repository import write_version
from tests.fixtures.cli import cli_error, honed
from tests.fixtures.torch_models import SEQ, VOCAB

# Each `honed optimize` run may take up to its own 600 s limit; the test fails on that, not on pytest-timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
FACTORIES = "tests.fixtures.torch_models"
TOKENS = ["--input", f"input_ids:int64:batch,{SEQ}", "--input", f"attention_mask:int64:batch,{SEQ}"]
FAST = ["--precisions", "fp32", "--measure-seconds", "0.2", "--time-budget", "5m", "--quiet", "--no-plot"]


def test_a_transformers_bert_model_factory_optimizes_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = honed("optimize", f"{FACTORIES}:bert", *TOKENS, "--backends", "onnxruntime", "--batch-sizes", "1,4",
                   "--out", out, *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = load_report(out)
    # BaseModelOutputWithPoolingAndCrossAttentions, flattened by its field names.
    assert [o.name for o in report.model.outputs] == ["last_hidden_state", "pooler_output"]
    assert report.baseline.name == "torch-fp32.eager" and report.baseline.status == "accepted"
    assert not [note for note in report.notes if "failed" in note], report.notes
    winner = report.winner_candidate()
    assert winner is not None and winner.name == "onnx-fp32.onnxruntime" and winner.status == "accepted"
    assert winner.metric is not None and winner.metric.drop <= report.settings.max_metric_drop
    # The winner's artifact, loaded on its own, gives the model's own outputs under their names.
    import torch

    from tests.fixtures.torch_models import bert

    rng = np.random.default_rng(1)
    feeds = {"input_ids": rng.integers(0, VOCAB, (3, SEQ)), "attention_mask": np.ones((3, SEQ), np.int64)}
    feeds["attention_mask"][0, SEQ // 2 :] = 0  # padding, which the synthesized data never had
    assert winner.artifact is not None
    outputs = load_runner(out / winner.artifact).run(feeds)
    served = dict(zip([o.name for o in report.model.outputs], outputs, strict=True))
    with torch.inference_mode():
        expected = bert().eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    for name in ("last_hidden_state", "pooler_output"):
        np.testing.assert_allclose(served[name], expected[name].numpy(), atol=1e-4)


def test_the_exported_program_of_a_transformers_model_loads_where_transformers_is_not_imported(
    tmp_path: Path,
) -> None:
    """torch.compile candidates load the program in a fresh process; a ModelOutput in its pytree failed there."""
    inputs = [parse_input_option(f"{name}:int64:batch,{SEQ}") for name in ("input_ids", "attention_mask")]
    source = load_source(f"{FACTORIES}:bert", tmp_path, inputs)
    assert source.torch_path is not None and source.onnx_path is not None, source.notes
    check = (
        "import sys, torch\n"
        f"module = torch.export.load({str(source.torch_path)!r}).module()\n"
        f"out = module(torch.zeros(3, {SEQ}, dtype=torch.int64), torch.ones(3, {SEQ}, dtype=torch.int64))\n"
        "assert 'transformers' not in sys.modules\n"
        "print([list(t.shape) for t in out])\n"
    )
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == f"[[3, {SEQ}, 32], [3, 32]]"


def test_a_decoder_that_returns_its_key_value_cache_is_called_without_it(tmp_path: Path) -> None:
    inputs = [parse_input_option(f"{name}:int64:batch,{SEQ}") for name in ("input_ids", "attention_mask")]
    source = load_source(f"{FACTORIES}:gpt2", tmp_path, inputs)
    assert [o.name for o in source.outputs] == ["last_hidden_state"]
    assert source.call["kwargs"] == {"use_cache": False}
    assert any("'past_key_values' is a transformers.cache_utils.DynamicCache" in n for n in source.notes)
    assert any("use_cache=False" in n and "config is unchanged" in n for n in source.notes)
    assert source.onnx_path is not None and source.torch_path is not None


@pytest.mark.parametrize(
    ("factory", "names"),
    [("dict_outputs", ["logits", "probs"]), ("tuple_outputs", ["output_0", "output_1.0", "output_1.1"])],
)
def test_dict_and_tuple_outputs_are_named_and_served_as_flattened(
    tmp_path: Path, factory: str, names: list[str]
) -> None:
    out = tmp_path / "out"
    result = honed("optimize", f"{FACTORIES}:{factory}", "--input", "x:float32:batch,4", "--backends", "onnxruntime",
                   "--batch-sizes", "1", "--out", out, *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = load_report(out)
    assert [o.name for o in report.model.outputs] == names
    assert {c.name: c.status for c in report.candidates} == {
        "torch-fp32.eager": "accepted",
        "onnx-fp32.onnxruntime": "accepted",
    }
    written = write_version(out, tmp_path / "repository")
    assert [o.name for o in parse_config(written.config_text).output] == names


def test_an_output_that_is_not_a_tensor_names_it_and_what_to_return(tmp_path: Path) -> None:
    result = honed("optimize", f"{FACTORIES}:labelled_outputs", "--input", "x:float32:batch,4", "--out", tmp_path / "o")
    message = cli_error(result)
    assert result.returncode == 2
    assert "output 'label' is a str, not a tensor" in message
    assert "tuple, list, dict or ModelOutput of tensors" in message and "without 'label'" in message
    assert "--input" not in message


def test_a_model_that_raises_names_where_not_the_inputs(tmp_path: Path) -> None:
    result = honed("optimize", f"{FACTORIES}:unready", "--input", "x:float32:batch,4", "--out", tmp_path / "o")
    message = cli_error(result)
    assert "RuntimeError" in message and "load_vocabulary()" in message
    assert "torch_models.py:" in message and "in forward()" in message
    assert "--input" not in message


def test_token_ids_of_the_wrong_dtype_blame_the_inputs(tmp_path: Path) -> None:
    result = honed("optimize", f"{FACTORIES}:bert", "--input", f"input_ids:float32:batch,{SEQ}",
                   "--input", f"attention_mask:int64:batch,{SEQ}", "--out", tmp_path / "o")  # fmt: skip
    message = cli_error(result)
    assert "input_ids:float32" in message and "check --input shapes and dtypes" in message


def test_a_state_whose_batch_is_its_second_axis_exports_with_the_batch_there(tmp_path: Path) -> None:
    """An LSTM's (x, h0, c0) -> (y, hn, cn): example inputs, output specs and both exports put the batch on axis 1."""
    specs = ["x:float32:batch,5,8", "h0:float32:2,batch,16", "c0:float32:2,batch,16"]
    source = load_source(f"{FACTORIES}:stateful_lstm", tmp_path, [parse_input_option(s) for s in specs])
    assert [(o.shape, o.sample_axis) for o in source.outputs] == [
        ([-1, 5, 16], 0),
        ([2, -1, 16], 1),
        ([2, -1, 16], 1),
    ]
    assert source.onnx_path is not None and source.torch_path is not None, source.notes
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 5, 8)), "h0": np.zeros((2, 3, 16)), "c0": np.zeros((2, 3, 16))}
    session = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {k: v.astype(np.float32) for k, v in feeds.items()})
    assert [list(o.shape) for o in outputs] == [[3, 5, 16], [2, 3, 16], [2, 3, 16]]


def test_an_operator_the_legacy_onnx_exporter_lacks_is_exported_with_dynamo(tmp_path: Path) -> None:
    source = load_source(f"{FACTORIES}:differences", tmp_path, [parse_input_option("x:float32:batch,4")])
    assert source.onnx_path is not None, source.notes
    assert any("aten::diff" in note and "dynamo exporter" in note for note in source.notes), source.notes
    import onnxruntime as ort
    import torch

    from tests.fixtures.torch_models import differences

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    session = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
    (served,) = session.run(None, {"x": x})
    with torch.inference_mode():
        expected = differences().eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
