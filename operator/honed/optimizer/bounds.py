"""What the search does not build: expensive candidates that what it has measured says cannot win.

Pure decisions over short timings (``Search.quick_p50``) of the candidates accepted so far; each
skip carries the figures that decided it, for the report's ``skipped`` list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from honed.optimizer.backends.base import CandidatePlan
from honed.optimizer.report import Skipped

# A follow-up that can at best run as fast as its plain sibling is built only when that sibling is
# at least this much faster than the best accepted candidate: short timings on a shared machine
# move by a few percent, and a follow-up always gives some of its sibling's speed back.
FOLLOW_UP_MARGIN = 1.1
# On CPU, PyTorch candidates (torch.compile at fp32 and bf16, bf16 eager) ran slower than the
# fastest ONNX Runtime or OpenVINO candidate of their precision in all 12 cases of the searches in
# benchmarks/cpu and benchmarks/engine (digits CNN, ResNet-50, BERT-base, MiniLM; 1.14x to 8.2x
# slower), so one is not built once a runtime at its precision is accepted: at best it would tie.
# (A 1.25x allowance let EfficientNet-Lite0 spend 55 of its 167 s search on a bf16 eager and a
# bf16 compile that could not win.) Where the export to ONNX fails, nothing bounds them.
TORCH_CPU_SLOWER = "1.14x-8.2x"


class Measured(Protocol):
    """A candidate already built and checked: its name and plan."""

    @property
    def name(self) -> str:
        """The plan's name, e.g. ``onnx-int8.openvino``."""
        ...

    @property
    def plan(self) -> CandidatePlan:
        """What was built."""
        ...


def torch_cpu_skip(plan: CandidatePlan, timed: Sequence[tuple[Measured, float]]) -> Skipped | None:
    """Skip a PyTorch CPU candidate at precision P once an ONNX Runtime or OpenVINO candidate at P is accepted.

    ``timed``: accepted candidates with their short-timing p50 (ms).
    """
    same = [(t, p) for t, p in timed if t.plan.precision == plan.precision and t.plan.backend != "torch"]
    if not same:
        return None
    runtime, p50 = min(same, key=lambda item: item[1])
    return Skipped(
        name=plan.name,
        reason=(
            f"not built: {runtime.name} at the same precision is accepted ({p50:.3g} ms), and PyTorch on CPU "
            f"ran {TORCH_CPU_SLOWER} slower than the fastest runtime of its precision in every search measured"
        ),
    )


def follow_up_skip(
    follow: CandidatePlan, sibling: Measured, ceiling: float, timed: Sequence[tuple[Measured, float]]
) -> Skipped | None:
    """Skip ``follow`` when its rejected ``sibling`` (``ceiling`` ms, its best case) cannot win by the margin."""
    why = f"it can at best run as fast as {sibling.name} ({ceiling:.3g} ms, rejected by the gate)"
    return _cannot_win(follow.name, ceiling, why, timed)


def _cannot_win(name: str, ceiling: float, why: str, timed: Sequence[tuple[Measured, float]]) -> Skipped | None:
    """A skip for ``name`` when ``ceiling`` is not ``FOLLOW_UP_MARGIN`` faster than the best of ``timed``."""
    if not timed:
        return None
    best, best_p50 = min(timed, key=lambda item: item[1])
    if ceiling * FOLLOW_UP_MARGIN <= best_p50:
        return None
    return Skipped(
        name=name,
        reason=(
            f"not built: {why}, which is not {FOLLOW_UP_MARGIN}x faster than {best.name} "
            f"({best_p50:.3g} ms), accepted already"
        ),
    )
