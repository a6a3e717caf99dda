"""Cross-pool selection: objectives, constraints, and why nothing was selected."""

from __future__ import annotations

import pytest

from honed.controller.selection import PoolOutcome, select, summaries
from honed.controller.settings import Pool
from honed.optimizer.selection import Criteria, cost_per_million
from tests.fixtures.reports import candidate, report

CPU = Pool(name="cpu", image="opt-cpu", device="cpu", price_per_hour=0.5)
GPU = Pool(name="gpu", image="opt-gpu", device="cuda", price_per_hour=3.0)


def outcomes() -> list[PoolOutcome]:
    cpu = report(
        [
            candidate("onnx-int8.openvino", p50=2.0, p99=2.5, throughput=2000.0, drop=0.004),
            candidate("onnx-fp32.onnxruntime", p50=8.0, p99=9.0, throughput=600.0),
        ]
    )
    gpu = report(
        [
            candidate("onnx-fp16.tensorrt", p50=0.8, p99=1.1, throughput=20000.0, drop=0.001),
            candidate(
                "onnx-int8.tensorrt",
                p50=0.5,
                p99=0.7,
                throughput=30000.0,
                drop=0.05,
                status="rejected",
                reason="metric drop 0.05 > 0.01",
            ),
        ],
        device="cuda",
    )
    return [PoolOutcome(CPU, cpu), PoolOutcome(GPU, gpu)]


def test_cost_per_million_formula() -> None:
    # 3.6 per hour at 1000 items/s: 3.6 / 3.6e6 per item -> 1.0 per million.
    assert cost_per_million(3.6, 1000.0) == pytest.approx(1.0)
    assert cost_per_million(None, 1000.0) is None
    assert cost_per_million(1.0, 0.0) is None


def test_latency_objective_picks_lowest_p50_across_pools() -> None:
    chosen = select(outcomes(), Criteria("latency", 0.01))
    assert chosen.winner is not None
    assert (chosen.winner.pool.name, chosen.winner.candidate.name) == ("gpu", "onnx-fp16.tensorrt")
    # the rejected int8 is faster but never eligible; it ranks after every eligible candidate
    verdicts = [(s.candidate.name, s.verdict) for s in chosen.ranked]
    assert verdicts[-1] == ("onnx-int8.tensorrt", "rejected")


def test_throughput_objective() -> None:
    chosen = select(outcomes(), Criteria("throughput", 0.01))
    assert chosen.winner is not None and chosen.winner.candidate.name == "onnx-fp16.tensorrt"


def test_cost_objective_can_prefer_the_slower_cheaper_pool() -> None:
    # gpu: 3.0 / (3600 * 20000) * 1e6 = 0.0417; cpu: 0.5 / (3600 * 2000) * 1e6 = 0.0694 -> gpu.
    chosen = select(outcomes(), Criteria("cost", 0.01))
    assert chosen.winner is not None and chosen.winner.pool.name == "gpu"
    pricey_gpu = Pool(name="gpu", image="opt-gpu", device="cuda", price_per_hour=12.0)
    swapped = [outcomes()[0], PoolOutcome(pricey_gpu, outcomes()[1].report)]
    chosen = select(swapped, Criteria("cost", 0.01))
    assert chosen.winner is not None and chosen.winner.pool.name == "cpu"
    assert chosen.winner.cost == pytest.approx(0.5 / (3600 * 2000) * 1e6)


def test_latency_budget_excludes_slow_p99() -> None:
    chosen = select(outcomes()[:1], Criteria("throughput", 0.01, latency_budget_ms=5.0))
    assert chosen.winner is not None and chosen.winner.candidate.name == "onnx-int8.openvino"
    fp32 = next(s for s in chosen.ranked if s.candidate.name == "onnx-fp32.onnxruntime")
    assert fp32.verdict == "over-budget" and "budget 5 ms" in fp32.reason


def test_nothing_within_budget_reports_the_lowest_p99() -> None:
    chosen = select(outcomes()[:1], Criteria("latency", 0.01, latency_budget_ms=1.0))
    assert chosen.winner is None and chosen.failure == "NoCandidateWithinBudget"
    assert "lowest p99 is 2.5 ms (onnx-int8.openvino on cpu)" in chosen.message


def test_no_candidate_within_drop_reports_the_best_drop() -> None:
    rejected = report(
        [
            candidate("onnx-int8.openvino", p50=2.0, drop=0.034, status="rejected", reason="drop"),
            candidate("onnx-fp16.onnxruntime", p50=5.0, drop=0.021, status="rejected", reason="drop"),
        ]
    )
    chosen = select([PoolOutcome(CPU, rejected), PoolOutcome(GPU, None, "DeadlineExceeded")], Criteria("latency", 0.01))
    assert chosen.winner is None and chosen.failure == "NoCandidateWithinDrop"
    assert "best drop is 0.021 (onnx-fp16.onnxruntime on cpu)" in chosen.message


def test_engine_accepted_but_over_the_spec_drop_is_rejected() -> None:
    # The spec may be stricter than what the Job was told (e.g. an edited limit): re-check.
    chosen = select(outcomes()[:1], Criteria("latency", 0.001))
    assert chosen.winner is not None and chosen.winner.candidate.name == "onnx-fp32.onnxruntime"
    int8 = next(s for s in chosen.ranked if s.candidate.name == "onnx-int8.openvino")
    assert int8.verdict == "rejected" and "0.004 > 0.001" in int8.reason


def test_every_pool_failed_lists_each_reason() -> None:
    chosen = select(
        [
            PoolOutcome(CPU, None, "BackoffLimitExceeded: pod: OOMKilled"),
            PoolOutcome(GPU, None, "DeadlineExceeded"),
        ],
        Criteria("latency", 0.01),
    )
    assert chosen.winner is None and chosen.failure == "AllPoolsFailed"
    assert "cpu: BackoffLimitExceeded: pod: OOMKilled" in chosen.message and "gpu: DeadlineExceeded" in chosen.message


def test_one_failed_pool_does_not_stop_the_others() -> None:
    chosen = select([PoolOutcome(CPU, None, "DeadlineExceeded"), outcomes()[1]], Criteria("latency", 0.01))
    assert chosen.winner is not None and chosen.winner.pool.name == "gpu"


def test_summaries_mark_the_winner_and_carry_cost() -> None:
    chosen = select(outcomes(), Criteria("cost", 0.01))
    rows = summaries(chosen, limit=3)
    assert [r.verdict for r in rows] == ["winner", "eligible", "eligible"]
    assert rows[0].cost_per_million == pytest.approx(3.0 / (3600 * 20000) * 1e6, rel=1e-3)  # 4 digits
    assert rows[0].p50_ms == 0.8 and rows[0].throughput == 20000.0
