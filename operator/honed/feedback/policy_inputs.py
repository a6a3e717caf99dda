"""The policy's inputs besides the metrics: what is deployed, what else could be, and history.

``FeedbackState`` is the policy's memory between evaluations. The operator persists it in
``status.feedback`` (camelCase JSON) and hands it back on the next timer tick, so the policy
stays a pure function and a restarted operator continues where it stopped.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from honed.feedback.decisions import Decision, Fallback, Number, Reoptimize, Retune
from honed.optimizer.report import Report

DAY = timedelta(days=1)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Deployment(_Camel):
    """What Triton serves now, as the operator last applied it."""

    candidate: str
    pool: str = ""
    version: str = ""
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    instance_count: int = 1
    max_instances: int = Field(default=1, ge=1, description="most instances the pool's resources allow")
    response_cache: bool = False
    cache_allowed: bool = Field(default=True, description="spec.serving.responseCache")
    benchmarked_batch_sizes: list[int] = Field(default_factory=list)
    optimizing: bool = Field(default=False, description="an optimization Job is running")
    deployed_at: datetime | None = Field(default=None, description="when this version became ready")

    @property
    def key(self) -> str:
        """``CANDIDATE@POOL/VERSION``; ``FeedbackState``'s per-deployment counters restart when it changes."""
        return f"{self.candidate}@{self.pool}/{self.version}"

    def after(
        self, decision: Decision, *, version: str | None = None, deployed_at: datetime | None = None
    ) -> Deployment:
        """What is deployed once ``decision`` is applied (``version``: the new config version)."""
        if isinstance(decision, Retune):
            changes = {
                "max_queue_delay_us": decision.max_queue_delay_us,
                "instance_count": decision.instance_count,
                "response_cache": decision.response_cache,
            }
            update: dict[str, object] = {k: v for k, v in changes.items() if v is not None}
        elif isinstance(decision, Fallback):
            update = {"candidate": decision.candidate, "pool": decision.pool, "benchmarked_batch_sizes": []}
        elif isinstance(decision, Reoptimize):
            update = {"optimizing": True}
        else:
            return self
        if version is not None:
            update["version"] = version
        if deployed_at is not None:
            update["deployed_at"] = deployed_at
        return self.model_copy(update=update)


class Option(_Camel):
    """An accepted candidate that could be served instead, with its benchmarked tail latency."""

    name: str
    pool: str = ""
    p99_ms_by_batch: dict[int, float] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """``NAME@POOL``, as ``FeedbackState.fallen_back_from`` lists it."""
        return f"{self.name}@{self.pool}"

    def p99_ms_at(self, batch: float) -> float | None:
        """Benchmarked p99 at the smallest measured batch >= ``batch``.

        Beyond the largest measured batch, time grows in proportion to the batch: a CPU that
        is already saturated at the largest batch does not get cheaper per item.
        """
        if not self.p99_ms_by_batch:
            return None
        sizes = sorted(self.p99_ms_by_batch)
        for size in sizes:
            if size >= batch:
                return self.p99_ms_by_batch[size]
        largest = sizes[-1]
        return self.p99_ms_by_batch[largest] * batch / largest


def options_from_report(report: Report, pool: str = "") -> list[Option]:
    """Every accepted candidate of one pool's report, with p99 per benchmarked batch size."""
    options = []
    for cand in report.accepted():
        by_batch = {int(size): lat.p99 for size, lat in cand.latency_by_batch_ms.items()}
        if cand.latency_ms is not None:
            by_batch.setdefault(1, cand.latency_ms.p99)
        options.append(Option(name=cand.name, pool=pool, p99_ms_by_batch=by_batch))
    return options


class DecisionRecord(_Camel):
    """The last decision as ``status.feedback.lastDecision`` shows it: action, reason, when, numbers."""

    action: str
    reason: str
    message: str
    at: datetime
    numbers: dict[str, Number] = Field(default_factory=dict)


class FeedbackState(_Camel):
    """The policy's memory between evaluations (see the module docstring); None = not known yet."""

    deployment: str | None = Field(default=None, description="Deployment.key the counters refer to")
    bad_windows: int = 0
    last_bad_end: datetime | None = None
    cache_bad_windows: int = 0
    shift_windows: int = 0
    retunes: int = Field(default=0, description="retunes applied to this deployment")
    episode_reoptimized: bool = Field(default=False, description="re-optimized since the SLO was last met")
    last_action_at: datetime | None = None
    reoptimizations: list[datetime] = Field(default_factory=list, description="in the last 24 h")
    fallen_back_from: list[str] = Field(default_factory=list, description="Option keys left for breaking SLO")
    cache_disabled_at: datetime | None = Field(default=None, description="when the loop turned the cache off")
    slo_met: bool | None = None
    metrics_available: bool | None = None
    last_decision: DecisionRecord | None = None

    def for_deployment(self, deployment: Deployment, now: datetime) -> FeedbackState:
        """Counters that describe one deployment start over when a new one serves."""
        recent = [t for t in self.reoptimizations if now - t < DAY]
        if self.deployment == deployment.key:
            return self.model_copy(update={"reoptimizations": recent})
        return self.model_copy(
            update={
                "deployment": deployment.key,
                "bad_windows": 0,
                "last_bad_end": None,
                "cache_bad_windows": 0,
                "shift_windows": 0,
                "retunes": 0,
                "reoptimizations": recent,
            }
        )

    def in_cooldown(self, now: datetime, cooldown_s: float) -> datetime | None:
        """The end of the cooldown when one is running, else None."""
        if self.last_action_at is None:
            return None
        until = self.last_action_at + timedelta(seconds=cooldown_s)
        return until if now < until else None

    def reoptimization_blocked(self, cap: int) -> str | None:
        """Why the daily cap forbids a re-optimization now, or None when one is allowed."""
        if cap <= 0:
            return "re-optimization is disabled (maxReoptimizationsPerDay is 0)"
        if len(self.reoptimizations) < cap:
            return None
        allowed_at = sorted(self.reoptimizations)[-cap] + DAY
        return f"daily cap of {cap} re-optimizations reached; next allowed at {allowed_at.isoformat()}"


def ceil_int(value: float) -> int:
    """``value`` rounded up to a whole batch or concurrency, at least 1; float noise does not round up."""
    # 7.0000001 from a rate ratio is batch 7, not 8.
    return max(1, math.ceil(value - 1e-6))
