"""Candidate selection: pure strategy objects over measured candidates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from honed.optimizer.report import Candidate


class Strategy(Protocol):
    def pick(self, candidates: list[Candidate]) -> Candidate | None: ...

    def describe(self) -> str: ...


def _accepted(candidates: list[Candidate]) -> list[Candidate]:
    return [c for c in candidates if c.status == "accepted" and c.latency_ms is not None]


@dataclass(frozen=True)
class MinLatency:
    """Lowest batch-1 p50; p99 breaks ties within 2% so a jittery candidate loses a near-draw."""

    def pick(self, candidates: list[Candidate]) -> Candidate | None:
        pool = _accepted(candidates)
        if not pool:
            return None
        best = min(c.latency_ms.p50 for c in pool if c.latency_ms)
        close = [c for c in pool if c.latency_ms and c.latency_ms.p50 <= best * 1.02]
        return min(close, key=lambda c: c.latency_ms.p99 if c.latency_ms else float("inf"))

    def describe(self) -> str:
        return "lowest p50 latency at batch 1"


@dataclass(frozen=True)
class MaxThroughput:
    """Highest items/s at any measured batch size whose p99 fits the latency budget."""

    latency_budget_ms: float | None = None

    def usable_throughput(self, cand: Candidate) -> float:
        best = 0.0
        for batch, items in cand.throughput.items():
            lat = cand.latency_by_batch_ms.get(batch)
            if self.latency_budget_ms is not None and (lat is None or lat.p99 > self.latency_budget_ms):
                continue
            best = max(best, items)
        return best

    def pick(self, candidates: list[Candidate]) -> Candidate | None:
        scored = [(self.usable_throughput(c), c) for c in _accepted(candidates)]
        scored = [(s, c) for s, c in scored if s > 0]
        if not scored:
            return None
        return max(scored, key=lambda sc: sc[0])[1]

    def describe(self) -> str:
        budget = f" with p99 <= {self.latency_budget_ms} ms" if self.latency_budget_ms else ""
        return f"highest throughput{budget}"


def within_budget(cand: Candidate, latency_budget_ms: float | None) -> bool:
    return latency_budget_ms is None or (cand.latency_ms is not None and cand.latency_ms.p99 <= latency_budget_ms)


def strategy_for(objective: str, latency_budget_ms: float | None) -> Strategy:
    if objective == "throughput":
        return MaxThroughput(latency_budget_ms)
    return MinLatency()


def select(candidates: list[Candidate], objective: str, latency_budget_ms: float | None) -> Candidate | None:
    """The winner under the objective; for latency, a budget the winner misses still rejects it."""
    pick = strategy_for(objective, latency_budget_ms).pick(candidates)
    if pick is not None and objective == "latency" and not within_budget(pick, latency_budget_ms):
        return None
    return pick
