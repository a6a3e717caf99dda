"""The operator's side of choosing a winner across pools: pool outcomes, failures, the status.

The rule itself (who is eligible, how candidates rank, cost per million) is
``honed.optimizer.selection``, the same one each pool's engine used, so with one pool the
operator's winner is the engine's. Here: every pool's candidates meet as offers with that
pool's name and price, a failed pool is a reason rather than a crash, and the ranked list
becomes the status's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from honed.api.status import CandidateSummary, Verdict
from honed.controller.settings import Pool
from honed.optimizer import selection as rule
from honed.optimizer.report import Candidate, Report
from honed.optimizer.selection import Criteria, cost_per_million

FailureReason = Literal["AllPoolsFailed", "NoCandidateWithinDrop", "NoCandidateWithinBudget", "NoCandidates"]


@dataclass(frozen=True)
class PoolOutcome:
    """What one pool's optimization produced: a report, or why there is none."""

    pool: Pool
    report: Report | None = None
    error: str | None = None


@dataclass(frozen=True)
class Scored:
    """One candidate of one pool as the selection rule judged it; latencies in ms at batch 1."""

    pool: Pool
    candidate: Candidate
    verdict: Verdict
    reason: str = ""
    throughput: float = 0.0  # items/s at the best batch size within the latency budget

    @property
    def p50(self) -> float | None:
        """Median latency in ms at batch 1; None when the candidate was not timed."""
        return None if self.candidate.latency_ms is None else self.candidate.latency_ms.p50

    @property
    def p99(self) -> float | None:
        """p99 latency in ms at batch 1; None when the candidate was not timed."""
        return None if self.candidate.latency_ms is None else self.candidate.latency_ms.p99

    @property
    def drop(self) -> float | None:
        """The metric drop against the original model; None when it was not measured."""
        return None if self.candidate.metric is None else self.candidate.metric.drop

    @property
    def cost(self) -> float | None:
        """Price of a million inferences, in the pool's price unit; None without a price or a throughput."""
        return cost_per_million(self.pool.price_per_hour, self.throughput)

    def label(self) -> str:
        """``CANDIDATE on POOL``, for messages."""
        return f"{self.candidate.name} on {self.pool.name}"

    def summary(self, verdict: Verdict | None = None) -> CandidateSummary:
        """The status row, figures rounded to 4 significant digits; ``verdict`` overrides (``winner``)."""
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
    """The outcome of ``select``: the winner and every candidate ranked, or the failure and why."""

    winner: Scored | None
    ranked: list[Scored]
    failure: FailureReason | None = None
    message: str = ""


def significant(value: float | None, digits: int = 4) -> float | None:
    """Round for the status: people read it, and 17 digits of a timing are noise."""
    return None if value is None else float(f"{value:.{digits}g}")


def _scored(pool: Pool, judged: rule.Judged) -> Scored:
    return Scored(pool, judged.candidate, judged.verdict, judged.reason, judged.throughput)


def select(outcomes: list[PoolOutcome], criteria: Criteria) -> Selection:
    """Rank every candidate of every pool and pick the best eligible one (or say why none)."""
    pools = {outcome.pool.name: outcome.pool for outcome in outcomes}
    offers = [
        rule.Offer(candidate, outcome.pool.name, outcome.pool.price_per_hour)
        for outcome in outcomes
        if outcome.report is not None
        for candidate in outcome.report.candidates
    ]
    ranked = [_scored(pools[judged.offer.place], judged) for judged in rule.rank(offers, criteria)]
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
