"""How the engine calls a PyTorch model: inputs by name, outputs flattened into named tensors.

Models return a tensor, a tuple or list, a dict, a transformers ``ModelOutput``, a named tuple or
a dataclass, nested any way. ONNX, torch.export, the runtimes, the accuracy gate and Triton all
need one flat, ordered list of named tensors, so every path calls the user's module through a
``Convention`` and ``flatten`` here: the names given at export are the names everywhere after.

Naming: a single tensor is ``output``; the entries of a dict, a ModelOutput (its ``None`` fields
are left out, as ModelOutput leaves them out itself), a named tuple or a dataclass keep their
keys; a top-level tuple or list gives ``output_0``, ``output_1``...; nested entries join with
``.`` (``hidden_states.0``, ``output_1.logits``). ``None`` entries are skipped.

torch is imported inside the functions that need it, so ``sources`` can use the signature helpers
without loading it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from honed.errors import InputError
from honed.optimizer.tensors import BATCH_NAME, DEFAULT_OPEN_DIM, TensorSpec, open_axes, shape_text

OUTPUT = "output"
# A transformers model returns its key/value cache (a Cache object, not a tensor) when use_cache is on.
USE_CACHE = "use_cache"


class OutputError(InputError):
    """An output that is not a tensor: ``path`` names where it sits, ``kind`` its type."""

    def __init__(self, message: str, *, hint: str, path: str = "", kind: str = "") -> None:
        """Build the error; ``path`` and ``kind`` are kept for callers that reword it."""
        super().__init__(message, hint=hint)
        self.path = path
        self.kind = kind


def forward_parameters(module: Any) -> list[str]:
    """The names forward() takes positionally or by keyword (empty when it cannot be inspected)."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


@dataclass
class Convention:
    """How one model is called: the same for export, the eager baseline and serving.

    ``keywords``: forward() names every input, so inputs go by name; an input the user leaves out
    (``token_type_ids``) then keeps forward()'s default instead of shifting the others along.
    ``kwargs``: fixed keyword arguments honed adds (``use_cache=False``); the report notes each.
    """

    input_names: list[str]
    keywords: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_module(cls, module: Any, inputs: list[TensorSpec]) -> Convention:
        """The convention for ``module``: by name when forward() names every input, else by position."""
        names = [spec.name for spec in inputs]
        params = forward_parameters(module)
        return cls(names, keywords=bool(params) and set(names) <= set(params))

    def __call__(self, module: Any, args: Sequence[Any]) -> Any:
        """Call ``module`` with ``args`` (in input order) under this convention."""
        if self.keywords:
            return module(**dict(zip(self.input_names, args, strict=True)), **self.kwargs)
        return module(*args, **self.kwargs)

    def to_options(self) -> dict[str, Any]:
        """The convention as JSON-ready artifact options."""
        return {"input_names": list(self.input_names), "keywords": self.keywords, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Convention:
        """The convention stored by ``to_options``."""
        return cls(list(options["input_names"]), bool(options.get("keywords")), dict(options.get("kwargs", {})))


def flatten(result: Any) -> list[tuple[str, Any]]:
    """The tensors in ``result`` with their names, in a fixed order; an OutputError names any non-tensor."""
    import torch

    found: list[tuple[str, Any]] = []

    def walk(value: Any, path: str, top: bool) -> None:
        if isinstance(value, torch.Tensor):
            found.append((path, value))
            return
        if value is None:
            return
        for key, item in _children(value, path, top):
            walk(item, key if top else f"{path}.{key}", False)

    walk(result, OUTPUT, True)
    if not found:
        raise OutputError(
            f"the model returns {_a(_kind(result))} holding no tensors",
            hint="return the tensors to serve: a tensor, or a tuple, list, dict or ModelOutput of tensors",
            path=OUTPUT,
            kind=_kind(result),
        )
    names = [name for name, _ in found]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise OutputError(
            f"the model's outputs flatten to the same name twice: {', '.join(repeated)}",
            hint="rename the dict keys so nested entries (joined with '.') and top-level keys differ",
        )
    return found


def _children(value: Any, path: str, top: bool) -> list[tuple[str, Any]]:
    """The named items of a container output at ``path``; an OutputError for anything else."""
    if isinstance(value, Mapping):  # dicts, and ModelOutput (an OrderedDict of its non-None fields)
        return [(str(key), item) for key, item in value.items()]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return list(zip(value._fields, value, strict=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, (tuple, list)):
        return [(f"{OUTPUT}_{i}" if top else str(i), item) for i, item in enumerate(value)]
    raise _not_a_tensor(path, value, top)


def _kind(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _a(kind: str) -> str:
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _not_a_tensor(path: str, value: Any, top: bool) -> OutputError:
    kind = _kind(value)
    if top:
        message = f"the model returns {_a(kind)}, not tensors"
    else:
        message = f"the model's output {path!r} is {_a(kind)}, not a tensor"
    leave_out = "" if top else f" without {path!r}"
    return OutputError(
        message,
        hint="forward() must return tensors only: a tensor, or a tuple, list, dict or ModelOutput of tensors "
        f"(wrap the model in a module whose forward() returns the tensors you serve{leave_out})",
        path=path,
        kind=kind,
    )


@dataclass
class Probe:
    """One eager call of the model: how it was called, and its outputs as named tensors."""

    convention: Convention
    outputs: list[tuple[str, Any]]
    notes: list[str]


def probe(module: Any, inputs: list[TensorSpec], args: Sequence[Any]) -> Probe:
    """Call ``module`` once as the engine will; errors name the cause and the fix (InputError).

    A transformers decoder returns its key/value cache (a Cache object) unless ``use_cache=False``:
    that cache feeds the next generation step, which a model served one request at a time never
    takes, so it is turned off for the call (the config is left as it is) and the report says so.
    """
    import torch

    convention = Convention.for_module(module, inputs)
    with torch.inference_mode():
        result = _call(module, convention, args, inputs)
        try:
            return Probe(convention, flatten(result), [])
        except OutputError as exc:
            if USE_CACHE not in forward_parameters(module):
                raise
            first = exc
        convention.kwargs[USE_CACHE] = False
        try:
            outputs = flatten(_call(module, convention, args, inputs))
        except InputError:
            raise first from None
    note = (
        f"the model's output {first.path!r} is {_a(first.kind)}, not a tensor: honed calls forward(..., "
        f"use_cache=False) so it returns tensors only (the model's config is unchanged; a served model "
        f"is called once per request and never feeds a cache back)"
    )
    return Probe(convention, outputs, [note])


def _call(module: Any, convention: Convention, args: Sequence[Any], inputs: list[TensorSpec]) -> Any:
    try:
        return convention(module, args)
    except Exception as exc:
        raise call_failure(exc, inputs, forward_parameters(module)) from None


# Phrases PyTorch uses when a tensor's dtype or shape does not fit the operation it reaches.
_INPUT_MISFIT = re.compile(
    r"scalar type|dtype|shape|size of tensor|sizes? mismatch|dimension|index out of range|"
    r"mat1 and mat2|expected .* but (?:got|found)|must match|out of bounds",
    re.IGNORECASE,
)


def call_failure(exc: Exception, inputs: list[TensorSpec], params: list[str]) -> InputError:
    """Why calling the model failed, with the fix for that cause rather than a guess."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    given = ", ".join(f"{s.name}:{s.dtype}{shape_text(s.shape, s.sample_axis)}" for s in inputs)
    message = f"the model raises {type(exc).__name__} when called with {given}: {text[:300]}"
    if isinstance(exc, TypeError) and "argument" in text:
        return InputError(
            message,
            hint=f"forward() takes ({', '.join(params) or '?'}): name --input or the --data arrays after "
            "those parameters",
        )
    opened = [spec for spec in inputs if open_axes(spec)]
    if opened:
        # The call ran with a length honed picked, which the model may not take (audio shorter than a kernel).
        where = ", ".join(f"{s.name} axis {', '.join(map(str, open_axes(s)))}" for s in opened)
        spec = opened[0]
        example = ",".join(
            BATCH_NAME if axis == spec.sample_axis else ("N" if dim == -1 else str(dim))
            for axis, dim in enumerate(spec.shape)
        )
        return InputError(
            f"{message} (honed called it with length {DEFAULT_OPEN_DIM} on the axes --input leaves open: {where})",
            hint=f"give those axes the length the model takes, e.g. --input {spec.name}:{spec.dtype}:{example} "
            "with N a real length, or pass --data with real inputs",
        )
    if _INPUT_MISFIT.search(text):
        return InputError(message, hint="check --input shapes and dtypes against what forward() expects")
    return InputError(message, hint=f"it is raised {raised_at(exc)}: the model must run in eager PyTorch as given")


def raised_at(exc: BaseException) -> str:
    """The innermost frame outside torch, where the model's own code raised."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename]
    if not frames:
        return "inside torch"
    frame = frames[-1]
    return f"at {frame.filename}:{frame.lineno} in {frame.name}()"


def flat_module(module: Any, convention: Convention) -> Any:
    """``module`` as the exporters see it: forward(*inputs) -> a flat tuple of tensors, in ``flatten`` order.

    The exported program then has no model-specific output classes in its pytree (a ModelOutput
    would have to be registered in every process that loads it), and ONNX's legacy exporter sees
    a forward() with no defaults to fill in (it appends every default positionally, which clashes
    with transformers' keyword handling of ``use_cache``).
    """
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        # The legacy exporter reads a ScriptModule's own graph (it cannot be traced from inside a
        # wrapper: "not part of the active trace"); it flattens tuples in this same order.
        return module

    class FlatOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, *args: Any) -> tuple[Any, ...]:
            return tuple(tensor for _, tensor in flatten(convention(self.model, args)))

    return FlatOutputs().eval()
