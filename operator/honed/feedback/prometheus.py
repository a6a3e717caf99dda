"""Read Triton's per-model metrics from Prometheus' HTTP API (``/api/v1/query``).

One ``window()`` call evaluates every query at the same instant and returns a ``MetricWindow``,
or ``MetricsUnavailable`` with the reason when Prometheus cannot answer: the feedback loop must
keep serving and say why it is blind, so no network or protocol error escapes as an exception.

The client is synchronous on purpose (plain urllib, no new dependency); the operator calls it
from a worker thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from honed.feedback.window import (
    BatchProfile,
    CacheStats,
    Latency,
    MetricsUnavailable,
    MetricWindow,
    Observation,
    Quantiles,
    finite,
)

QUANTILES = {"p50": "0.5", "p90": "0.9", "p99": "0.99"}
COMPUTE_STAGES = ("input", "infer", "output")


class PrometheusError(Exception):
    """Prometheus did not give a usable answer; the message says what happened."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _duration(seconds: float) -> str:
    # PromQL durations take integers only; milliseconds keep sub-second windows exact.
    return f"{max(1, round(seconds * 1000))}ms"


class PrometheusClient:
    """Queries one Prometheus for the Triton metrics of a model.

    ``matchers`` are extra label matchers added to every series selector (for example the
    namespace and service of one Triton deployment, so two deployments serving a model with
    the same name are not mixed). ``scrape_interval_s`` is the Prometheus scrape interval of
    the Triton targets: per-step batch sizes need a few scrapes per step.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        scrape_interval_s: float = 15.0,
        matchers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.scrape_interval_s = scrape_interval_s
        self.matchers = dict(matchers or {})

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Evaluate an instant query; raises PrometheusError with the reason on any failure."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"HTTP {exc.code} from {self.url}: {_error_text(exc.read())}") from None
        except urllib.error.URLError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc.reason}") from None
        except TimeoutError:
            raise PrometheusError(f"Prometheus at {self.url} did not answer in {self.timeout_s:g}s") from None
        except OSError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{self.url} answered with something that is not JSON") from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise PrometheusError(f"query failed at {self.url}: {_error_text(body)}")
        data = payload.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(f"expected an instant vector for {promql!r}, got {data.get('resultType')}")
        try:
            return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError(f"malformed result from {self.url} for {promql!r}") from None

    def window(self, model: str, *, seconds: float, at: datetime | None = None) -> Observation:
        """The model's metrics over the ``seconds`` before ``at`` (default: now)."""
        end = at or datetime.now(UTC)
        try:
            return self._window(model, seconds, end)
        except PrometheusError as exc:
            return MetricsUnavailable(model=model, at=end, url=self.url, reason=str(exc))

    # -- the queries -------------------------------------------------------------------------

    def _selector(self, model: str, **extra: str) -> str:
        labels = {**self.matchers, "model": model, **extra}
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"

    def _scalar(self, promql: str, at: float) -> float | None:
        samples = self.query(promql, at)
        return finite(samples[0].value) if samples else None

    def _rate(self, metric: str, sel: str, rng: str, at: float) -> float:
        return self._scalar(f"sum(rate({metric}{sel}[{rng}]))", at) or 0.0

    def _quantiles(self, metric: str, sel: str, rng: str, at: float) -> Quantiles:
        # Triton's summaries cover their own sliding minute; the value at the window's end is
        # the one that overlaps the previous window least. Max over replicas and versions.
        samples = self.query(f"max by (quantile) (last_over_time({metric}{sel}[{rng}]))", at)
        by_q = {s.labels.get("quantile"): finite(s.value) for s in samples}
        return Quantiles(**{name: by_q.get(q) for name, q in QUANTILES.items()})

    def _window(self, model: str, seconds: float, end: datetime) -> Observation:
        at = end.timestamp()
        sel = self._selector(model)
        rng = _duration(seconds)
        versions = sorted(
            s.labels.get("version", "")
            for s in self.query(f"count by (version) (last_over_time(nv_inference_count{sel}[{rng}]))", at)
        )
        if not versions:
            return MetricsUnavailable(
                model=model,
                at=end,
                url=self.url,
                reason=f"Prometheus at {self.url} has no Triton series for model {model!r} in the last "
                f"{seconds:g}s (is the Triton metrics port scraped, with summary latencies on?)",
            )
        success = self._rate("nv_inference_request_success", sel, rng, at)
        failures = {
            s.labels.get("reason", "unknown"): v
            for s in self.query(f"sum by (reason) (rate(nv_inference_request_failure{sel}[{rng}]))", at)
            if (v := finite(s.value))
        }
        failure = sum(failures.values())
        inferences = self._rate("nv_inference_count", sel, rng, at)
        execs = self._rate("nv_inference_exec_count", sel, rng, at)
        cache = self._cache(sel, rng, at)
        computed = success - (cache.hit_rate if cache else 0.0)

        def per(numerator: float, denominator: float) -> float | None:
            return numerator / denominator if denominator > 0 else None

        compute_sum = sum(
            self._rate(f"nv_inference_compute_{stage}_duration_us", sel, rng, at) for stage in COMPUTE_STAGES
        )
        stage_quantiles = [
            self._quantiles(f"nv_inference_compute_{stage}_summary_us", sel, rng, at) for stage in COMPUTE_STAGES
        ]
        return MetricWindow(
            model=model,
            start=datetime.fromtimestamp(at - seconds, UTC),
            end=end,
            versions=versions,
            request_rate=success + failure,
            failure_rate=failure,
            failures_by_reason=failures,
            inference_rate=inferences,
            exec_rate=execs,
            request=Latency(
                mean_us=per(self._rate("nv_inference_request_duration_us", sel, rng, at), success),
                quantiles=self._quantiles("nv_inference_request_summary_us", sel, rng, at),
            ),
            queue=Latency(
                mean_us=per(self._rate("nv_inference_queue_duration_us", sel, rng, at), success),
                quantiles=self._quantiles("nv_inference_queue_summary_us", sel, rng, at),
            ),
            compute=Latency(mean_us=per(compute_sum, computed), quantiles=_add(stage_quantiles)),
            cache=cache,
            batch=self._batch(sel, seconds, at, per(inferences, computed), per(inferences, execs)),
            pending_max=self._scalar(f"max(max_over_time(nv_inference_pending_request_count{sel}[{rng}]))", at),
        )

    def _cache(self, sel: str, rng: str, at: float) -> CacheStats | None:
        present = self.query(f"count(last_over_time(nv_cache_num_misses_per_model{sel}[{rng}]))", at)
        if not present:
            return None
        hits = self._rate("nv_cache_num_hits_per_model", sel, rng, at)
        misses = self._rate("nv_cache_num_misses_per_model", sel, rng, at)
        hit_time = self._rate("nv_cache_hit_duration_per_model", sel, rng, at)
        miss_time = self._rate("nv_cache_miss_duration_per_model", sel, rng, at)
        return CacheStats(
            hit_rate=hits,
            miss_rate=misses,
            hit_mean_us=hit_time / hits if hits > 0 else None,
            miss_mean_us=miss_time / misses if misses > 0 else None,
        )

    def _batch(
        self, sel: str, seconds: float, at: float, request_mean: float | None, exec_mean: float | None
    ) -> BatchProfile:
        # Per-step average execution batch, sampled across the window with a subquery; a step
        # spans a few scrapes so each rate() has enough points.
        step = min(seconds, 3 * self.scrape_interval_s)
        per_step = (
            f"(sum(rate(nv_inference_count{sel}[{_duration(step)}])) / "
            f"(sum(rate(nv_inference_exec_count{sel}[{_duration(step)}])) > 0))"
            f"[{_duration(seconds)}:{_duration(self.scrape_interval_s)}]"
        )
        return BatchProfile(
            request_mean=request_mean,
            exec_mean=exec_mean,
            exec_p50=self._scalar(f"quantile_over_time(0.5, {per_step})", at),
            exec_p90=self._scalar(f"quantile_over_time(0.9, {per_step})", at),
            exec_max=self._scalar(f"max_over_time({per_step})", at),
        )


def _add(parts: list[Quantiles]) -> Quantiles:
    """Stage quantiles summed per quantile: a conservative bound on the quantile of the sum."""

    def total(name: str) -> float | None:
        values = [getattr(p, name) for p in parts]
        present = [v for v in values if v is not None]
        return sum(present) if present else None

    return Quantiles(**{name: total(name) for name in QUANTILES})


def _error_text(body: bytes) -> str:
    try:
        payload = json.loads(body)
        return str(payload.get("error") or payload)[:300]
    except ValueError:
        return body[:300].decode("utf-8", "replace").strip() or "(empty body)"
