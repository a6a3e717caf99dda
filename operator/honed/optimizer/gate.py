"""The accuracy gate: whether a candidate's outputs are still the original model's.

``verdict`` is the gate's decision, used by the engine for every candidate and by the GPU
tests and benchmarks; ``GateData`` carries the gate's data into a build worker for quantizers
that check accuracy while they search. The scores themselves are ``honed.optimizer.validate``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from honed.optimizer.backends.base import BuildContext
from honed.optimizer.data import batches, fixed_batch_of, samples_first
from honed.optimizer.report import MetricResult
from honed.optimizer.tensors import TensorSpec
from honed.optimizer.validate import NonFiniteOutputError, PaddingMask, compare, compare_named, padding_mask


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on one candidate.

    Attributes:
        accepted: the candidate's metric drop is within the limit.
        metric: its score against the original; None when there is no finite score (the
            candidate's outputs hold NaN or inf), which the gate always rejects.
        reason: why it was rejected, worded for a report or status; empty when accepted.
    """

    accepted: bool
    metric: MetricResult | None
    reason: str = ""


def verdict(
    metric: str,
    reference: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    candidate: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    labels: np.ndarray | None,
    max_drop: float,
    mask: PaddingMask | None = None,
) -> Verdict:
    """Accept a candidate whose ``metric`` drop against ``reference`` is at most ``max_drop``.

    Outputs are matched by name when both are mappings, by position when both are sequences.
    With ``mask`` (``validate.padding_mask`` of the inputs), per-position outputs are compared
    at real positions only.

    Raises:
        ValueError: the outputs cannot be compared (names, counts or shapes differ): the
            candidate is broken rather than inaccurate.
        TypeError: one side's outputs are named and the other's positional.
    """
    try:
        if isinstance(reference, Mapping) and isinstance(candidate, Mapping):
            result = compare_named(metric, dict(reference), dict(candidate), labels, mask)
        elif not isinstance(reference, Mapping) and not isinstance(candidate, Mapping):
            result = compare(metric, list(reference), list(candidate), labels, mask)
        else:
            raise TypeError("reference and candidate outputs must both be named or both be positional")
    except NonFiniteOutputError as exc:
        return Verdict(False, None, str(exc))
    if not (math.isfinite(result.value) and math.isfinite(result.drop)):
        # NaN compares as within any limit, and a report cannot hold it.
        return Verdict(False, None, f"{result.name} is {result.value} (the original's outputs are not finite)")
    if result.drop <= max_drop:
        return Verdict(True, result)
    return Verdict(False, result, f"{result.name} drop {result.drop:.4g} exceeds --max-metric-drop {max_drop}")


@dataclass
class GateData:
    """The gate's reference outputs, validation feeds and limit, loaded inside a build worker."""

    reference: dict[str, np.ndarray]
    labels: np.ndarray | None
    feeds: dict[str, np.ndarray]
    metric: str
    max_drop: float
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def mask(self) -> PaddingMask | None:
        """The padding mask the engine's gate applies, read from the same feeds."""
        return padding_mask(self.feeds)

    @classmethod
    def load(cls, options: dict[str, Any], ctx: BuildContext) -> GateData:
        """``options`` carries what the engine put in an accuracy-aware plan: reference path, metric, max drop."""
        with np.load(options["reference"]) as ref:
            reference = {key: ref[key] for key in ref.files}
        with np.load(ctx.calibration_path) as data:
            feeds = {spec.name: data[spec.name] for spec in ctx.inputs}
            labels = data["labels"] if options.get("labels") and "labels" in data.files else None
        return cls(reference, labels, feeds, options["metric"], float(options["max_drop"]), ctx.inputs, ctx.outputs)

    def calls(self, batch: int = 1) -> list[dict[str, np.ndarray]]:
        """The validation feeds split into runtime calls of ``batch`` samples (the model's own batch if fixed)."""
        return batches(self.feeds, self.inputs, fixed_batch_of(self.inputs) or batch)

    def drop(self, per_call: list[list[np.ndarray]]) -> float:
        """The metric drop of a candidate's outputs, given call by call as the runtime returned them.

        Infinite when the outputs hold NaN or inf where the original's are finite.
        """
        chunks = [samples_first(outputs, self.outputs) for outputs in per_call]
        stacked = {spec.name: np.concatenate([chunk[i] for chunk in chunks]) for i, spec in enumerate(self.outputs)}
        try:
            return compare_named(self.metric, self.reference, stacked, self.labels, self.mask).drop
        except NonFiniteOutputError:
            return math.inf
