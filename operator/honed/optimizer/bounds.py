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
# slower). Their ceiling is taken as that candidate's speed with this much to spare.
TORCH_CPU_REACH = 1.25


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
    """Skip a PyTorch CPU candidate at precision P that cannot beat the best accepted one by the margin.

    ``timed``: accepted candidates with their short-timing p50 (ms). The PyTorch candidate's
    ceiling is ``TORCH_CPU_REACH`` times faster than the fastest ONNX Runtime or OpenVINO candidate
    at P; without one at P, it is built.
    """
    same = [p for t, p in timed if t.plan.precision == plan.precision and t.plan.backend != "torch"]
    if not same:
        return None
    ceiling = min(same) / TORCH_CPU_REACH
    why = (
        f"PyTorch on CPU at {plan.precision} can at best reach {ceiling:.3g} ms "
        f"({TORCH_CPU_REACH}x the fastest {plan.precision} runtime measured, {min(same):.3g} ms)"
    )
    return _cannot_win(plan.name, ceiling, why, timed)


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
