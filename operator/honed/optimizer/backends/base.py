"""What every backend module provides (``Backend``), and the plans and contexts passed to it.

A backend module (``honed.optimizer.backends.<name>``) is a ``Backend``: mypy checks each module
against the protocol (``backends/__init__.py``). Runtimes are imported inside its functions,
never at module import, so a missing runtime makes that backend unavailable with a reason
(``missing_import``) instead of breaking the CLI; ``device_plans`` keeps a backend's plans to
the device it serves.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from honed.api.spec import DEFAULT_BATCH_SIZES
from honed.optimizer.report import Skipped
from honed.optimizer.tensors import TensorSpec

if TYPE_CHECKING:
    from honed.optimizer.artifact import ArtifactMeta, Runner


AS_GIVEN = "as_given"
"""Plan option the engine sets on the baseline of a PyTorch or TorchScript source: run the user's
model as given (the factory's module or the TorchScript file), not the exported program; a
backend that plans the same name for its own candidate leaves that one to the baseline."""


@dataclass(frozen=True)
class CandidatePlan:
    """One candidate to build: a backend, a precision, the representation it consumes and a variant, on a device.

    ``options`` carry backend-specific settings; they take no part in equality or hashing.
    """

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
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))


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
    # How to call a PyTorch source (torch_call.Convention options): inputs by name, honed's added kwargs.
    torch_call: dict[str, Any] = field(default_factory=dict)

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


class Backend(Protocol):
    """The contract of a backend module."""

    NAME: str  # the backend name used in reports and --backends

    def availability(self) -> str | None:
        """None when the runtime is usable here, else the reason it cannot run and the fix."""
        ...

    def plans(self, ctx: SearchContext) -> list[PlanOrSkip]:
        """The candidates it would try for this model, and those it skips with why."""
        ...

    def build(self, plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
        """Write the artifact of ``plan`` into ``out_dir`` (runs in a worker process)."""
        ...

    def load(self, meta: ArtifactMeta, directory: Path, threads: int | None) -> Runner:
        """Load an artifact this backend built, for inference."""
        ...


def missing_import(module: str, fix: str, *, problem: str = "is not installed") -> str | None:
    """None when ``module`` imports; else ``"<module> <problem> (<error>); <fix>"`` for ``availability()``."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} {problem} ({exc}); {fix}"
    return None


PlansFunction = Callable[[SearchContext], list[PlanOrSkip]]


def device_plans(
    device: str, availability: Callable[[], str | None] | None = None, *, skipped_as: str = ""
) -> Callable[[PlansFunction], PlansFunction]:
    """Decorate a backend's ``plans`` so that it plans only for searches on ``device``.

    With ``availability``, a runtime that cannot run here gives one ``Skipped(skipped_as)``
    carrying the reason instead of plans.
    """

    def decorate(plans: PlansFunction) -> PlansFunction:
        @functools.wraps(plans)
        def planned(ctx: SearchContext) -> list[PlanOrSkip]:
            if ctx.device != device:
                return []
            reason = availability() if availability is not None else None
            if reason is not None:
                return [Skipped(name=skipped_as, reason=reason)]
            return plans(ctx)

        return planned

    return decorate
