"""Latency statistics and the interleaved measurement schedule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from honed.optimizer.report import Latency


def typical_ms(samples_ms: Sequence[float], round_p50s: Sequence[float] = ()) -> float:
    """The p50 to report: the median of the rounds' medians when there are two rounds or more.

    Each round times for a fixed time, so a quiet round yields more calls than a loaded one; the
    median of all calls pooled leans toward the quiet rounds and reported 7-23% faster than a
    longer measurement of the same artifact in another process (benchmarks/engine). Each round
    counting once is how that longer measurement is taken, too.
    """
    if len(round_p50s) >= 2:
        return float(np.median(np.asarray(round_p50s, dtype=np.float64)))
    return float(np.median(np.asarray(samples_ms, dtype=np.float64)))


def latency_stats(samples_ms: Sequence[float], round_p50s: Sequence[float] = ()) -> Latency:
    """p50 (``typical_ms``), p90 and p99 of ``samples_ms`` (milliseconds, rounded to 0.1 µs)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    p50 = typical_ms(samples_ms, round_p50s)
    p90, p99 = (max(p50, float(x)) for x in np.percentile(values, [90, 99]))
    return Latency(p50=round(p50, 4), p90=round(p90, 4), p99=round(max(p90, p99), 4))


def throughput(batch: int, samples_ms: Sequence[float], round_p50s: Sequence[float] = ()) -> float:
    """Items per second of back-to-back single-stream calls (``typical_ms``, robust to stragglers)."""
    median = typical_ms(samples_ms, round_p50s)
    return round(batch * 1000.0 / median, 3) if median > 0 else 0.0


def rounds_schedule(names: Sequence[str], batch_sizes: Sequence[int], rounds: int) -> list[tuple[str, int]]:
    """Every (candidate, batch) once per round, the candidate order rotated each round.

    Interleaving spreads machine drift (other tenants, thermal) over all candidates alike
    instead of penalising whichever ran during a noisy minute.
    """
    order = list(names)
    schedule: list[tuple[str, int]] = []
    for r in range(rounds):
        shift = r % len(order) if order else 0
        rotated = order[shift:] + order[:shift]
        schedule.extend((name, batch) for name in rotated for batch in batch_sizes)
    return schedule


def contenders(p50_by_name: dict[str, float], within: float) -> list[str]:
    """The names whose p50 is within ``within`` (a ratio, e.g. 1.15) of the fastest, fastest first.

    Only these can still change places with the fastest once measured longer; fewer than two
    means the ranking is already clear.
    """
    if not p50_by_name:
        return []
    best = min(p50_by_name.values())
    close = [name for name, p50 in p50_by_name.items() if p50 <= best * within]
    return sorted(close, key=lambda name: p50_by_name[name])
