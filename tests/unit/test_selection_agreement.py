"""The engine and the operator pick with one rule: for any single-pool report they agree.

``hypothesis`` is not in the venv, so the property runs over seeded random reports: many
draws, reproducible, and the seed and case are in the failure message.
"""

from __future__ import annotations

import random

import pytest

from honed.controller.selection import PoolOutcome, select
from honed.controller.settings import Pool
from honed.optimizer.report import Candidate, Latency, MetricResult
from honed.optimizer.selection import Criteria, Objective, pick
from tests.fixtures.reports import report

POOL = Pool(name="cpu", image="opt-cpu", device="cpu", price_per_hour=0.5)
BATCHES = ("1", "4", "8", "32")


def _latency(rng: random.Random, p50: float) -> Latency:
    p99 = p50 * rng.choice([1.0, 1.01, 1.2, 2.0, 5.0])
    return Latency(p50=p50, p90=p99, p99=p99)


def random_candidate(rng: random.Random, index: int) -> Candidate:
    # Few distinct values so ties, near-ties (within 2%) and budget edges come up often.
    p50 = rng.choice([0.5, 1.0, 1.01, 1.015, 1.03, 2.0, 4.0])
    batches = rng.sample(BATCHES, rng.randint(0, len(BATCHES)))
    by_batch = {b: _latency(rng, p50 * int(b) ** 0.5) for b in batches if rng.random() < 0.85}
    return Candidate(
        name=f"c{index}",
        backend="onnxruntime",
        precision="fp32",
        status=rng.choice(["accepted", "accepted", "accepted", "rejected", "failed"]),
        latency_ms=None if rng.random() < 0.1 else _latency(rng, p50),
        latency_by_batch_ms=by_batch,
        throughput={b: rng.choice([0.0, 500.0, 1000.0, 2000.0, 8000.0]) for b in batches},
        metric=None if rng.random() < 0.2 else MetricResult(name="top1", value=0.9, drop=rng.choice([0, 0.005, 0.02])),
    )


def random_criteria(rng: random.Random) -> Criteria:
    objective: Objective = rng.choice(["latency", "throughput", "cost"])
    return Criteria(objective, rng.choice([0.01, 0.03]), rng.choice([None, 1.0, 2.0, 5.0, 20.0]))


@pytest.mark.parametrize("seed", range(20))
def test_the_operators_winner_for_one_pool_is_the_engines(seed: int) -> None:
    rng = random.Random(seed)
    for case in range(100):
        cands = [random_candidate(rng, i) for i in range(rng.randint(0, 7))]
        criteria = random_criteria(rng)
        # The Job is told "throughput" for cost: within one pool the price is a constant factor.
        engine_criteria = Criteria(
            "latency" if criteria.objective == "latency" else "throughput",
            criteria.max_metric_drop,
            criteria.latency_budget_ms,
        )
        engine = pick(cands, engine_criteria)
        operator = select([PoolOutcome(POOL, report(cands))], criteria).winner
        got = None if operator is None else operator.candidate.name
        want = None if engine is None else engine.name
        assert got == want, f"seed {seed} case {case}: {criteria} {[c.model_dump() for c in cands]}"


def _cand(name: str, p50: float, p99: float, throughput: dict[str, float], by_batch: dict[str, float]) -> Candidate:
    return Candidate(
        name=name,
        backend="onnxruntime",
        precision="fp32",
        status="accepted",
        latency_ms=Latency(p50=p50, p90=p99, p99=p99),
        latency_by_batch_ms={b: Latency(p50=v, p90=v, p99=v) for b, v in by_batch.items()},
        throughput=throughput,
    )


def test_throughput_at_a_batch_size_over_the_budget_does_not_count_across_pools() -> None:
    # Before one rule, the operator ranked on the best throughput at any batch size, so "big"
    # (9000/s only at batch 32, p99 50 ms) beat "small" there while the engine picked "small".
    big = _cand("big", 2.0, 3.0, {"1": 500.0, "32": 9000.0}, {"1": 3.0, "32": 50.0})
    small = _cand("small", 1.0, 1.5, {"1": 1000.0, "8": 4000.0}, {"1": 1.5, "8": 4.0})
    chosen = select([PoolOutcome(POOL, report([big, small]))], Criteria("throughput", 0.01, 10.0))
    assert chosen.winner is not None and chosen.winner.candidate.name == "small"
    assert chosen.winner.throughput == 4000.0  # what the status shows: the rate within the budget
    assert pick([big, small], Criteria("throughput", 0.01, 10.0)) is small


def test_latency_near_ties_go_to_the_lower_p99_in_the_operator_too() -> None:
    jittery = _cand("jittery", 1.00, 5.0, {"1": 1000.0}, {"1": 5.0})
    steady = _cand("steady", 1.01, 1.2, {"1": 990.0}, {"1": 1.2})
    chosen = select([PoolOutcome(POOL, report([jittery, steady]))], Criteria("latency", 0.01))
    assert chosen.winner is not None and chosen.winner.candidate.name == "steady"
    assert [s.candidate.name for s in chosen.ranked] == ["steady", "jittery"]


def test_a_candidate_whose_only_fitting_batch_has_no_throughput_fails_with_why() -> None:
    slow_batches = _cand("slow", 1.0, 1.5, {"8": 4000.0}, {"1": 1.5, "8": 40.0})
    chosen = select([PoolOutcome(POOL, report([slow_batches]))], Criteria("throughput", 0.01, 10.0))
    assert chosen.winner is None
    assert chosen.ranked[0].verdict == "failed" and "no batch size's p99 fits the budget" in chosen.ranked[0].reason
