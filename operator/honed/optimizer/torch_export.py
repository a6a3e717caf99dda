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
    """Load a TorchScript file on the CPU in eval mode; InputError when it is missing or not TorchScript."""
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
        elif dtype.kind == "b" or "mask" in spec.name.lower():
            # Masks of ones, as data.synthesize makes them: every position attended, as in real inputs.
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)  # index 0 is valid for any lookup table
    return feeds


def export_all(module: Any, source: SourceModel, work_dir: Path) -> None:
    """Name the model's outputs from one eager call, then export ONNX (and a program for factories).

    Both exporters get the module through ``torch_call.flat_module``, so the ONNX graph, the
    program and the eager baseline return the same named tensors in the same order.
    """
    import torch

    from honed.optimizer.torch_call import flat_module, probe

    feeds = example_feeds(source.inputs, batch=2)
    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in source.inputs)
    called = probe(module, source.inputs, args)
    source.call = called.convention.to_options()
    source.notes.extend(called.notes)
    source.outputs = [
        TensorSpec(name=name, dtype=str(o.dtype).replace("torch.", ""), shape=[-1, *list(o.shape[1:])])
        for name, o in called.outputs
    ]
    clashes = sorted({o.name for o in source.outputs} & {i.name for i in source.inputs})
    if clashes:
        raise InputError(
            f"the model's output(s) {clashes} have the name of an input",
            hint="rename them in what forward() returns (ONNX and Triton need distinct tensor names)",
        )
    flat = flat_module(module, called.convention)
    onnx_path = work_dir / "source.onnx"
    try:
        _export_onnx(flat, args, source, onnx_path)
        source.onnx_path = onnx_path
    except Exception as exc:
        source.export_error = f"ONNX export failed: {_first_line(exc)}"
        source.notes.append(source.export_error)
    if source.format == "pytorch":
        program = work_dir / "source.pt2"
        try:
            _export_program(flat, args, source, program)
            source.torch_path = program
        except Exception as exc:
            source.notes.append(f"torch.export failed, so torch.compile candidates are skipped: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


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
    _check_count(len(_onnx_outputs(path)), source, "the ONNX graph")


def _onnx_outputs(path: Path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def _check_count(found: int, source: SourceModel, where: str) -> None:
    """An exporter traces the model again; a model whose outputs change between calls cannot be named."""
    if found != len(source.outputs):
        raise ValueError(
            f"{where} has {found} outputs where the eager call gave {len(source.outputs)} "
            f"({', '.join(o.name for o in source.outputs)}): the model returns different outputs when traced"
        )


def _export_program(module: Any, args: tuple[Any, ...], source: SourceModel, path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} if s.shape and s.shape[0] == -1 else None for s in source.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # flat_module's forward(*inputs) takes the inputs as one varargs tuple, hence the nesting.
        program = torch.export.export(module, args, dynamic_shapes=(dynamic,), strict=False)
    _check_count(len(program.graph_signature.user_outputs), source, "the exported program")
    torch.export.save(program, str(path))
