"""The accuracy gate's data inside a build worker, for quantizers that check accuracy while they search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from honed.optimizer.backends.base import BuildContext
from honed.optimizer.data import batches
from honed.optimizer.validate import compare


@dataclass
class GateData:
    reference: list[np.ndarray]
    labels: np.ndarray | None
    feeds: dict[str, np.ndarray]
    metric: str
    max_drop: float

    @classmethod
    def load(cls, options: dict[str, Any], ctx: BuildContext) -> GateData:
        """``options`` carries what the engine put in an accuracy-aware plan: reference path, metric, max drop."""
        with np.load(options["reference"]) as ref:
            reference = [ref[key] for key in ref.files]
        with np.load(ctx.calibration_path) as data:
            feeds = {spec.name: data[spec.name] for spec in ctx.inputs}
            labels = data["labels"] if options.get("labels") and "labels" in data.files else None
        return cls(reference, labels, feeds, options["metric"], float(options["max_drop"]))

    def calls(self, batch: int = 1) -> list[dict[str, np.ndarray]]:
        inputs = [_Spec(name, array.ndim) for name, array in self.feeds.items()]
        return batches(self.feeds, inputs, batch)  # type: ignore[arg-type]

    def drop(self, outputs: list[np.ndarray]) -> float:
        return compare(self.metric, self.reference, outputs, self.labels).drop


@dataclass
class _Spec:
    """Just enough of a TensorSpec for ``batches``: the name and whether the input has a batch axis."""

    name: str
    ndim: int

    @property
    def shape(self) -> list[int]:
        return [-1] * self.ndim
