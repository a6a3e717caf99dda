"""The accuracy gate's data inside a build worker, for quantizers that check accuracy while they search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from honed.optimizer.backends.base import BuildContext
from honed.optimizer.data import batches, fixed_batch_of, samples_first
from honed.optimizer.tensors import TensorSpec
from honed.optimizer.validate import compare_named


@dataclass
class GateData:
    reference: dict[str, np.ndarray]
    labels: np.ndarray | None
    feeds: dict[str, np.ndarray]
    metric: str
    max_drop: float
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

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
        return batches(self.feeds, self.inputs, fixed_batch_of(self.inputs) or batch)

    def drop(self, per_call: list[list[np.ndarray]]) -> float:
        """The metric drop of a candidate's outputs, given call by call as the runtime returned them."""
        chunks = [samples_first(outputs, self.outputs) for outputs in per_call]
        stacked = {spec.name: np.concatenate([chunk[i] for chunk in chunks]) for i, spec in enumerate(self.outputs)}
        return compare_named(self.metric, self.reference, stacked, self.labels).drop
