"""What one evaluation interval of Triton metrics looked like, as typed values.

A window is what the Prometheus client returns and what the policy reads; it is plain data
(JSON round-trips) so recorded series replay in unit tests exactly as they were observed.
Latencies are in microseconds, as Triton reports them; rates are per second.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Quantiles(_Frozen):
    """Quantiles of Triton's summaries (its own sliding window of about a minute); None = no data."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class Latency(_Frozen):
    """Mean over the window from the cumulative counters, and the summary quantiles."""

    mean_us: float | None = None
    quantiles: Quantiles = Field(default_factory=Quantiles)


class CacheStats(_Frozen):
    """Response cache activity of the model; absent from a window when the model has no cache."""

    hit_rate: float
    miss_rate: float
    hit_mean_us: float | None = Field(default=None, description="time to fetch a cached response")
    miss_mean_us: float | None = Field(default=None, description="lookup + insertion on a miss")

    @property
    def lookup_rate(self) -> float:
        """Cache lookups per second, hits and misses."""
        return self.hit_rate + self.miss_rate

    @property
    def hit_ratio(self) -> float | None:
        """Hits over lookups; None when nothing was looked up."""
        return None if self.lookup_rate <= 0 else self.hit_rate / self.lookup_rate


class BatchProfile(_Frozen):
    """Batch sizes seen: items per client request, and items per model execution over the window.

    The execution batch is sampled per step (rate over a few scrapes) so p50/p90/max describe how
    the dynamic batcher actually grouped requests, not only the window's average.
    """

    request_mean: float | None = None
    exec_mean: float | None = None
    exec_p50: float | None = None
    exec_p90: float | None = None
    exec_max: float | None = None


class MetricWindow(_Frozen):
    """One model's Triton metrics from ``start`` to ``end``, over all its replicas and loaded versions."""

    kind: Literal["window"] = "window"
    model: str
    start: datetime
    end: datetime
    versions: list[str] = Field(default_factory=list)
    request_rate: float = Field(description="requests/s answered, successful or failed")
    failure_rate: float = 0.0
    failures_by_reason: dict[str, float] = Field(default_factory=dict)
    inference_rate: float = Field(0.0, description="items/s computed (cache hits excluded)")
    exec_rate: float = Field(0.0, description="model executions/s (cache hits excluded)")
    request: Latency = Field(default_factory=Latency, description="end to end inside Triton")
    queue: Latency = Field(default_factory=Latency)
    compute: Latency = Field(default_factory=Latency, description="input + infer + output")
    cache: CacheStats | None = None
    batch: BatchProfile = Field(default_factory=BatchProfile)
    pending_max: float | None = Field(default=None, description="most requests waiting at a scrape")

    @property
    def seconds(self) -> float:
        """The window's length."""
        return (self.end - self.start).total_seconds()

    @property
    def failure_ratio(self) -> float:
        """Failed over answered requests; 0 without traffic."""
        return 0.0 if self.request_rate <= 0 else self.failure_rate / self.request_rate

    @property
    def avg_batch_size(self) -> float | None:
        """Items per model execution over the window; None when nothing was executed."""
        return None if self.exec_rate <= 0 else self.inference_rate / self.exec_rate

    def p99_us(self) -> float | None:
        """End-to-end p99 inside Triton.

        Triton publishes no request summary for models with the response cache on, so the
        estimate is then queue p99 + compute p99: an upper bound for computed requests, which
        are the slow ones (hits skip compute).
        """
        if self.request.quantiles.p99 is not None:
            return self.request.quantiles.p99
        queue, compute = self.queue.quantiles.p99, self.compute.quantiles.p99
        if queue is None and compute is None:
            return None
        return (queue or 0.0) + (compute or 0.0)

    def concurrency(self) -> float | None:
        """Requests in flight on average (Little's law: arrival rate x time in system)."""
        if self.request.mean_us is None or self.request_rate <= 0:
            return None
        return self.request_rate * self.request.mean_us / 1e6


class MetricsUnavailable(_Frozen):
    """Prometheus could not answer; the reason is meant for the MetricsUnavailable condition."""

    kind: Literal["unavailable"] = "unavailable"
    model: str
    at: datetime
    url: str
    reason: str


Observation = MetricWindow | MetricsUnavailable


def finite(value: float | None) -> float | None:
    """NaN and infinities (empty summaries, 0/0 rates) become None: missing, not a number."""
    return None if value is None or not math.isfinite(value) else value
