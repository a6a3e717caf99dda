"""PyTorch sources -> fp32 ONNX (dynamic batch axis) and an exported program for torch candidates."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec

if TYPE_CHECKING:
    from honed.optimizer.sources import SourceModel

# A dimension the model leaves open (other than the batch axis) gets this length for export and data.
DEFAULT_OPEN_DIM = 16


def load_torchscript(path: Path) -> Any:
    import torch

    if not path.is_file():
        raise InputError(f"TorchScript model {path} not found", hint="check the path")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InputError(
            f"{path} is not a loadable TorchScript file: {str(exc).splitlines()[0]}",
            hint="save it with torch.jit.save(torch.jit.script(model) or trace(...))",
        ) from None
    module.eval()
    return module


def example_feeds(inputs: list[TensorSpec], batch: int) -> dict[str, np.ndarray]:
    """Deterministic, contiguous example inputs (batch 2 avoids exporters specialising batch 1)."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = [
            batch if i == 0 and d == -1 else (DEFAULT_OPEN_DIM if d == -1 else d) for i, d in enumerate(spec.shape)
        ]
        dtype = spec.np_dtype()
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)  # index 0 is valid for any lookup table
    return feeds


def flatten_outputs(result: Any) -> list[Any]:
    if isinstance(result, dict):
        return [v for value in result.values() for v in flatten_outputs(value)]
    if isinstance(result, (list, tuple)):
        return [v for value in result for v in flatten_outputs(value)]
    if hasattr(result, "to_tuple"):
        return flatten_outputs(result.to_tuple())
    return [result]


def export_all(module: Any, source: SourceModel, work_dir: Path) -> None:
    import torch

    feeds = example_feeds(source.inputs, batch=2)
    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in source.inputs)
    try:
        with torch.inference_mode():
            outputs = flatten_outputs(module(*args))
    except Exception as exc:
        raise InputError(
            f"the model fails on inputs {[(s.name, s.dtype, s.shape) for s in source.inputs]}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="check --input shapes and dtypes against what forward() expects",
        ) from None
    source.outputs = [
        TensorSpec(
            name=f"output{i}" if len(outputs) > 1 else "output",
            dtype=str(o.dtype).replace("torch.", ""),
            shape=[-1, *list(o.shape[1:])],
        )
        for i, o in enumerate(outputs)
    ]
    onnx_path = work_dir / "source.onnx"
    try:
        _export_onnx(module, args, source, onnx_path)
        source.onnx_path = onnx_path
    except Exception as exc:
        source.export_error = f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        source.notes.append(source.export_error)
    if source.format == "pytorch":
        program = work_dir / "source.pt2"
        try:
            _export_program(module, args, source, program)
            source.torch_path = program
        except Exception as exc:
            source.notes.append(f"torch.export failed ({type(exc).__name__}); torch.compile candidates skipped")


def _export_onnx(module: Any, args: tuple[Any, ...], source: SourceModel, path: Path) -> None:
    import torch

    dynamic_axes: dict[str, dict[int, str]] = {}
    for spec in [*source.inputs, *source.outputs]:
        axes = {i: ("batch" if i == 0 else f"{spec.name}_{i}") for i, d in enumerate(spec.shape) if d == -1}
        if axes:
            dynamic_axes[spec.name] = axes
    # The legacy exporter is several times faster than dynamo and handles ScriptModules.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=[s.name for s in source.inputs],
            output_names=[s.name for s in source.outputs],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def _export_program(module: Any, args: tuple[Any, ...], source: SourceModel, path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} if s.shape and s.shape[0] == -1 else None for s in source.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
    torch.export.save(program, str(path))
