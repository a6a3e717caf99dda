"""Validation/calibration data: a user's .npz checked against the model's inputs, or synthesized."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec
from honed.optimizer.torch_export import DEFAULT_OPEN_DIM

LABELS = "labels"


@dataclass
class Dataset:
    feeds: dict[str, np.ndarray]  # one array per input, first axis = samples
    labels: np.ndarray | None
    synthesized: bool
    path: str | None = None

    @property
    def samples(self) -> int:
        return len(next(iter(self.feeds.values())))

    def save(self, path: Path) -> Path:
        arrays = dict(self.feeds)
        if self.labels is not None:
            arrays[LABELS] = self.labels
        np.savez(path, **arrays)  # type: ignore[arg-type]
        return path


def read_npz(path: Path) -> dict[str, np.ndarray]:
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
    if labels is not None and len(labels) != samples:
        raise InputError(
            f"data file {path}: 'labels' has {len(labels)} rows for {samples} samples",
            hint="give one label per sample",
        )
    return Dataset(feeds=feeds, labels=labels, synthesized=False, path=str(path))


def _conform(array: np.ndarray, spec: TensorSpec, path: Path, fixed_batch: int | None) -> np.ndarray:
    expected = spec.shape
    item = expected[1:] if expected else []
    where = f"data file {path}, array {spec.name!r}"
    if fixed_batch is not None and expected and expected[0] == fixed_batch and array.ndim == len(expected) + 1:
        # Samples stacked on an extra leading axis for a model with a pinned batch axis.
        array = array.reshape(-1, *array.shape[2:])
    if array.ndim != len(expected):
        raise InputError(
            f"{where} has shape {list(array.shape)} but the input expects {expected}",
            hint="first axis = samples, the rest must match the input's shape",
        )
    for axis, (have, want) in enumerate(zip(array.shape[1:], item, strict=True), start=1):
        if want != -1 and have != want:
            raise InputError(
                f"{where}: axis {axis} is {have}, the input needs {want} (shape {expected})",
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


def synthesize(inputs: list[TensorSpec], samples: int, int_bounds: dict[str, int], seed: int = 0) -> Dataset:
    """Inputs drawn from the specs: normal floats, token ids inside the model's lookup tables."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        dims = [DEFAULT_OPEN_DIM if d == -1 else d for d in spec.shape[1:]]
        shape = [samples, *dims] if spec.shape else [samples]
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


def batches(feeds: dict[str, np.ndarray], inputs: list[TensorSpec], size: int) -> list[dict[str, np.ndarray]]:
    """Split samples into model calls of ``size`` along the first axis (scalars go one per call)."""
    samples = len(next(iter(feeds.values())))
    out = []
    for start in range(0, samples, size):
        call = {}
        for spec in inputs:
            array = feeds[spec.name]
            call[spec.name] = array[start] if not spec.shape else np.ascontiguousarray(array[start : start + size])
        out.append(call)
    return out


def tile_to(feeds: dict[str, np.ndarray], inputs: list[TensorSpec], size: int) -> dict[str, np.ndarray]:
    """One call's worth of inputs with exactly ``size`` samples (repeating data when there are fewer)."""
    samples = len(next(iter(feeds.values())))
    index = np.arange(size) % samples
    return {
        spec.name: (feeds[spec.name][0] if not spec.shape else np.ascontiguousarray(feeds[spec.name][index]))
        for spec in inputs
    }
