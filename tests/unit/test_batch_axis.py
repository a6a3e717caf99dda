"""Where the batch sits when a model does not name it: RNN states with an unnamed dynamic dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from honed.errors import InputError
from honed.optimizer.data import check_arrays, synthesize
from honed.optimizer.onnx_graph import read_onnx
from honed.optimizer.tensors import TensorSpec, infer_batch_axes, parse_input_option
from honed.optimizer.torch_export import output_spec
from tests.fixtures.models import stateful_gru_onnx, token_classifier_onnx


def test_an_unnamed_dynamic_state_dim_is_the_batch_axis(tmp_path: Path) -> None:
    model = read_onnx(stateful_gru_onnx(tmp_path / "gru.onnx"))
    by_name = {s.name: s for s in [*model.inputs, *model.outputs]}
    assert by_name["x"].sample_axis == 0 and by_name["logits"].sample_axis == 0
    assert by_name["h0"].batch_axis == 1 and by_name["h"].batch_axis == 1


def test_inputs_may_differ_in_which_axis_is_the_batch() -> None:
    specs = [
        TensorSpec(name="x", shape=[-1, 5, 8]),
        TensorSpec(name="h", shape=[2, -1, 16]),
        TensorSpec(name="c", shape=[2, 16, -1]),
    ]
    infer_batch_axes(specs, anchored=True)
    assert [s.sample_axis for s in specs] == [0, 1, 2]


def test_nothing_is_guessed_without_a_batch_elsewhere_or_with_two_varying_axes() -> None:
    alone = [TensorSpec(name="ids", shape=[1, -1])]  # batch pinned at 1, sequence varies
    infer_batch_axes(alone, anchored=False)
    assert alone[0].batch_axis is None
    two = [TensorSpec(name="x", shape=[-1, 4]), TensorSpec(name="s", shape=[2, -1, -1])]
    infer_batch_axes(two, anchored=True)
    assert two[1].batch_axis is None


def test_a_shared_named_axis_is_not_taken_for_the_batch(tmp_path: Path) -> None:
    """position_ids [1, seq] beside input_ids [batch, seq]: seq is a known axis, not the batch."""
    import onnx
    from onnx import TensorProto, helper

    path = token_classifier_onnx(tmp_path / "t.onnx")
    model = onnx.load(str(path))
    model.graph.input.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "seq"]))
    for value in model.graph.input[:2]:
        value.type.tensor_type.shape.dim[1].dim_param = "seq"
    onnx.save(model, str(path))
    specs = {s.name: s for s in read_onnx(path).inputs}
    assert specs["position_ids"].batch_axis is None and specs["input_ids"].sample_axis == 0


def test_input_option_names_the_batch_axis() -> None:
    spec = parse_input_option("h0:float32:2,batch,128")
    assert spec.shape == [2, -1, 128] and spec.batch_axis == 1
    assert parse_input_option("x:float32:batch,3").batch_axis is None  # first axis: the default
    with pytest.raises(InputError, match="two batch axes"):
        parse_input_option("x:float32:batch,batch")


def test_synthesized_state_stacks_samples_on_its_batch_axis() -> None:
    specs = [TensorSpec(name="x", shape=[-1, 5, 8]), TensorSpec(name="h0", shape=[2, -1, 16], batch_axis=1)]
    data = synthesize(specs, samples=6, int_bounds={})
    assert data.feeds["h0"].shape == (6, 2, 16)


def test_data_errors_never_show_a_minus_one_to_copy(tmp_path: Path) -> None:
    x = TensorSpec(name="x", shape=[-1, 4])
    state = TensorSpec(name="s", shape=[2, -1, -1])  # two varying axes: honed cannot tell which is the batch
    arrays = {"x": np.zeros((3, 4), np.float32), "s": np.zeros((3, 2, 16), np.float32)}
    with pytest.raises(InputError) as err:
        check_arrays(arrays, [x, state], tmp_path / "d.npz", None)
    # The message names the data file; pytest's temporary paths may hold "-1" themselves.
    text = f"{err.value.message} {err.value.hint}".replace(str(tmp_path), "DATA")
    assert "-1" not in text
    assert "[2, ?, ?]" in err.value.message and "axis 1, 2 of 's' varies" in err.value.message
    assert "--input s:float32:2,batch,?" in (err.value.hint or "")
    known = TensorSpec(name="h0", shape=[2, -1, 16], batch_axis=1)
    with pytest.raises(InputError) as err:
        check_arrays({"x": arrays["x"], "h0": np.zeros((3, 2, 9), np.float32)}, [x, known], tmp_path / "d.npz", None)
    assert "-1" not in err.value.message.replace(str(tmp_path), "DATA") and "[2, batch, 16]" in err.value.message


def test_an_output_batch_axis_is_the_one_that_grows_with_the_batch() -> None:
    # At batch 2 and 3: an RNN state [layers=2, batch, 16], a logit row per sample, and a pooled constant.
    state = output_spec("h", "float32", [2, 2, 16], [2, 3, 16], None)
    assert state.shape == [2, -1, 16] and state.sample_axis == 1
    logits = output_spec("logits", "float32", [2, 5], [3, 5], None)
    assert logits.shape == [-1, 5] and logits.sample_axis == 0
    constant = output_spec("scale", "float32", [4], [4], None)
    assert constant.shape == [4] and constant.sample_axis is None


def test_output_axes_that_follow_an_open_input_axis_stay_open() -> None:
    # Token logits [batch, seq, vocab] of a model whose --input leaves the sequence length open.
    logits = output_spec("logits", "float32", [2, 16, 100], [3, 16, 100], [2, 17, 100])
    assert logits.shape == [-1, -1, 100] and logits.sample_axis == 0


def test_without_a_second_call_the_first_output_axis_is_the_batch() -> None:
    assert output_spec("y", "float32", [4, 5], None, None).shape == [-1, 5]


def test_batch_names_that_tie_are_read_the_same_in_every_process(tmp_path: Path) -> None:
    """Inputs naming their batch 'N' and 'batch_size' once each: the earliest input's name wins, not a hash order."""
    import os
    import subprocess
    import sys

    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch_size", 4])
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, "N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b, h], [y])
    path = tmp_path / "tie.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    probe = (
        "import pathlib; from honed.optimizer.onnx_graph import read_onnx; "
        f"print(read_onnx(pathlib.Path({str(path)!r})).inputs[2].batch_axis)"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in range(4)
    }
    assert seen == {"1"}
