"""Winner selection: the one rule that judges and ranks measured candidates.

The engine ranks one pool's candidates (``pick``); the operator ranks every pool's candidates
together (``rank`` over offers that carry each pool's name and price). Both go through the same
``judge`` and the same ordering, so a single pool's winner is the cross-pool winner when that
pool is the only one.

The rule:

- only ``accepted`` candidates with a batch-1 latency can win; a metric drop over the limit
  rejects, and a batch-1 p99 over the latency budget puts a candidate over budget (a single
  request must meet the budget whatever the objective);
- throughput counts only the batch sizes whose own p99 fits the budget: a batch size that
  misses it is not a rate the service can run at;
- latency ranks by batch-1 p50, and p50s within 2% of the best count as a draw that the lower
  p99 wins, so a jittery candidate loses a near-draw;
- throughput ranks by that usable throughput; cost by price per million inferences,
  ``price_per_hour / (3600 * throughput) * 1e6``, which needs the price of where it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from honed.optimizer.report import Candidate

Objective = Literal["latency", "throughput", "cost"]
Judgement = Literal["eligible", "over-budget", "rejected", "failed"]

# p50s this close are a draw: repeated timings of one candidate differ by about this much.
NEAR_TIE = 1.02


@dataclass(frozen=True)
class Criteria:
    """What a winner must meet and what it is ranked by."""

    objective: Objective = "latency"
    max_metric_drop: float | None = None  # None: the engine's own accept/reject stands
    latency_budget_ms: float | None = None


@dataclass(frozen=True)
class Offer:
    """A candidate where it would run: a place name (a pool) and that place's price."""

    candidate: Candidate
    place: str = ""
    price_per_hour: float | None = None


@dataclass(frozen=True)
class Judged:
    """An offer's verdict under the criteria, with the usable throughput and cost it was judged on."""

    offer: Offer
    verdict: Judgement
    reason: str = ""
    throughput: float = 0.0  # items/s at the best batch size within the budget
    cost: float | None = None  # per million inferences at that throughput

    @property
    def candidate(self) -> Candidate:
        """The judged candidate."""
        return self.offer.candidate

    @property
    def p50(self) -> float | None:
        """The candidate's p50 at batch 1 in ms (None when it was not timed)."""
        lat = self.offer.candidate.latency_ms
        return None if lat is None else lat.p50

    @property
    def p99(self) -> float | None:
        """The candidate's p99 at batch 1 in ms (None when it was not timed)."""
        lat = self.offer.candidate.latency_ms
        return None if lat is None else lat.p99

    @property
    def drop(self) -> float | None:
        """The candidate's metric drop (None when it has no metric)."""
        metric = self.offer.candidate.metric
        return None if metric is None else metric.drop


def usable_throughput(candidate: Candidate, latency_budget_ms: float | None) -> float:
    """Highest items/s at a measured batch size whose own p99 fits the budget (0 if none)."""
    best = 0.0
    for batch, items in candidate.throughput.items():
        lat = candidate.latency_by_batch_ms.get(batch)
        if latency_budget_ms is not None and (lat is None or lat.p99 > latency_budget_ms):
            continue
        best = max(best, items)
    return best


def cost_per_million(price_per_hour: float | None, throughput: float) -> float | None:
    """Price of a million inferences on a node running at ``throughput`` items/s."""
    if price_per_hour is None or throughput <= 0:
        return None
    return price_per_hour / (3600.0 * throughput) * 1e6


def judge(offer: Offer, criteria: Criteria) -> Judged:
    """Whether ``offer`` may win under ``criteria``, and if not, why."""
    cand = offer.candidate
    if cand.status == "failed":
        return Judged(offer, "failed", cand.reason or "failed")
    if cand.status == "rejected":
        return Judged(offer, "rejected", cand.reason or "rejected by the engine")
    drop = None if cand.metric is None else cand.metric.drop
    limit = criteria.max_metric_drop
    if limit is not None and drop is not None and drop > limit:
        return Judged(offer, "rejected", f"metric drop {drop:.4g} > {limit:g}")
    if cand.latency_ms is None:
        return Judged(offer, "failed", "no latency measured")
    budget = criteria.latency_budget_ms
    throughput = usable_throughput(cand, budget)
    cost = cost_per_million(offer.price_per_hour, throughput)
    if budget is not None and cand.latency_ms.p99 > budget:
        reason = f"p99 {cand.latency_ms.p99:.3g} ms > budget {budget:g} ms"
        return Judged(offer, "over-budget", reason, throughput, cost)
    if criteria.objective in ("throughput", "cost") and throughput <= 0:
        why = "no throughput measured" if cand.best_throughput() <= 0 else "no batch size's p99 fits the budget"
        return Judged(offer, "failed", why, throughput, cost)
    if criteria.objective == "cost" and offer.price_per_hour is None:
        return Judged(offer, "failed", f"pool {offer.place} has no pricePerHour", throughput, cost)
    return Judged(offer, "eligible", "", throughput, cost)


def _inf(value: float | None) -> float:
    return float("inf") if value is None else value


def _tie(item: Judged) -> tuple[str, str]:
    return (item.offer.place, item.candidate.name)  # deterministic among equals


def _order_by_objective(items: list[Judged], objective: Objective) -> list[Judged]:
    if objective == "throughput":
        return sorted(items, key=lambda j: (-j.throughput, _inf(j.p99), _inf(j.p50), *_tie(j)))
    if objective == "cost":
        return sorted(items, key=lambda j: (_inf(j.cost), _inf(j.p99), _inf(j.p50), *_tie(j)))
    # Latency: "within 2% of the best" is not transitive, so no sort key expresses it; take the
    # winner of what is left, one at a time, so every rank is the winner among those below it.
    rest = sorted(items, key=lambda j: (_inf(j.p50), _inf(j.p99), *_tie(j)))
    ordered: list[Judged] = []
    while rest:
        best = _inf(rest[0].p50)
        close = [i for i, j in enumerate(rest) if _inf(j.p50) <= best * NEAR_TIE]
        first = min(close, key=lambda i: (_inf(rest[i].p99), _inf(rest[i].p50), *_tie(rest[i])))
        ordered.append(rest.pop(first))
    return ordered


def _loser_key(item: Judged) -> tuple[int, float, str, str]:
    if item.verdict == "rejected":  # the closest misses first: they say how far off the limit is
        return (0, _inf(item.drop), *_tie(item))
    return (1, 0.0, *_tie(item))


def rank(offers: Iterable[Offer], criteria: Criteria) -> list[Judged]:
    """Every offer judged: eligible best first, then over budget, rejected and failed ones."""
    judged = [judge(offer, criteria) for offer in offers]

    def ordered(verdict: Judgement) -> list[Judged]:
        return _order_by_objective([j for j in judged if j.verdict == verdict], criteria.objective)

    losers = sorted((j for j in judged if j.verdict in ("rejected", "failed")), key=_loser_key)
    return ordered("eligible") + ordered("over-budget") + losers


def pick(candidates: Iterable[Candidate], criteria: Criteria, price_per_hour: float | None = None) -> Candidate | None:
    """The engine's winner among one place's candidates, or None when none is eligible."""
    ranked = rank((Offer(c, price_per_hour=price_per_hour) for c in candidates), criteria)
    return ranked[0].candidate if ranked and ranked[0].verdict == "eligible" else None
