"""What one metric window says: the SLO verdict, the numbers behind it, the traffic's batch profile."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from honed.api.spec import Feedback
from honed.feedback.decisions import Number
from honed.feedback.policy_inputs import Deployment, ceil_int
from honed.feedback.window import MetricWindow

# Triton's latency summaries remember about a minute and count the model_warmup requests of a
# newly loaded version (batches 1, 2, 4, ... and the max: under twice the max batch in all).
# Until warmup is under 1% of what the summary holds, its p99 describes the warmup, not the traffic.
SUMMARY_MEMORY_S = 60.0
WARMUP_SHARE = 0.01

SLOStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Verdict:
    """How the window compares with the SLO, for the SLOMet condition."""

    status: SLOStatus
    reason: str
    message: str


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 3)


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded for status and Events; None (no data) stays None."""
    return None if value is None else round(value, digits)


def observed_numbers(window: MetricWindow) -> dict[str, Number]:
    """The window's figures for a decision's ``numbers``: camelCase keys, latencies in ms, None = no data."""
    cache = window.cache
    return {
        "requestRate": rounded(window.request_rate),
        "failureRatio": rounded(window.failure_ratio, 4),
        "p99Ms": _ms(window.p99_us()),
        "queueP99Ms": _ms(window.queue.quantiles.p99),
        "computeP99Ms": _ms(window.compute.quantiles.p99),
        "meanMs": _ms(window.request.mean_us),
        "avgBatch": rounded(window.avg_batch_size),
        "batchP90": rounded(window.batch.exec_p90),
        "concurrency": rounded(window.concurrency()),
        "cacheHitRatio": None if cache is None else rounded(cache.hit_ratio),
        "windowS": rounded(window.seconds, 1),
    }


def quantiles_trusted(window: MetricWindow, deployment: Deployment) -> bool:
    """Whether Triton's quantiles describe the traffic rather than the new version's warmup.

    True once the summaries have forgotten the warmup (``SUMMARY_MEMORY_S`` after the deployment)
    or traffic has outnumbered it, and when the deployment time is unknown.
    """
    if deployment.deployed_at is None:
        return True
    since = (window.end - deployment.deployed_at).total_seconds()
    if since >= SUMMARY_MEMORY_S:
        return True
    warmup = 2 * max(deployment.max_batch_size, 1)
    return window.request_rate * max(since, 0.0) * WARMUP_SHARE >= warmup


def judge(window: MetricWindow, slo: Feedback, deployment: Deployment) -> Verdict:
    """The SLOMet verdict: Unknown when idle or without trustworthy latency, failures judged before latency."""
    if window.request_rate < slo.min_request_rate:
        return Verdict("Unknown", "Idle", f"{window.request_rate:.3g} req/s is too little traffic to judge")
    if window.failure_ratio > slo.max_failure_ratio:
        return Verdict(
            "False",
            "FailuresOverBudget",
            f"{window.failure_ratio:.2%} of requests failed (limit {slo.max_failure_ratio:.2%})",
        )
    budget = slo.p99_budget_us
    if budget is None:
        return Verdict("True", "NoLatencyObjective", "no failures over the limit; no p99 objective set")
    trusted = quantiles_trusted(window, deployment)
    p99, mean = window.p99_us() if trusted else None, window.request.mean_us
    if p99 is None and mean is not None and mean > budget:
        p99 = mean  # the mean over budget puts the p99 over it too
    if p99 is None and not trusted:
        return Verdict(
            "Unknown",
            "WarmupInQuantiles",
            "Triton's latency quantiles still include the new version's warmup",
        )
    if p99 is None:
        return Verdict("Unknown", "NoLatencyData", "Triton published no latency quantiles for the window")
    if p99 > budget:
        return Verdict("False", "LatencyOverBudget", f"p99 {p99 / 1000:.1f} ms > {budget / 1000:g} ms")
    return Verdict("True", "WithinSLO", f"p99 {p99 / 1000:.1f} ms <= {budget / 1000:g} ms")


def batch_profile(window: MetricWindow, deployment: Deployment) -> list[int]:
    """Batch sizes to benchmark: the client batch and the median, p90 and largest executions."""
    batch = window.batch
    ceiling = deployment.max_batch_size or math.inf
    sizes = {ceil_int(v) for v in (batch.request_mean, batch.exec_p50, batch.exec_p90, batch.exec_max) if v}
    if batch.exec_mean:
        sizes.add(ceil_int(batch.exec_mean))
    sizes = {int(min(s, ceiling)) for s in sizes} or {1}
    return sorted(sizes)


def observed_concurrency(window: MetricWindow) -> int:
    """Requests in flight to benchmark under: the larger of the mean and the most pending, at least 1."""
    candidates = [v for v in (window.concurrency(), window.pending_max) if v]
    return ceil_int(max(candidates)) if candidates else 1
