"""Validation/calibration data: a user's .npz checked against the model's inputs, or synthesized."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from honed.errors import InputError
from honed.optimizer.tensors import DEFAULT_OPEN_DIM, TensorSpec, shape_text

LABELS = "labels"


@dataclass
class Dataset:
    """Validation and calibration data: one array per model input, samples first, and optional labels."""

    feeds: dict[str, np.ndarray]  # one array per input, first axis = samples
    labels: np.ndarray | None
    synthesized: bool
    path: str | None = None

    @property
    def samples(self) -> int:
        """How many samples the data holds."""
        return len(next(iter(self.feeds.values())))

    def save(self, path: Path) -> Path:
        """Write the feeds (and labels) to ``path`` as an .npz; returns ``path``."""
        arrays = dict(self.feeds)
        if self.labels is not None:
            arrays[LABELS] = self.labels
        np.savez(path, **arrays)  # type: ignore[arg-type]
        return path


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a user's .npz; InputError naming the fix when it is missing or unreadable."""
    if path.is_dir():
        raise InputError(f"--data {path} is a directory", hint="give the .npz file itself")
    if not path.is_file():
        raise InputError(f"data file {path} not found", hint="pass an existing .npz with --data")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"data file {path} is not a readable .npz ({exc})",
            hint="write it with numpy.savez(path, input_name=array, labels=array)",
        ) from None


def npz_shapes(arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each array's dtype name and shape, by array name."""
    return {name: (array.dtype.name, tuple(array.shape)) for name, array in arrays.items()}


def check_arrays(
    arrays: dict[str, np.ndarray], inputs: list[TensorSpec], path: Path, fixed_batch: int | None
) -> Dataset:
    """Match arrays to inputs by name (or position for one input); errors name the array and the fix."""
    labels = arrays.pop(LABELS, None)
    if len(inputs) == 1 and len(arrays) == 1 and inputs[0].name not in arrays:
        arrays = {inputs[0].name: next(iter(arrays.values()))}
    missing = [spec.name for spec in inputs if spec.name not in arrays]
    if missing:
        raise InputError(
            f"data file {path} has no array for input(s) {missing} (it has {sorted(arrays)})",
            hint="save one array per model input under the input's name, plus optional 'labels'",
        )
    feeds: dict[str, np.ndarray] = {}
    counts = set()
    for spec in inputs:
        array = arrays[spec.name]
        feeds[spec.name] = _conform(array, spec, path, fixed_batch)
        counts.add(len(feeds[spec.name]))
    if len(counts) != 1:
        raise InputError(
            f"data file {path}: arrays have different sample counts {sorted(counts)}",
            hint="every input array needs the same first-axis length",
        )
    samples = counts.pop()
    if samples == 0:
        raise InputError(f"data file {path} holds zero samples", hint="add at least one sample per input")
    if labels is not None and (labels.ndim == 0 or len(labels) != samples):
        raise InputError(
            f"data file {path}: 'labels' has {len(labels) if labels.ndim else 0} rows for {samples} samples",
            hint="give one label per sample",
        )
    return Dataset(feeds=feeds, labels=labels, synthesized=False, path=str(path))


def fixed_batch_of(inputs: list[TensorSpec]) -> int | None:
    """The batch size a model pins, or None when some input carries a batch axis that varies."""
    if not inputs or any(spec.sample_axis is not None for spec in inputs):
        return None  # inputs without a batch axis (scalars, constants) ride along with each call
    firsts = {spec.shape[0] for spec in inputs if spec.shape}
    return max(firsts) if firsts else 1


def call_axis(spec: TensorSpec, fixed: bool) -> int | None:
    """The axis of a model call that samples are stacked on; None = one value per call (no samples axis)."""
    if fixed:
        return 0 if spec.shape else None
    return spec.sample_axis


def item_dims(spec: TensorSpec, fixed: bool) -> list[int]:
    """The dims of one sample: the shape without the axis samples are stacked on."""
    axis = call_axis(spec, fixed)
    return list(spec.shape) if axis is None else [d for i, d in enumerate(spec.shape) if i != axis]


def _conform(array: np.ndarray, spec: TensorSpec, path: Path, fixed_batch: int | None) -> np.ndarray:
    expected = spec.shape
    fixed = fixed_batch is not None
    item = item_dims(spec, fixed)
    where = f"data file {path}, array {spec.name!r}"
    shown = shape_text(expected, None if fixed else spec.sample_axis)
    if fixed_batch is not None and expected and expected[0] == fixed_batch and array.ndim == len(expected) + 1:
        # Samples stacked on an extra leading axis for a model with a pinned batch axis.
        array = array.reshape(-1, *array.shape[2:])
    if array.ndim != len(item) + 1:
        raise InputError(
            f"{where} has shape {list(array.shape)}; the input's shape is {shown}, so the file needs "
            f"{shape_text(['samples', *item])}{_unknown_axes(spec, fixed)}",
            hint=_unknown_axes_hint(spec, fixed) or "first axis = samples, the rest must match one sample of the input",
        )
    for axis, (have, want) in enumerate(zip(array.shape[1:], item, strict=True), start=1):
        if want != -1 and have != want:
            raise InputError(
                f"{where}: axis {axis} is {have}, the input needs {want} (shape {shown})",
                hint="resize or re-encode the data to the model's input shape",
            )
    want_dtype = spec.np_dtype()
    if array.dtype != want_dtype:
        if not np.can_cast(array.dtype, want_dtype, casting="same_kind") and not (
            array.dtype.kind in "iub" and want_dtype.kind in "iu"
        ):
            raise InputError(f"{where} is {array.dtype}, the input needs {want_dtype}", hint=f"save it as {want_dtype}")
        array = array.astype(want_dtype)
    return np.ascontiguousarray(array)


def _unknown_axes(spec: TensorSpec, fixed: bool) -> str:
    """Say which varying axes honed could not place, instead of showing a -1 to copy."""
    if fixed or spec.sample_axis is not None or -1 not in spec.shape:
        return ""
    axes = [str(axis) for axis, dim in enumerate(spec.shape) if dim == -1]
    return (
        f" (? = axis {', '.join(axes)} of {spec.name!r} varies and the model does not say whether it is "
        "the batch axis, so it is taken as part of each sample)"
    )


def _unknown_axes_hint(spec: TensorSpec, fixed: bool) -> str:
    if not _unknown_axes(spec, fixed):
        return ""
    axis = spec.shape.index(-1)
    named = ",".join("batch" if i == axis else ("?" if d == -1 else str(d)) for i, d in enumerate(spec.shape))
    return (
        f"if axis {axis} is the batch, name it: --input {spec.name}:{spec.dtype}:{named} (replace any other ? "
        f"with its size), and save the array as [samples, rest of the shape]"
    )


def synthesize(inputs: list[TensorSpec], samples: int, int_bounds: dict[str, int], seed: int = 0) -> Dataset:
    """Inputs drawn from the specs: normal floats, token ids inside the model's lookup tables."""
    rng = np.random.default_rng(seed)
    fixed = fixed_batch_of(inputs) is not None
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = [samples, *(DEFAULT_OPEN_DIM if d == -1 else d for d in item_dims(spec, fixed))]
        dtype = spec.np_dtype()
        lowered = spec.name.lower()
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b" or "mask" in lowered:
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        elif ("type" in lowered or "segment" in lowered) and spec.name not in int_bounds:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
        else:
            high = int_bounds.get(spec.name, 2)
            feeds[spec.name] = rng.integers(0, max(1, high), size=shape).astype(dtype)
    return Dataset(feeds=feeds, labels=None, synthesized=True)


def _slice(array: np.ndarray, spec: TensorSpec, fixed: bool, index: np.ndarray | slice, first: int) -> np.ndarray:
    axis = call_axis(spec, fixed)
    if axis is None:
        return np.ascontiguousarray(array[first])
    chunk = array[index]
    return np.ascontiguousarray(np.moveaxis(chunk, 0, axis) if axis else chunk)


def batches(feeds: dict[str, np.ndarray], inputs: list[TensorSpec], size: int) -> list[dict[str, np.ndarray]]:
    """Split samples into model calls of ``size``, stacked on each input's batch axis.

    Inputs without a batch axis (scalars, constants) take the value of the call's first sample.
    """
    samples = len(next(iter(feeds.values())))
    fixed = fixed_batch_of(inputs) is not None
    return [
        {spec.name: _slice(feeds[spec.name], spec, fixed, slice(start, start + size), start) for spec in inputs}
        for start in range(0, samples, size)
    ]


def tile_to(feeds: dict[str, np.ndarray], inputs: list[TensorSpec], size: int) -> dict[str, np.ndarray]:
    """One call's worth of inputs with exactly ``size`` samples (repeating data when there are fewer)."""
    samples = len(next(iter(feeds.values())))
    fixed = fixed_batch_of(inputs) is not None
    index = np.arange(size) % samples
    return {spec.name: _slice(feeds[spec.name], spec, fixed, index, 0) for spec in inputs}


def samples_first(outputs: list[np.ndarray], specs: list[TensorSpec]) -> list[np.ndarray]:
    """Outputs with their batch axis moved first, so predictions concatenate sample by sample."""
    return [
        np.moveaxis(out, spec.batch_axis, 0) if spec.batch_axis and out.ndim > spec.batch_axis else out
        for out, spec in zip(outputs, specs, strict=False)
    ]
