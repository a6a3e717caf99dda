from honed.optimizer.measure import latency_stats, rounds_schedule, throughput
from honed.optimizer.report import Candidate, Latency
from honed.optimizer.selection import Criteria, pick


def cand(
    name: str,
    p50: float,
    p99: float,
    tput: dict[str, float] | None = None,
    status: str = "accepted",
    by_batch: dict[str, Latency] | None = None,
) -> Candidate:
    return Candidate(
        name=name,
        backend="b",
        precision="fp32",
        status=status,
        latency_ms=Latency(p50=p50, p90=p99, p99=p99),
        throughput=tput or {},
        latency_by_batch_ms=by_batch or {"1": Latency(p50=p50, p90=p99, p99=p99)},
    )


def test_min_latency_ignores_rejected_and_breaks_near_ties_on_p99() -> None:
    cands = [
        cand("fast-but-rejected", 0.5, 0.6, status="rejected"),
        cand("a", 1.00, 5.0),
        cand("b", 1.01, 1.2),
        cand("c", 2.0, 2.1),
    ]
    assert pick(cands, Criteria("latency")).name == "b"  # type: ignore[union-attr]


def test_max_throughput_respects_the_latency_budget_per_batch() -> None:
    big = cand(
        "big-batches",
        2.0,
        3.0,
        {"1": 500, "32": 9000},
        by_batch={"1": Latency(p50=2, p90=2, p99=3), "32": Latency(p50=30, p90=40, p99=50)},
    )
    small = cand(
        "small",
        1.0,
        1.5,
        {"1": 1000, "8": 4000},
        by_batch={"1": Latency(p50=1, p90=1, p99=1.5), "8": Latency(p50=2, p90=2, p99=4)},
    )
    assert pick([big, small], Criteria("throughput")).name == "big-batches"  # type: ignore[union-attr]
    assert pick([big, small], Criteria("throughput", latency_budget_ms=10)).name == "small"  # type: ignore[union-attr]


def test_latency_objective_with_a_budget_nobody_meets_has_no_winner() -> None:
    assert pick([cand("a", 5, 9)], Criteria("latency", latency_budget_ms=1)) is None
    assert pick([cand("a", 5, 9)], Criteria("latency")).name == "a"  # type: ignore[union-attr]
    assert pick([], Criteria("throughput")) is None


def test_stats_and_throughput() -> None:
    stats = latency_stats([1.0] * 98 + [10.0, 20.0])
    assert stats.p50 == 1.0 and stats.p99 > 9
    assert throughput(8, [2.0, 2.0, 100.0]) == 4000.0


def test_each_round_counts_once_however_many_calls_it_fit() -> None:
    # A quiet round fits 90 calls of 1 ms, two loaded rounds 5 calls of 2 ms each: pooled, the quiet
    # round's calls outvote the others; the report's p50 is the loaded machine's, 2 of 3 rounds.
    quiet, loaded = [1.0] * 90, [2.0] * 5
    samples = quiet + loaded + loaded
    assert latency_stats(samples).p50 == 1.0
    stats = latency_stats(samples, [1.0, 2.0, 2.0])
    assert stats.p50 == 2.0 and stats.p90 >= stats.p50 and stats.p99 >= stats.p90
    assert throughput(4, samples, [1.0, 2.0, 2.0]) == 2000.0
    assert latency_stats([3.0, 5.0], [4.0]).p50 == 4.0  # one round: its samples as they are


def test_rounds_rotate_the_order_so_drift_hits_everyone() -> None:
    schedule = rounds_schedule(["a", "b", "c"], [1], rounds=3)
    assert [s[0] for s in schedule] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
