"""Read what the engine needs from an ONNX graph: I/O specs, attention, valid integer ranges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec, has_batch_axis, infer_batch_axes

if TYPE_CHECKING:
    from onnx import ModelProto, ValueInfoProto

STANDARD_DOMAINS = {"ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}


def shapeless(value: ValueInfoProto) -> bool:
    """A tensor declared with its element type but no shape (runtimes accept it; the ONNX checker does not)."""
    return value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")


def _dim_params(value_info: ValueInfoProto) -> list[str]:
    return [d.dim_param for d in value_info.type.tensor_type.shape.dim]


def _batch_param(values: list[ValueInfoProto]) -> str:
    """The symbolic name of the batch dimension: the one most inputs carry on their first axis.

    A tie goes to the earliest input's name, so the same file reads the same in every process.
    """
    firsts = [params[0] for params in map(_dim_params, values) if params and params[0]]
    return max(dict.fromkeys(firsts), key=firsts.count) if firsts else ""


def _with_batch_axis(spec: TensorSpec, params: list[str], batch: str) -> TensorSpec:
    """Mark tensors whose batch dimension sits off the first axis (RNN states: [layers, batch, hidden])."""
    if batch and params and params[0] != batch and batch in params:
        spec.batch_axis = params.index(batch)
    return spec


def _open_axes(value_info: ValueInfoProto, graph_inputs: list[ValueInfoProto]) -> list[int]:
    """Varying axes that may be the batch: unnamed, or named only here (an exporter's generated name).

    A name another input shares (``seq`` on both input_ids and position_ids) is a known axis
    that is not the batch, whatever its position.
    """
    shared = {p for other in graph_inputs if other.name != value_info.name for p in _dim_params(other) if p}
    dims = value_info.type.tensor_type.shape.dim
    return [
        axis
        for axis, d in enumerate(dims)
        if not (d.HasField("dim_value") and d.dim_value > 0) and (not d.dim_param or d.dim_param not in shared)
    ]


def _spec(value_info: ValueInfoProto) -> TensorSpec:
    import onnx

    tensor_type = value_info.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, TypeError, ValueError):
        dtype = "float32"
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim]
    return TensorSpec(name=value_info.name, dtype=dtype, shape=shape)


def load_model_proto(path: Path, max_ir_version: int | None = None) -> tuple[Any, int]:
    """Parse and check ``path``; a model newer than ``max_ir_version`` comes back lowered to it when it can be.

    Returns the model and the IR version the file was stamped with.
    """
    model, stamped, _ = _load(path, max_ir_version, {})
    return model, stamped


def _load(path: Path, max_ir_version: int | None, shapes: Mapping[str, TensorSpec]) -> tuple[Any, int, list[str]]:
    """``load_model_proto`` that also writes missing I/O shapes into the model; returns their names too."""
    import onnx

    if path.stat().st_size == 0:
        raise InputError(
            f"MODEL {path} is an empty file (0 bytes)",
            hint="the export or download did not finish; export or download the model again",
        )
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise InputError(
            f"MODEL {path} is not an ONNX model: it does not parse as one ({why})",
            hint="give an .onnx file written by an ONNX exporter; if it was downloaded, download it again "
            "(a truncated file does not parse)",
        ) from None
    if model.ir_version == 0 and not model.graph.node and not model.opset_import:
        # Some non-ONNX bytes happen to parse as an empty protobuf message.
        raise InputError(
            f"MODEL {path} is not an ONNX model: it holds no graph and no IR version",
            hint="give an .onnx file written by an ONNX exporter",
        )
    stamped = int(model.ir_version)
    limit = min(onnx.IR_VERSION, max_ir_version or onnx.IR_VERSION)
    if model.ir_version > limit:
        lower_ir_version(model, limit, path, runtime_limit=max_ir_version)
    supplied = give_input_shapes(model, path, shapes)
    supplied += fill_output_shapes(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InputError(
            f"MODEL {path} fails the ONNX checker: {str(exc).splitlines()[0]}",
            hint="re-export the model with a current exporter",
        ) from None
    return model, stamped, supplied


def give_input_shapes(model: ModelProto, path: Path, shapes: Mapping[str, TensorSpec]) -> list[str]:
    """Write the ``--input`` shapes (``shapes``) into graph inputs declared without one; returns their names.

    Runtimes run such models, but nothing says what to feed them: an input left without a shape
    is refused naming it and the option that gives it.
    """
    import onnx

    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [value for value in model.graph.input if value.name not in initializers]
    unshaped = [value for value in graph_inputs if shapeless(value)]
    missing = [value for value in unshaped if value.name not in shapes]
    if missing:
        examples = []
        for value in missing:
            try:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
            except (KeyError, TypeError, ValueError):
                dtype = "float32"
            examples.append(f"--input {value.name}:{dtype}:batch,<sizes>")
        raise InputError(
            f"MODEL {path} declares no shape for input(s) {', '.join(value.name for value in missing)}",
            hint=f"give each its shape ('batch' for the batch axis), e.g. {' '.join(examples)}, "
            "or re-export the model with input shapes",
        )
    batch = _batch_param(graph_inputs) or "batch"
    for value in unshaped:
        spec = shapes[value.name]
        shape = value.type.tensor_type.shape
        shape.SetInParent()
        for axis, size in enumerate(spec.shape):
            dim = shape.dim.add()
            if axis == spec.sample_axis:
                dim.dim_param = batch
            elif size > 0:
                dim.dim_value = size
    return [value.name for value in unshaped]


def fill_output_shapes(model: ModelProto, path: Path) -> list[str]:
    """Give graph outputs that carry no shape the one ONNX shape inference works out.

    Runtimes run such models, but the ONNX checker refuses them and the serving config needs
    each output's rank; an output inference cannot shape is refused naming it and the fix.
    """
    import onnx

    missing = [out.name for out in model.graph.output if shapeless(out)]
    if not missing:
        return []
    try:
        inferred = {out.name: out for out in onnx.shape_inference.infer_shapes(model).graph.output}
    except Exception:
        inferred = {}
    for out in model.graph.output:
        found = inferred.get(out.name)
        if shapeless(out) and found is not None and not shapeless(found):
            out.type.tensor_type.shape.CopyFrom(found.type.tensor_type.shape)
    left = [out.name for out in model.graph.output if shapeless(out)]
    if left:
        raise InputError(
            f"MODEL {path} declares no shape for output(s) {', '.join(left)}, "
            "and ONNX shape inference cannot work it out",
            hint="export the model with output shapes (e.g. dynamic_axes/dynamic_shapes in torch.onnx.export), "
            "or set them in the graph's outputs with onnx.helper.make_tensor_value_info and save it again",
        )
    return missing


def lower_ir_version(model: ModelProto, target: int, path: Path, runtime_limit: int | None) -> None:
    """Rewrite ``model.ir_version`` to ``target`` when every opset it imports exists at that IR version.

    Newer ``onnx`` releases stamp their own (newer) IR version on models whose operators an
    older runtime reads fine; the IR number alone then blocks the load. A model importing an
    opset newer than ``target`` allows is refused with both versions and the fix.
    """
    import onnx

    have = model.ir_version
    # Custom domains (com.microsoft, ...) carry no IR requirement; a standard opset onnx does
    # not know is newer than anything this onnx could lower to.
    standard = [o for o in model.opset_import if (o.domain or "ai.onnx") in STANDARD_DOMAINS]
    try:
        needed = onnx.helper.find_min_ir_version_for(standard, ignore_unknown=False)
    except ValueError:
        needed = have
    reader = f"ONNX Runtime (reads up to IR {runtime_limit})" if runtime_limit == target else f"onnx (IR {target})"
    if needed > target:
        opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
        newest = max(row[2] for row in onnx.helper.VERSION_TABLE if row[1] <= target)
        raise InputError(
            f"MODEL {path} has IR version {have} and imports opset {opsets}, newer than {reader} supports",
            hint=f"re-export the model with opset {newest} or older (e.g. torch.onnx.export(..., "
            f"opset_version={newest})), or upgrade onnxruntime and onnx",
        )
    model.ir_version = target


def ir_note(path: Path, original: int, lowered: int) -> str:
    """The report note for a model run at a lower IR version than its file states."""
    return (
        f"{path.name} has IR version {original}, newer than the runtimes here read (up to IR {lowered}); "
        f"its opsets exist at IR {lowered}, so it was run as IR {lowered} "
        "(re-export with an older onnx, or upgrade onnxruntime, to silence this)"
    )


@dataclass
class OnnxModel:
    """An ONNX file's input and output specs and its proto (IR-lowered when the runtimes here read only older IR)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    proto: Any  # onnx.ModelProto, possibly with a lowered ir_version
    stamped_ir_version: int  # what the file says
    supplied_shapes: list[str] = field(default_factory=list)  # I/O declared without a shape that honed gave one

    @property
    def rewritten(self) -> bool:
        """Whether the proto differs from the file (IR lowered, shapes supplied): candidates need a copy."""
        return self.lowered or bool(self.supplied_shapes)

    @property
    def lowered(self) -> bool:
        """Whether the proto's IR version was lowered from the file's."""
        return int(self.proto.ir_version) != self.stamped_ir_version


def read_onnx(
    path: Path, max_ir_version: int | None = None, shapes: Mapping[str, TensorSpec] | None = None
) -> OnnxModel:
    """Input and output specs of ``path`` plus the (possibly IR-lowered) model proto.

    ``shapes`` (the ``--input`` specs by name) give inputs the file declares without a shape theirs.
    """
    model, stamped, supplied = _load(path, max_ir_version, shapes or {})
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    batch = _batch_param(graph_inputs)
    inputs = [_with_batch_axis(_spec(v), _dim_params(v), batch) for v in graph_inputs]
    outputs = [_with_batch_axis(_spec(v), _dim_params(v), batch) for v in model.graph.output]
    anchored = has_batch_axis(inputs)
    infer_batch_axes(inputs, anchored, [_open_axes(v, graph_inputs) for v in graph_inputs])
    infer_batch_axes(outputs, anchored, [_open_axes(v, graph_inputs) for v in model.graph.output])
    if not inputs or not outputs:
        raise InputError(f"{path} has no graph inputs or outputs", hint="export the model with its inputs")
    return OnnxModel(inputs, outputs, model, stamped, supplied)


def has_attention(path: Path) -> bool:
    """True for graphs with attention (Softmax between two MatMuls, or a fused Attention op)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = [node.op_type for node in model.graph.node]
    if any(op in {"Attention", "MultiHeadAttention"} for op in ops):
        return True
    return ops.count("Softmax") > 0 and ops.count("MatMul") >= 2 * max(1, ops.count("Softmax"))


def matmul_heavy(path: Path) -> bool:
    """True when the graph has MatMul/Gemm nodes and no fewer of them than convolutions: dynamic int8 pays off."""
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
