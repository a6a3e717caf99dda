"""Choose the winner across pools: pure functions over the pools' reports.

Each pool's Job ranked its own candidates on its own hardware; here they meet. Latency and
throughput compare directly; cost turns throughput into price per million inferences with
each pool's price: ``price_per_hour / (3600 * throughput) * 1e6``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from honed.api.spec import Objective
from honed.api.status import CandidateSummary, Verdict
from honed.optimizer.report import Candidate, Report
from honed.settings import Pool

FailureReason = Literal["AllPoolsFailed", "NoCandidateWithinDrop", "NoCandidateWithinBudget", "NoCandidates"]


@dataclass(frozen=True)
class PoolOutcome:
    """What one pool's optimization produced: a report, or why there is none."""

    pool: Pool
    report: Report | None = None
    error: str | None = None


@dataclass(frozen=True)
class Criteria:
    objective: Objective
    max_metric_drop: float
    latency_budget_ms: float | None = None


@dataclass(frozen=True)
class Scored:
    pool: Pool
    candidate: Candidate
    verdict: Verdict
    reason: str = ""

    @property
    def p50(self) -> float | None:
        return None if self.candidate.latency_ms is None else self.candidate.latency_ms.p50

    @property
    def p99(self) -> float | None:
        return None if self.candidate.latency_ms is None else self.candidate.latency_ms.p99

    @property
    def throughput(self) -> float:
        return self.candidate.best_throughput()

    @property
    def drop(self) -> float | None:
        return None if self.candidate.metric is None else self.candidate.metric.drop

    @property
    def cost(self) -> float | None:
        return cost_per_million(self.pool.price_per_hour, self.throughput)

    def label(self) -> str:
        return f"{self.candidate.name} on {self.pool.name}"

    def summary(self, verdict: Verdict | None = None) -> CandidateSummary:
        return CandidateSummary(
            pool=self.pool.name,
            name=self.candidate.name,
            backend=self.candidate.backend,
            precision=self.candidate.precision,
            p50_ms=significant(self.p50),
            p99_ms=significant(self.p99),
            throughput=significant(self.throughput or None),
            metric_drop=significant(self.drop),
            size_bytes=self.candidate.size_bytes,
            cost_per_million=significant(self.cost),
            speedup=significant(self.candidate.speedup),
            verdict=verdict or self.verdict,
            reason=self.reason,
        )


@dataclass(frozen=True)
class Selection:
    winner: Scored | None
    ranked: list[Scored]
    failure: FailureReason | None = None
    message: str = ""


def significant(value: float | None, digits: int = 4) -> float | None:
    """Round for the status: people read it, and 17 digits of a timing are noise."""
    return None if value is None else float(f"{value:.{digits}g}")


def cost_per_million(price_per_hour: float | None, throughput: float) -> float | None:
    """Price of a million inferences on a node running at ``throughput`` items/s."""
    if price_per_hour is None or throughput <= 0:
        return None
    return price_per_hour / (3600.0 * throughput) * 1e6


def _score(pool: Pool, candidate: Candidate, criteria: Criteria) -> Scored:
    if candidate.status == "failed":
        return Scored(pool, candidate, "failed", candidate.reason or "failed")
    if candidate.status == "rejected":
        return Scored(pool, candidate, "rejected", candidate.reason or "rejected by the engine")
    drop = None if candidate.metric is None else candidate.metric.drop
    if drop is not None and drop > criteria.max_metric_drop:
        return Scored(pool, candidate, "rejected", f"metric drop {drop:.4g} > {criteria.max_metric_drop:g}")
    if candidate.latency_ms is None:
        return Scored(pool, candidate, "failed", "no latency measured")
    if criteria.latency_budget_ms is not None and candidate.latency_ms.p99 > criteria.latency_budget_ms:
        return Scored(
            pool,
            candidate,
            "over-budget",
            f"p99 {candidate.latency_ms.p99:.3g} ms > budget {criteria.latency_budget_ms:g} ms",
        )
    if criteria.objective in ("throughput", "cost") and candidate.best_throughput() <= 0:
        return Scored(pool, candidate, "failed", "no throughput measured")
    if criteria.objective == "cost" and pool.price_per_hour is None:
        return Scored(pool, candidate, "failed", f"pool {pool.name} has no pricePerHour")
    return Scored(pool, candidate, "eligible")


def _objective_key(item: Scored, objective: Objective) -> tuple:
    p50 = item.p50 if item.p50 is not None else float("inf")
    p99 = item.p99 if item.p99 is not None else float("inf")
    tie = (item.pool.name, item.candidate.name)  # deterministic among equals
    if objective == "throughput":
        return (-item.throughput, p50, *tie)
    if objective == "cost":
        cost = item.cost if item.cost is not None else float("inf")
        return (cost, p50, *tie)
    return (p50, p99, *tie)


_VERDICT_ORDER = {"eligible": 0, "over-budget": 1, "rejected": 2, "failed": 3}


def _rank_key(item: Scored, objective: Objective) -> tuple:
    order = _VERDICT_ORDER[item.verdict]
    if item.verdict == "rejected":  # the closest misses first: they say how far off the limit is
        drop = item.drop if item.drop is not None else float("inf")
        return (order, drop, item.pool.name, item.candidate.name)
    if item.verdict == "failed":
        return (order, 0.0, item.pool.name, item.candidate.name)
    return (order, *_objective_key(item, objective))


def select(outcomes: list[PoolOutcome], criteria: Criteria) -> Selection:
    """Rank every candidate of every pool and pick the best eligible one (or say why none)."""
    scored = [
        _score(outcome.pool, candidate, criteria)
        for outcome in outcomes
        if outcome.report is not None
        for candidate in outcome.report.candidates
    ]
    ranked = sorted(scored, key=lambda item: _rank_key(item, criteria.objective))
    eligible = [item for item in ranked if item.verdict == "eligible"]
    if eligible:
        return Selection(winner=eligible[0], ranked=ranked)

    reported = [outcome for outcome in outcomes if outcome.report is not None]
    if not reported:
        reasons = "; ".join(f"{o.pool.name}: {o.error or 'no report'}" for o in outcomes)
        return Selection(None, ranked, "AllPoolsFailed", f"every pool failed: {reasons}")
    over_budget = [item for item in ranked if item.verdict == "over-budget"]
    if over_budget:
        fastest = min(over_budget, key=lambda item: item.p99 if item.p99 is not None else float("inf"))
        return Selection(
            None,
            ranked,
            "NoCandidateWithinBudget",
            f"no candidate meets latencyBudgetMs {criteria.latency_budget_ms:g}: the lowest p99 is "
            f"{fastest.p99:.3g} ms ({fastest.label()})",
        )
    with_drop = [item for item in ranked if item.drop is not None and item.verdict == "rejected"]
    if with_drop:
        best = min(with_drop, key=lambda item: item.drop if item.drop is not None else float("inf"))
        return Selection(
            None,
            ranked,
            "NoCandidateWithinDrop",
            f"no candidate within maxMetricDrop {criteria.max_metric_drop:g}: the best drop is "
            f"{best.drop:.4g} ({best.label()})",
        )
    failed_pools = [f"{o.pool.name}: {o.error}" for o in outcomes if o.report is None]
    reasons = "; ".join(item.reason for item in ranked[:3]) or "the reports list no candidates"
    extra = f"; failed pools: {'; '.join(failed_pools)}" if failed_pools else ""
    return Selection(None, ranked, "NoCandidates", f"no usable candidate: {reasons}{extra}")


def summaries(selection: Selection, limit: int) -> list[CandidateSummary]:
    """The best ``limit`` candidates for the status, the winner marked."""
    return [item.summary("winner" if item is selection.winner else None) for item in selection.ranked[:limit]]
