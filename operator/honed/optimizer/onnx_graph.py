"""Read what the engine needs from an ONNX graph: I/O specs, attention, valid integer ranges."""

from __future__ import annotations

from pathlib import Path

from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec


def _dim_params(value_info) -> list[str]:
    return [d.dim_param for d in value_info.type.tensor_type.shape.dim]


def _batch_param(values: list) -> str:
    """The symbolic name of the batch dimension: the one most inputs carry on their first axis."""
    firsts = [params[0] for params in map(_dim_params, values) if params and params[0]]
    return max(set(firsts), key=firsts.count) if firsts else ""


def _with_batch_axis(spec: TensorSpec, params: list[str], batch: str) -> TensorSpec:
    """Mark tensors whose batch dimension sits off the first axis (RNN states: [layers, batch, hidden])."""
    if batch and params and params[0] != batch and batch in params:
        spec.batch_axis = params.index(batch)
    return spec


def _spec(value_info) -> TensorSpec:
    import onnx

    tensor_type = value_info.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, TypeError, ValueError):
        dtype = "float32"
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim]
    return TensorSpec(name=value_info.name, dtype=dtype, shape=shape)


def load_model_proto(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})".splitlines()[0],
            hint="re-export the model; check the file was fully downloaded",
        ) from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InputError(
            f"{path} fails the ONNX checker: {str(exc).splitlines()[0]}",
            hint="re-export the model with a current exporter",
        ) from None
    return model


def read_onnx(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    model = load_model_proto(path)
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    batch = _batch_param(graph_inputs)
    inputs = [_with_batch_axis(_spec(v), _dim_params(v), batch) for v in graph_inputs]
    outputs = [_with_batch_axis(_spec(v), _dim_params(v), batch) for v in model.graph.output]
    if not inputs or not outputs:
        raise InputError(f"{path} has no graph inputs or outputs", hint="export the model with its inputs")
    return inputs, outputs


def has_attention(path: Path) -> bool:
    """True for graphs with attention (Softmax between two MatMuls, or a fused Attention op)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = [node.op_type for node in model.graph.node]
    if any(op in {"Attention", "MultiHeadAttention"} for op in ops):
        return True
    return ops.count("Softmax") > 0 and ops.count("MatMul") >= 2 * max(1, ops.count("Softmax"))


def matmul_heavy(path: Path) -> bool:
    import onnx

    ops = [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]
    dense = sum(op in {"MatMul", "Gemm"} for op in ops)
    return dense > 0 and dense >= sum(op in {"Conv", "ConvTranspose"} for op in ops)


def integer_input_bounds(path: Path) -> dict[str, int]:
    """Upper bounds for integer inputs used as Gather indices into a table (token ids -> vocab size).

    Synthesized token ids beyond the embedding table would fail, so use the table's size.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    # Follow single-input casts so ids that are cast before the lookup are still found.
    aliases: dict[str, str] = {inp.name: inp.name for inp in model.graph.input}
    for node in model.graph.node:
        if node.op_type in {"Cast", "Identity", "Unsqueeze", "Reshape", "Flatten"} and node.input[0] in aliases:
            for out in node.output:
                aliases[out] = aliases[node.input[0]]
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in aliases:
            table = shapes.get(node.input[0])
            if table:
                name = aliases[node.input[1]]
                bounds[name] = min(bounds.get(name, table[0]), table[0])
    return bounds
