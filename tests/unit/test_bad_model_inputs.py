"""What a new user may hand `honed optimize`: each bad model, data or --out path is one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from honed.errors import InputError
from honed.optimizer.cli import make_out_dir
from honed.optimizer.data import check_arrays, read_npz
from honed.optimizer.onnx_graph import load_model_proto, read_onnx
from honed.optimizer.sources import detect_format
from honed.optimizer.tensors import TensorSpec


def relu_onnx(path: Path, ir_version: int, opset: int = 17) -> Path:
    """A one-node model stamped with ``ir_version``, as a newer onnx release would write it."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version  # set directly: make_model would refuse an IR newer than onnx knows
    onnx.save(model, str(path))
    return path


def test_a_directory_as_model_names_the_file_inside(tmp_path: Path) -> None:
    (tmp_path / "resnet").mkdir()
    (tmp_path / "resnet" / "model.onnx").write_bytes(b"")
    with pytest.raises(InputError) as err:
        detect_format(str(tmp_path / "resnet"))
    assert "MODEL" in err.value.message and "is a directory" in err.value.message
    assert err.value.hint is not None and str(tmp_path / "resnet" / "model.onnx") in err.value.hint


def test_a_directory_named_like_a_model_is_still_a_directory(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        detect_format(str(tmp_path / "model.onnx"))


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    taken = tmp_path / "report"
    taken.write_text("keep me")
    with pytest.raises(InputError) as err:
        make_out_dir(taken)
    assert "--out" in err.value.message and "existing file" in err.value.message
    assert taken.read_text() == "keep me"
    with pytest.raises(InputError, match=r"--out .* parent path is a file"):
        make_out_dir(taken / "sub")
    make_out_dir(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()


def test_empty_and_non_onnx_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        load_model_proto(empty)
    text = tmp_path / "notes.onnx"
    text.write_text("these are my notes, not a model\n")
    with pytest.raises(InputError, match="is not an ONNX model"):
        load_model_proto(text)


def test_a_truncated_model_does_not_parse(tmp_path: Path) -> None:
    whole = relu_onnx(tmp_path / "whole.onnx", 8)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        load_model_proto(cut)
    assert "cut.onnx" in err.value.message and err.value.hint and "download it again" in err.value.hint


def test_an_ir_version_newer_than_the_runtime_is_lowered_when_the_opsets_allow(tmp_path: Path) -> None:
    model = read_onnx(relu_onnx(tmp_path / "new.onnx", 14, opset=17), max_ir_version=13)
    assert model.stamped_ir_version == 14 and model.proto.ir_version == 13 and model.lowered
    assert [s.name for s in model.inputs] == ["x"]
    # An IR version newer than this onnx release knows at all (its checker refuses it) as well.
    import onnx

    beyond = read_onnx(relu_onnx(tmp_path / "beyond.onnx", onnx.IR_VERSION + 1), max_ir_version=None)
    assert beyond.proto.ir_version == onnx.IR_VERSION and beyond.lowered


def test_a_model_within_the_runtime_is_left_as_it_is(tmp_path: Path) -> None:
    model = read_onnx(relu_onnx(tmp_path / "ok.onnx", 8), max_ir_version=13)
    assert model.proto.ir_version == 8 and not model.lowered


def test_an_opset_beyond_the_runtime_names_both_versions_and_the_fix(tmp_path: Path) -> None:
    import onnx

    newest_opset = onnx.defs.onnx_opset_version()  # needs this onnx's newest IR version
    path = relu_onnx(tmp_path / "newop.onnx", onnx.IR_VERSION, opset=newest_opset)
    with pytest.raises(InputError) as err:
        read_onnx(path, max_ir_version=onnx.IR_VERSION - 1)
    message, hint = err.value.message, err.value.hint or ""
    assert f"IR version {onnx.IR_VERSION}" in message and f"IR {onnx.IR_VERSION - 1}" in message
    assert f"opset ai.onnx {newest_opset}" in message
    assert "opset_version=" in hint and "upgrade onnxruntime" in hint
    assert "--input" not in hint


def test_custom_domains_do_not_block_lowering(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    path = relu_onnx(tmp_path / "ms.onnx", 14)
    model = onnx.load(str(path))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    assert read_onnx(path, max_ir_version=13).proto.ir_version == 13


def test_onnxruntime_names_its_newest_ir_version() -> None:
    import onnx

    from honed.optimizer.backends.onnxruntime import max_ir_version

    found = max_ir_version()
    assert found is not None and 7 <= found <= onnx.IR_VERSION + 5


def test_data_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"--data .* is a directory"):
        read_npz(tmp_path)


def test_scalar_labels_are_an_error_not_a_crash(tmp_path: Path) -> None:
    spec = TensorSpec(name="x", dtype="float32", shape=[-1, 4])
    arrays = {"x": np.zeros((3, 4), np.float32), "labels": np.array(1)}
    with pytest.raises(InputError, match="'labels' has 0 rows for 3 samples"):
        check_arrays(arrays, [spec], tmp_path / "d.npz", None)


def test_data_with_a_dtype_that_does_not_cast(tmp_path: Path) -> None:
    spec = TensorSpec(name="ids", dtype="int64", shape=[-1, 4])
    with pytest.raises(InputError, match="'ids' is float32, the input needs int64"):
        check_arrays({"ids": np.zeros((3, 4), np.float32)}, [spec], tmp_path / "d.npz", None)
    with pytest.raises(InputError, match="the input needs int64"):
        check_arrays({"ids": np.array([["a"] * 4] * 3)}, [spec], tmp_path / "d.npz", None)


def _shapeless_output_onnx(path: Path, op: str) -> Path:
    """A model whose graph output declares its element type but no shape (the ONNX checker refuses that)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op, ["x"], ["y"], domain="" if op == "Relu" else "custom.ops")
    graph = helper.make_graph([node], "g", [x], [y])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("custom.ops", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_an_output_without_a_shape_gets_the_inferred_one(tmp_path: Path) -> None:
    model = read_onnx(_shapeless_output_onnx(tmp_path / "m.onnx", "Relu"))
    assert [(s.name, s.shape, s.sample_axis) for s in model.outputs] == [("y", [-1, 4], 0)]


def test_an_output_whose_shape_cannot_be_inferred_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        read_onnx(_shapeless_output_onnx(tmp_path / "m.onnx", "Mystery"))
    assert "output(s) y" in err.value.message and "no shape" in err.value.message
    assert "checker" not in err.value.message and "make_tensor_value_info" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("given", "problem", "fix"),
    [
        ("x:float32:batch,4", "it fixes axis 0 at 1", "--input x:float32:1,4"),
        ("x:int64:1,4", "its dtype is float32", "--input x:float32:1,4"),
        ("x:float32:1,4,4", "it has 2 axes", "--input x:float32:1,4"),
        ("x:float32:1,5", "it fixes axis 1 at 4", "--input x:float32:1,4"),
    ],
)
def test_an_input_option_that_contradicts_the_model_names_what_it_declares(
    tmp_path: Path, given: str, problem: str, fix: str
) -> None:
    """Refused before anything is built, with the model's own declaration, not a runtime's words later."""
    from onnx import TensorProto, helper

    from honed.optimizer.sources import load_source
    from honed.optimizer.tensors import parse_input_option

    path = relu_onnx(tmp_path / "m.onnx", 8)
    model = onnx_with_input(path, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]))
    with pytest.raises(InputError) as err:
        load_source(str(model), tmp_path, [parse_input_option(given)])
    assert f"--input {given}" in err.value.message and problem in err.value.message
    assert "x is float32 [1, 4] in the model" in err.value.message and fix in (err.value.hint or "")


def test_an_input_option_that_fits_the_model_is_taken(tmp_path: Path) -> None:
    from honed.optimizer.sources import load_source
    from honed.optimizer.tensors import parse_input_option

    source = load_source(str(relu_onnx(tmp_path / "m.onnx", 8)), tmp_path, [parse_input_option("x:float32:batch,4")])
    assert [(s.name, s.shape, s.sample_axis) for s in source.inputs] == [("x", [-1, 4], 0)]


def onnx_with_input(path: Path, value: Any) -> Path:
    """``path`` with its graph input (and output) replaced by ``value``'s declaration."""
    import onnx

    model = onnx.load(str(path))
    for values in (model.graph.input, model.graph.output):
        name = values[0].name
        values[0].CopyFrom(value)
        values[0].name = name
    onnx.save(model, str(path))
    return path


def test_an_input_without_a_shape_asks_for_it_and_takes_it_from_the_option(tmp_path: Path) -> None:
    """Runtimes run a model whose input declares no shape; honed needs --input for it, not a re-export."""
    from onnx import TensorProto, helper

    from honed.optimizer.sources import load_source
    from honed.optimizer.tensors import parse_input_option

    model = onnx_with_input(
        relu_onnx(tmp_path / "m.onnx", 8), helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    )
    with pytest.raises(InputError) as err:
        load_source(str(model), tmp_path, [])
    assert "declares no shape for input(s) x" in err.value.message and "checker" not in err.value.message
    assert "--input x:float32:batch," in (err.value.hint or "")
    source = load_source(str(model), tmp_path, [parse_input_option("x:float32:batch,4")])
    assert [(s.name, s.shape, s.sample_axis) for s in source.inputs] == [("x", [-1, 4], 0)]
