"""What every backend module provides, and the plans and contexts passed to it.

A backend module (``honed.optimizer.backends.<name>``) exposes:

- ``NAME``: the backend name used in reports and ``--backends``;
- ``availability() -> str | None``: None when its runtime imports, else the reason it cannot run;
- ``plans(ctx: SearchContext) -> list[CandidatePlan | Skipped]``: what it would try for this model;
- ``build(plan, ctx: BuildContext, out_dir) -> ArtifactMeta``: write the artifact (runs in a worker);
- ``load(meta, directory, threads) -> Runner``: load an artifact for inference.

Runtimes are imported inside those functions, never at module import, so a missing runtime
makes that backend unavailable with a reason instead of breaking the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from honed.optimizer.report import Skipped
from honed.optimizer.tensors import TensorSpec


@dataclass(frozen=True)
class CandidatePlan:
    backend: str
    precision: str  # fp32 | fp16 | bf16 | int8 | int8-dynamic | int8-mixed | int8-aa | fp8
    source: str = "onnx"  # the representation the runtime consumes: onnx | torch | torchscript
    variant: str = ""  # e.g. eager | compile; empty means the backend's single way
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        """torch-fp32.eager, torch-bf16.compile, onnx-int8.openvino, onnx-int8-aa.onnxruntime (accuracy-aware)."""
        if self.backend == "torch" and self.variant:
            return f"{self.source}-{self.precision}.{self.variant}"
        tag = "".join(word[0] for word in self.variant.split("-")) if self.variant else ""
        return f"{self.source}-{self.precision}{'-' + tag if tag else ''}.{self.backend}"


@dataclass
class SearchContext:
    """What backends need to decide which candidates make sense for this model on this machine."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source_format: str  # onnx | torchscript | pytorch
    precisions: list[str]
    cpu_flags: set[str]
    device: str = "cpu"
    attention: bool = False  # the graph has attention (MatMul-softmax-MatMul); picks quantization presets
    matmul_heavy: bool = False  # more MatMul/Gemm than Conv: dynamic int8 quantization pays off
    has_torch_program: bool = False
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])


@dataclass
class BuildContext:
    """Everything a worker needs to build one candidate; paths only, so it pickles cheaply."""

    onnx_path: Path | None  # fp32 ONNX of the model (None when export failed)
    torch_path: Path | None  # exported program (.pt2) or TorchScript file for torch candidates
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    calibration_path: Path  # npz with one array per input
    threads: int
    attention: bool = False
    work_dir: Path = Path(".")

    def calibration(self, limit: int | None = None) -> dict[str, np.ndarray]:
        """Calibration arrays, samples first (for builders that batch them themselves)."""
        with np.load(self.calibration_path) as data:
            return {spec.name: data[spec.name][:limit] for spec in self.inputs}

    def calibration_calls(self, limit: int | None = None) -> list[dict[str, np.ndarray]]:
        """Calibration samples as single model calls (batch 1, or the model's pinned batch)."""
        from honed.optimizer.data import batches, fixed_batch_of

        with np.load(self.calibration_path) as data:
            feeds = {spec.name: data[spec.name][:limit] for spec in self.inputs}
        return batches(feeds, self.inputs, fixed_batch_of(self.inputs) or 1)


PlanOrSkip = CandidatePlan | Skipped
