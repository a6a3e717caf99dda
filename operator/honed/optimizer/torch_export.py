"""PyTorch sources -> fp32 ONNX (dynamic batch axis) and an exported program for torch candidates."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from honed.errors import InputError
from honed.optimizer.tensors import DEFAULT_OPEN_DIM, TensorSpec, has_batch_axis, open_axes

if TYPE_CHECKING:
    from honed.optimizer.sources import SourceModel


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


def example_feeds(inputs: list[TensorSpec], batch: int, open_dim: int = DEFAULT_OPEN_DIM) -> dict[str, np.ndarray]:
    """Deterministic, contiguous example inputs (batch 2 avoids exporters specialising batch 1).

    ``batch`` goes on each input's batch axis (wherever it sits), ``open_dim`` on its other varying axes.
    """
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        axis = spec.sample_axis
        shape = [batch if i == axis else (open_dim if d == -1 else d) for i, d in enumerate(spec.shape)]
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
    flat = flat_module(module, called.convention)
    shapes = [list(o.shape) for _, o in called.outputs]
    at_batch = _shapes_at(flat, source.inputs, batch=3) if has_batch_axis(source.inputs) else None
    opened = any(open_axes(spec) for spec in source.inputs)
    at_open = _shapes_at(flat, source.inputs, batch=2, open_dim=DEFAULT_OPEN_DIM + 1) if opened else None
    source.outputs = [
        output_spec(name, str(o.dtype).replace("torch.", ""), shapes[i], _nth(at_batch, i), _nth(at_open, i))
        for i, (name, o) in enumerate(called.outputs)
    ]
    source.notes.extend(_mixing_notes([n for n, _ in called.outputs], shapes, at_batch))
    clashes = sorted({o.name for o in source.outputs} & {i.name for i in source.inputs})
    if clashes:
        raise InputError(
            f"the model's output(s) {clashes} have the name of an input",
            hint="rename them in what forward() returns (ONNX and Triton need distinct tensor names)",
        )
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


def _shapes_at(flat: Any, inputs: list[TensorSpec], batch: int, open_dim: int = DEFAULT_OPEN_DIM) -> Any:
    """The output shapes of one eager call at ``batch`` and ``open_dim``; None when the model refuses them."""
    import torch

    feeds = example_feeds(inputs, batch=batch, open_dim=open_dim)
    try:
        with torch.inference_mode():
            outputs = flat(*(torch.from_numpy(feeds[s.name]) for s in inputs))
    except Exception:
        return None
    return [list(o.shape) for o in outputs]


def _mixing_notes(names: list[str], shapes: list[list[int]], at_batch: list[list[int]] | None) -> list[str]:
    """A note for each output that grows with the batch on more than one axis (CLIP's ``[batch, batch]``)."""
    notes = []
    for name, shape, grown in zip(names, shapes, at_batch or [], strict=False):
        if len(grown) == len(shape) and sum(b * 2 == a * 3 for a, b in zip(shape, grown, strict=True)) > 1:
            notes.append(
                f"output {name} grows with the batch on more than one axis: each sample's values depend on "
                "the others in its batch, so requests batched together change each other's answers; serve it "
                "with dynamic batching off (spec.serving.dynamicBatching.enabled: false, "
                "honed serve --no-dynamic-batching)"
            )
    return notes


def _nth(shapes: list[list[int]] | None, index: int) -> list[int] | None:
    return shapes[index] if shapes is not None and index < len(shapes) else None


def output_spec(
    name: str, dtype: str, shape: list[int], at_batch: list[int] | None, at_open: list[int] | None
) -> TensorSpec:
    """An output's spec from its shape at the example call (batch 2) and at two variations of it.

    ``at_batch``: its shape at batch 3; the axis that grows with the batch is the output's batch
    axis, wherever it sits (an RNN state ``[layers, batch, hidden]``); an output no axis of which
    grows has no batch axis. ``at_open``: its shape with the inputs' other varying axes one longer;
    the axes that change are left open (-1). Without ``at_batch`` (the model has no batch axis, or
    refused batch 3) the first axis is taken as the batch.
    """
    dims = list(shape)
    if at_batch is None or len(at_batch) != len(shape):
        return TensorSpec(name=name, dtype=dtype, shape=[-1, *dims[1:]] if dims else [])
    if at_open is not None and len(at_open) == len(shape):
        dims = [-1 if a != b else d for d, a, b in zip(dims, shape, at_open, strict=True)]
    grown = [axis for axis, (a, b) in enumerate(zip(shape, at_batch, strict=True)) if a != b]
    batch_axis = next((axis for axis in grown if at_batch[axis] * 2 == shape[axis] * 3), None)
    for axis in grown:
        dims[axis] = -1
    return TensorSpec(name=name, dtype=dtype, shape=dims, batch_axis=batch_axis or None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _export_onnx(module: Any, args: tuple[Any, ...], source: SourceModel, path: Path) -> None:
    import torch

    dynamic_axes: dict[str, dict[int, str]] = {}
    for spec in [*source.inputs, *source.outputs]:
        batch_axis = spec.sample_axis
        axes = {i: ("batch" if i == batch_axis else f"{spec.name}_{i}") for i, d in enumerate(spec.shape) if d == -1}
        if axes:
            dynamic_axes[spec.name] = axes
    input_names, output_names = [s.name for s in source.inputs], [s.name for s in source.outputs]
    # The legacy exporter is several times faster than dynamo and handles ScriptModules; dynamo
    # covers the operators it lacks (aten::diff, which a transformers decoder called without an
    # attention mask reaches), so it is the fallback.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, args, str(path), dynamo=False, opset_version=17, dynamic_axes=dynamic_axes,
                do_constant_folding=True, input_names=input_names, output_names=output_names,
            )  # fmt: skip
        except Exception as legacy:
            if isinstance(module, torch.jit.ScriptModule):
                raise
            try:
                # flat_module's forward(*inputs) takes the inputs as one varargs tuple, hence the nesting.
                shapes = tuple({i: torch.export.Dim.DYNAMIC for i, d in enumerate(s.shape) if d == -1} or None
                               for s in source.inputs)  # fmt: skip
                logging.disable(logging.WARNING)  # it logs each torchvision operator it cannot register
                torch.onnx.export(module, args, str(path), dynamo=True, opset_version=18, dynamic_shapes=(shapes,),
                                  input_names=input_names, output_names=output_names)  # fmt: skip
            except Exception:
                raise legacy from None
            finally:
                logging.disable(logging.NOTSET)
            source.notes.append(
                f"the legacy ONNX exporter failed ({_first_line(legacy)}), so the model was exported with "
                "torch.onnx's dynamo exporter"
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
    dynamic = tuple({s.sample_axis: batch} if s.sample_axis is not None else None for s in source.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # flat_module's forward(*inputs) takes the inputs as one varargs tuple, hence the nesting.
        program = torch.export.export(module, args, dynamic_shapes=(dynamic,), strict=False)
    _check_count(len(program.graph_signature.user_outputs), source, "the exported program")
    torch.export.save(program, str(path))
