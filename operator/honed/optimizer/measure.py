"""Latency statistics and the interleaved measurement schedule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from honed.optimizer.report import Latency


def latency_stats(samples_ms: Sequence[float]) -> Latency:
    """p50, p90 and p99 of ``samples_ms`` (milliseconds, rounded to 0.1 µs)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return Latency(p50=round(float(p50), 4), p90=round(float(p90), 4), p99=round(float(p99), 4))


def throughput(batch: int, samples_ms: Sequence[float]) -> float:
    """Items per second of back-to-back single-stream calls (median latency, robust to stragglers)."""
    median = float(np.median(np.asarray(samples_ms, dtype=np.float64)))
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
