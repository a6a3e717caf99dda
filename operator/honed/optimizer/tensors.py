"""Typed descriptions of model inputs and outputs, shared by the engine, the report and serving."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from honed.errors import InputError

# numpy dtype name -> Triton's config.pbtxt data type.
TRITON_DTYPES: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}

_ALIASES = {
    "fp32": "float32",
    "fp16": "float16",
    "fp64": "float64",
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int64",
}


def canonical_dtype(name: str) -> str:
    """Return the numpy dtype name for ``name`` or raise an InputError listing the choices."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in TRITON_DTYPES:
        raise InputError(
            f"unsupported dtype {name!r}",
            hint=f"use one of {', '.join(sorted(TRITON_DTYPES))}",
        )
    return key


class TensorSpec(BaseModel):
    """One named tensor. ``shape`` uses -1 for a dimension that varies (the batch axis first)."""

    name: str
    dtype: str = "float32"
    shape: list[int] = Field(default_factory=list)
    batch_axis: int | None = Field(
        default=None,
        description="axis that carries the batch when it is not the first (e.g. an RNN state [layers, batch, h])",
    )

    @property
    def batched(self) -> bool:
        """True when the first axis may vary, so requests can be stacked along it."""
        return bool(self.shape) and self.shape[0] == -1 and self.batch_axis in (None, 0)

    @property
    def sample_axis(self) -> int | None:
        """Where samples go in a model call: the batch axis, or None for a per-call input (a scalar, a constant)."""
        if self.batch_axis is not None:
            return self.batch_axis
        return 0 if self.shape and self.shape[0] == -1 else None

    @property
    def item_shape(self) -> list[int]:
        """The shape of one sample: everything but the batch axis."""
        axis = self.sample_axis
        return list(self.shape) if axis is None else [d for i, d in enumerate(self.shape) if i != axis]

    def np_dtype(self) -> np.dtype:
        """The numpy dtype of ``dtype``."""
        return np.dtype(self.dtype)


BATCH_NAME = "batch"
# A dimension the model leaves open (other than the batch axis) gets this length for export and data.
DEFAULT_OPEN_DIM = 16


def parse_input_option(text: str) -> TensorSpec:
    """Parse ``--input name:dtype:shape``; InputError naming the fix when it is malformed.

    The shape is comma-separated sizes, ``batch`` for the batch axis wherever it sits, and -1 or
    another name for any other axis that varies.
    """
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise InputError(
            f"--input {text!r} is not NAME:DTYPE:SHAPE",
            hint="write it like input_ids:int64:batch,128 (name the batch axis 'batch')",
        )
    name, dtype, shape_text = parts
    dims: list[int] = []
    batch_axis: int | None = None
    for dim in shape_text.replace("x", ",").split(","):
        dim = dim.strip()
        if not dim:
            continue
        if dim.lower() == BATCH_NAME:
            if batch_axis is not None:
                raise InputError(f"--input {text!r} names two batch axes", hint="name one axis 'batch'")
            batch_axis = len(dims)
        try:
            value = int(dim)
        except ValueError:
            value = -1  # a symbolic name such as "batch" or "seq" means the axis varies
        if value == 0 or value < -1:
            raise InputError(
                f"--input {text!r} has dimension {dim!r}", hint="dimensions are positive sizes, 'batch' or -1"
            )
        dims.append(value)
    return TensorSpec(name=name, dtype=canonical_dtype(dtype), shape=dims, batch_axis=batch_axis or None)


def infer_batch_axes(specs: list[TensorSpec], anchored: bool, open_axes: list[list[int]] | None = None) -> None:
    """Mark the batch axis of tensors that carry it off the first axis without saying so.

    An RNN state ``[layers, N, hidden]`` whose N is a dimension without a name (or a -1 in
    --input) is the batch when it is the tensor's only varying dimension and the model has a
    batch axis elsewhere (``anchored``); tensors may differ in which axis that is.
    ``open_axes`` narrows which varying axes may be the batch (for ONNX: not a named
    dimension that other inputs share, such as a sequence length).
    """
    if not anchored:
        return
    for index, spec in enumerate(specs):
        if spec.batch_axis is not None or not spec.shape or spec.shape[0] == -1:
            continue
        varying = [axis for axis, dim in enumerate(spec.shape) if dim == -1]
        if len(varying) == 1 and (open_axes is None or varying == open_axes[index]):
            spec.batch_axis = varying[0]


def has_batch_axis(specs: list[TensorSpec]) -> bool:
    """Whether any of ``specs`` has an axis that samples stack on."""
    return any(spec.sample_axis is not None for spec in specs)


def shape_text(shape: Sequence[int | str], batch_axis: int | None = None) -> str:
    """A shape as the user would write it: 'batch' for the batch axis, '?' for other varying axes."""
    return (
        "["
        + ", ".join(
            BATCH_NAME if axis == batch_axis else ("?" if dim == -1 else str(dim)) for axis, dim in enumerate(shape)
        )
        + "]"
    )


def open_axes(spec: TensorSpec) -> list[int]:
    """The axes of ``spec`` that vary other than its batch axis (a sequence length, an audio length)."""
    return [axis for axis, dim in enumerate(spec.shape) if dim == -1 and axis != spec.sample_axis]
