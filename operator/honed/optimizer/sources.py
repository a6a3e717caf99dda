"""Load a model given on the command line: an ONNX file, a TorchScript file or ``module:factory``.

Every source ends as an fp32 ONNX file (what ONNX Runtime and OpenVINO consume) plus, for
PyTorch sources, the original module for the eager baseline and torch candidates.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec, has_batch_axis, infer_batch_axes, shape_text

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript", ".jit"}


@dataclass
class SourceModel:
    """The model as loaded: format, specs, its fp32 ONNX and PyTorch program where they exist, report notes."""

    format: str  # onnx | torchscript | pytorch
    location: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    onnx_path: Path | None = None
    torch_path: Path | None = None  # TorchScript file, or the exported program (.pt2)
    factory: str | None = None  # module:factory for PyTorch sources
    call: dict[str, Any] = field(default_factory=dict)  # torch_call.Convention options for PyTorch sources
    export_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's inputs pin, or None when the first axis varies."""
        from honed.optimizer.data import fixed_batch_of

        return fixed_batch_of(self.inputs)


def detect_format(model: str) -> str:
    """``onnx``, ``torchscript`` or ``pytorch`` (``module:factory``), from the name or the file's first bytes.

    InputError for a directory or a missing file.
    """
    path = Path(model)
    if path.is_dir():
        raise InputError(f"MODEL {model!r} is a directory", hint=_directory_hint(path))
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        return "torchscript"
    if ":" in model and not path.exists():
        return "pytorch"
    if path.exists():
        with path.open("rb") as handle:
            head = handle.read(4)
        return "torchscript" if head.startswith(b"PK") else "onnx"
    raise InputError(
        f"model {model!r} not found",
        hint="give an existing .onnx or TorchScript file, or a PyTorch factory as package.module:function",
    )


def _directory_hint(path: Path) -> str:
    """Name the model files inside, so the fix is one copy-paste away."""
    suffixes = {".onnx", *TORCHSCRIPT_SUFFIXES}
    try:
        inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    except OSError:
        inside = []
    if inside:
        return f"give the model file inside it, e.g. honed optimize {inside[0]}"
    return "give the .onnx or TorchScript (.pt) file itself, not the directory holding it"


def apply_overrides(specs: list[TensorSpec], overrides: list[TensorSpec], kind: str) -> list[TensorSpec]:
    """``specs`` with the ``--input`` overrides applied by name; the overrides alone when there are no specs.

    InputError for an override that names no input of the model.
    """
    by_name = {spec.name: spec for spec in specs}
    for override in overrides:
        if specs and override.name not in by_name:
            raise InputError(
                f"--input {override.name!r} is not an input of the model",
                hint=f"the model's {kind} are: {', '.join(by_name) or '(none)'}",
            )
        by_name[override.name] = override
    if not specs:
        return list(overrides)
    return [by_name[spec.name] for spec in specs]


def check_against_model(declared: list[TensorSpec], overrides: list[TensorSpec]) -> None:
    """InputError for an ``--input`` that contradicts the model's own declaration: dtype, rank or a fixed size.

    Runtimes refuse such inputs only once the baseline is built, in words that name neither the
    option nor the value the model wants.
    """
    by_name = {spec.name: spec for spec in declared}
    for given in overrides:
        model = by_name.get(given.name)
        if model is None or not model.shape:  # an unknown name is apply_overrides' to refuse; no shape: no claim
            continue
        dims = [str(d) for d in given.shape]
        if given.sample_axis is not None:
            dims[given.sample_axis] = "batch"
        same_rank = len(given.shape) == len(model.shape)
        clash = [axis for axis, size in enumerate(model.shape) if size > 0 and same_rank and given.shape[axis] != size]
        if given.dtype == model.dtype and same_rank and not clash:
            continue
        fits = [
            str(size) if size > 0 else dims[axis] if same_rank else "batch" if axis == model.sample_axis else "-1"
            for axis, size in enumerate(model.shape)
        ]
        if given.dtype != model.dtype:
            problem = f"its dtype is {model.dtype}"
        elif not same_rank:
            problem = f"it has {len(model.shape)} axes"
        else:
            problem = f"it fixes axis {clash[0]} at {model.shape[clash[0]]}"
        raise InputError(
            f"--input {given.name}:{given.dtype}:{','.join(dims)} does not fit the model: {problem} "
            f"({given.name} is {model.dtype} {shape_text(model.shape, model.sample_axis)} in the model)",
            hint=f"write --input {given.name}:{model.dtype}:{','.join(fits)} or leave {given.name} out; "
            "the runtimes take no other; to vary a fixed axis, re-export the model with it dynamic",
        )


def load_source(
    model: str,
    work_dir: Path,
    overrides: list[TensorSpec],
    data_shapes: dict[str, tuple[str, tuple[int, ...]]] | None = None,
) -> SourceModel:
    """Load ``model`` and produce its fp32 ONNX in ``work_dir``; errors are InputErrors."""
    fmt = detect_format(model)
    if fmt == "onnx":
        return _load_onnx(Path(model), work_dir, overrides)
    from honed.optimizer import torch_export

    if fmt == "torchscript":
        module = torch_export.load_torchscript(Path(model))
        source = SourceModel("torchscript", model, [], [], torch_path=Path(model))
    else:
        module = load_factory(model)
        source = SourceModel("pytorch", model, [], [], factory=model)
    source.inputs = _torch_inputs(module, overrides, data_shapes, model)
    torch_export.export_all(module, source, work_dir)
    return source


def _load_onnx(path: Path, work_dir: Path, overrides: list[TensorSpec]) -> SourceModel:
    from honed.optimizer.backends.onnxruntime import max_ir_version
    from honed.optimizer.onnx_graph import ir_note, read_onnx

    if not path.is_file():
        raise InputError(f"ONNX model {str(path)!r} not found", hint="check the path")
    read = read_onnx(path, max_ir_version(), {spec.name: spec for spec in overrides})
    check_against_model(read.inputs, overrides)
    inputs = apply_overrides(read.inputs, overrides, "inputs")
    given = {spec.name for spec in overrides}
    infer_batch_axes([spec for spec in inputs if spec.name in given], has_batch_axis(inputs))
    source = SourceModel("onnx", str(path), inputs, read.outputs, onnx_path=path)
    if read.rewritten:
        # Every candidate builds from this copy; the user's file stays as it is.
        source.onnx_path = work_dir / f"{path.stem}.ir{read.proto.ir_version}.onnx"
        _save_onnx(read.proto, source.onnx_path)
    if read.lowered:
        source.notes.append(ir_note(path, read.stamped_ir_version, read.proto.ir_version))
    return source


def _save_onnx(proto: Any, target: Path) -> None:
    import onnx

    big = proto.ByteSize() > 1_900_000_000  # protobuf's 2 GiB limit
    onnx.save_model(proto, str(target), save_as_external_data=big, location=f"{target.name}.data")


def load_factory(spec: str) -> Any:
    """Import ``package.module:function`` and call it; it returns an nn.Module (eval mode is forced)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"PyTorch model {spec!r} is not module:factory", hint="e.g. mypkg.models:resnet")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"cannot import {module_name!r} for model {spec!r}: {exc}",
            hint="run from the directory holding the module or install its package",
        ) from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise InputError(f"{module_name!r} has no callable {attr!r}", hint="name a function returning a module")
    try:
        model = factory()
    except Exception as exc:
        from honed.optimizer.torch_call import raised_at

        raise InputError(
            f"factory {spec!r} raised {type(exc).__name__}: {exc}",
            hint=f"it is raised {raised_at(exc)}: fix the factory there (honed calls it with no arguments)",
        ) from None
    if isinstance(model, tuple):
        model = model[0]
    if not hasattr(model, "eval") or not callable(model):
        raise InputError(f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    return model


def _torch_inputs(
    module: Any,
    overrides: list[TensorSpec],
    data_shapes: dict[str, tuple[str, tuple[int, ...]]] | None,
    model: str,
) -> list[TensorSpec]:
    """Names from forward()'s signature; dtypes and shapes from --input or the data file."""
    from honed.optimizer.torch_call import forward_parameters

    params = forward_parameters(module)
    given = {spec.name: spec for spec in overrides}
    if data_shapes:
        for name, (dtype, shape) in data_shapes.items():
            if name != "labels" and name not in given:
                given[name] = TensorSpec(name=name, dtype=dtype, shape=[-1, *shape[1:]])
    if not given:
        raise InputError(
            f"PyTorch model {model!r} does not say its input shapes",
            hint="pass --input NAME:DTYPE:SHAPE (e.g. --input x:float32:batch,3,224,224) or --data DATA.npz",
        )
    if params and set(given) <= set(params):
        return [given[name] for name in params if name in given]
    if len(given) == 1 or not params:
        return list(given.values())
    raise InputError(
        f"inputs {sorted(given)} do not match forward() parameters {params}",
        hint="name --input or the data file's arrays after forward()'s parameters",
    )
