"""Read Triton's per-model metrics from Prometheus' HTTP API (``/api/v1/query``).

One ``windows()`` call observes any number of models with one fixed set of instant queries, all
evaluated at the same instant: every query is aggregated ``by (namespace, model)`` rather than
filtered to one model, and the answers are split per model. The number of queries per interval
therefore does not grow with the number of models (``QUERIES`` of them, one when no requested
model has series at all). Each model gets a ``MetricWindow``, or ``MetricsUnavailable`` with the
reason when Prometheus cannot answer: the feedback loop must keep serving and say why it is
blind, so no network or protocol error escapes as an exception.

The answers are split by pure functions (``series_selector``, ``window_queries``, ``split``,
``observation``) so they can be tested without a Prometheus; the client only sends the queries.
It is synchronous on purpose (plain urllib, no new dependency); the operator calls it from a
worker thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

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
# Triton labels its series with the model name; the scrape adds the pod's namespace (PodMonitor
# and the usual kubernetes_sd relabelling). A series without the label, as a Triton scraped
# directly in local runs has, reads as the namespace "".
NAMESPACE_LABEL = "namespace"
MODEL_LABEL = "model"
GROUP = f"{NAMESPACE_LABEL}, {MODEL_LABEL}"
# Go's regexp.QuoteMeta set: names escaped with exactly these keep a literal alternation, which
# Prometheus looks up in its index per name instead of matching the regex against every value.
_REGEX_META = frozenset(r"\.+*?()|[]{}^$")


class PrometheusError(Exception):
    """Prometheus did not give a usable answer; the message says what happened."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value at the query's instant."""

    labels: dict[str, str]
    value: float


class ModelKey(NamedTuple):
    """A served model: the namespace its Triton's series are labelled with, and the Triton model name."""

    namespace: str
    model: str


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _duration(seconds: float) -> str:
    # PromQL durations take integers only; milliseconds keep sub-second windows exact.
    return f"{max(1, round(seconds * 1000))}ms"


def _literal_regex(values: Iterable[str]) -> str:
    """A regex matching exactly ``values`` (Prometheus anchors it); sorted, so queries are stable."""
    return "|".join("".join(f"\\{c}" if c in _REGEX_META else c for c in v) for v in sorted(set(values)))


def series_selector(keys: Iterable[ModelKey], matchers: Mapping[str, str]) -> str:
    """The selector of every query: ``matchers`` exactly, and the requested namespaces and models.

    Two regexes cannot say "these (namespace, model) pairs": they select the cross product of the
    namespaces and the models, and ``split`` drops the pairs nobody asked for. That superset is
    bounded by the models with those names in those namespaces, so Prometheus reads little more
    than the series asked for; a namespace matcher alone would have it aggregate every model of
    those namespaces, the ones other replicas watch included. The selector grows with the number
    of models, so ``query`` sends it in a POST form, never in a URL.
    """
    keys = list(keys)
    labels = [f'{k}="{_escape(v)}"' for k, v in matchers.items()]
    labels.append(f'{NAMESPACE_LABEL}=~"{_escape(_literal_regex(k.namespace for k in keys))}"')
    labels.append(f'{MODEL_LABEL}=~"{_escape(_literal_regex(k.model for k in keys))}"')
    return "{" + ",".join(labels) + "}"


def window_queries(sel: str, seconds: float, scrape_interval_s: float) -> dict[str, str]:
    """Every query one window needs, by name, each aggregated per model (``GROUP``) over ``sel``.

    Each keeps the meaning it had filtered to one model: the labels a query used to aggregate by
    (quantile, version, reason) stay in its grouping next to ``GROUP``, and both sides of the batch
    size ratio carry ``GROUP`` so the division matches per model.
    """
    rng = _duration(seconds)
    step = _duration(min(seconds, 3 * scrape_interval_s))
    # Per-step average execution batch, sampled across the window with a subquery; a step spans
    # a few scrapes so each rate() has enough points.
    per_step = (
        f"(sum by ({GROUP}) (rate(nv_inference_count{sel}[{step}])) / "
        f"(sum by ({GROUP}) (rate(nv_inference_exec_count{sel}[{step}])) > 0))"
        f"[{rng}:{_duration(scrape_interval_s)}]"
    )

    def rate(metric: str) -> str:
        return f"sum by ({GROUP}) (rate({metric}{sel}[{rng}]))"

    def quantiles(metric: str) -> str:
        # Triton's summaries cover their own sliding minute; the value at the window's end is
        # the one that overlaps the previous window least. Max over replicas and versions.
        return f"max by ({GROUP}, quantile) (last_over_time({metric}{sel}[{rng}]))"

    return {
        "versions": f"count by ({GROUP}, version) (last_over_time(nv_inference_count{sel}[{rng}]))",
        "success": rate("nv_inference_request_success"),
        "failures": f"sum by ({GROUP}, reason) (rate(nv_inference_request_failure{sel}[{rng}]))",
        "inferences": rate("nv_inference_count"),
        "execs": rate("nv_inference_exec_count"),
        "request_time": rate("nv_inference_request_duration_us"),
        "request_q": quantiles("nv_inference_request_summary_us"),
        "queue_time": rate("nv_inference_queue_duration_us"),
        "queue_q": quantiles("nv_inference_queue_summary_us"),
        **{f"compute_{stage}_time": rate(f"nv_inference_compute_{stage}_duration_us") for stage in COMPUTE_STAGES},
        **{f"compute_{stage}_q": quantiles(f"nv_inference_compute_{stage}_summary_us") for stage in COMPUTE_STAGES},
        # A model has a cache when Triton publishes its cache counters, even ones still at zero.
        "cache": f"count by ({GROUP}) (last_over_time(nv_cache_num_misses_per_model{sel}[{rng}]))",
        "cache_hits": rate("nv_cache_num_hits_per_model"),
        "cache_misses": rate("nv_cache_num_misses_per_model"),
        "cache_hit_time": rate("nv_cache_hit_duration_per_model"),
        "cache_miss_time": rate("nv_cache_miss_duration_per_model"),
        "batch_p50": f"quantile_over_time(0.5, {per_step})",
        "batch_p90": f"quantile_over_time(0.9, {per_step})",
        "batch_max": f"max_over_time({per_step})",
        "pending_max": f"max by ({GROUP}) (max_over_time(nv_inference_pending_request_count{sel}[{rng}]))",
    }


# The queries one windows() call sends, whatever the number of models.
QUERIES = len(window_queries("{}", 60, 15))


def split(samples: Iterable[Sample], keys: Iterable[ModelKey]) -> dict[ModelKey, list[Sample]]:
    """A query's samples per requested model, in Prometheus' order; other models' are dropped."""
    by_key: dict[ModelKey, list[Sample]] = {key: [] for key in keys}
    for sample in samples:
        key = ModelKey(sample.labels.get(NAMESPACE_LABEL, ""), sample.labels.get(MODEL_LABEL, ""))
        if key in by_key:
            by_key[key].append(sample)
    return by_key


def no_series(key: ModelKey, *, seconds: float, end: datetime, url: str) -> MetricsUnavailable:
    """What a model without any Triton series in the window observes: no data, not zero traffic."""
    return MetricsUnavailable(
        model=key.model,
        at=end,
        url=url,
        reason=f"Prometheus at {url} has no Triton series for model {key.model!r} in the last "
        f"{seconds:g}s (is the Triton metrics port scraped, with summary latencies on?)",
    )


def observation(
    key: ModelKey, answers: Mapping[str, list[Sample]], *, seconds: float, end: datetime, url: str
) -> Observation:
    """One model's window from its share of every query's answer (``answers`` by query name).

    A model that has series but no traffic gets a window of zero rates; one without a single
    ``nv_inference_count`` series in the window gets ``no_series``: the policy tells them apart.
    """
    versions = sorted(s.labels.get("version", "") for s in answers.get("versions", []))
    if not versions:
        return no_series(key, seconds=seconds, end=end, url=url)

    def scalar(name: str) -> float | None:
        samples = answers.get(name, [])
        return finite(samples[0].value) if samples else None

    def rate(name: str) -> float:
        return scalar(name) or 0.0  # a counter with no series in the window did not move

    def quantiles(name: str) -> Quantiles:
        by_q = {s.labels.get("quantile"): finite(s.value) for s in answers.get(name, [])}
        return Quantiles(**{field: by_q.get(q) for field, q in QUANTILES.items()})

    def per(numerator: float, denominator: float) -> float | None:
        return numerator / denominator if denominator > 0 else None

    success = rate("success")
    failures = {s.labels.get("reason", "unknown"): v for s in answers.get("failures", []) if (v := finite(s.value))}
    failure = sum(failures.values())
    inferences = rate("inferences")
    execs = rate("execs")
    cache = None
    if answers.get("cache"):
        hits, misses = rate("cache_hits"), rate("cache_misses")
        cache = CacheStats(
            hit_rate=hits,
            miss_rate=misses,
            hit_mean_us=rate("cache_hit_time") / hits if hits > 0 else None,
            miss_mean_us=rate("cache_miss_time") / misses if misses > 0 else None,
        )
    computed = success - (cache.hit_rate if cache else 0.0)
    compute_sum = sum(rate(f"compute_{stage}_time") for stage in COMPUTE_STAGES)
    start = end.timestamp() - seconds
    return MetricWindow(
        model=key.model,
        start=datetime.fromtimestamp(start, UTC),
        end=end,
        versions=versions,
        request_rate=success + failure,
        failure_rate=failure,
        failures_by_reason=failures,
        inference_rate=inferences,
        exec_rate=execs,
        request=Latency(mean_us=per(rate("request_time"), success), quantiles=quantiles("request_q")),
        queue=Latency(mean_us=per(rate("queue_time"), success), quantiles=quantiles("queue_q")),
        compute=Latency(
            mean_us=per(compute_sum, computed),
            quantiles=_add([quantiles(f"compute_{stage}_q") for stage in COMPUTE_STAGES]),
        ),
        cache=cache,
        batch=BatchProfile(
            request_mean=per(inferences, computed),
            exec_mean=per(inferences, execs),
            exec_p50=scalar("batch_p50"),
            exec_p90=scalar("batch_p90"),
            exec_max=scalar("batch_max"),
        ),
        pending_max=scalar("pending_max"),
    )


class PrometheusClient:
    """Queries one Prometheus for the Triton metrics of models.

    ``matchers`` are extra label matchers added to every series selector (for example the
    service of the Triton deployments, so other Tritons serving a model with the same name in the
    same namespace are not mixed in). ``scrape_interval_s`` is the Prometheus scrape interval of
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
        # A form-encoded POST (which /api/v1/query accepts like a GET): batched selectors name
        # every model, longer than the URLs proxies and servers accept.
        request = urllib.request.Request(
            f"{self.url}/api/v1/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
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
            raise PrometheusError(f"expected an instant vector for {_short(promql)}, got {data.get('resultType')}")
        try:
            return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError(f"malformed result from {self.url} for {_short(promql)}") from None

    def windows(
        self, models: Iterable[tuple[str, str]], *, seconds: float, at: datetime | None = None
    ) -> dict[ModelKey, Observation]:
        """Each model's metrics over the ``seconds`` before ``at`` (default: now), by ``ModelKey``.

        ``models`` are (namespace, Triton model name) pairs. At most ``QUERIES`` queries, however
        many models; when Prometheus cannot answer, every model gets the same MetricsUnavailable.
        """
        end = at or datetime.now(UTC)
        keys = list(dict.fromkeys(ModelKey(*key) for key in models))
        if not keys:
            return {}
        try:
            return self._windows(keys, seconds, end)
        except PrometheusError as exc:
            return {key: MetricsUnavailable(model=key.model, at=end, url=self.url, reason=str(exc)) for key in keys}

    def window(self, model: str, *, seconds: float, at: datetime | None = None) -> Observation:
        """One model's metrics: ``windows()`` for the model in the namespace ``matchers`` name.

        Without a namespace matcher that is the namespace "", the series without the label, as a
        Triton scraped directly (local runs) has.
        """
        key = ModelKey(self.matchers.get(NAMESPACE_LABEL, ""), model)
        return self.windows([key], seconds=seconds, at=at)[key]

    def _windows(self, keys: list[ModelKey], seconds: float, end: datetime) -> dict[ModelKey, Observation]:
        at = end.timestamp()
        queries = window_queries(series_selector(keys, self.matchers), seconds, self.scrape_interval_s)
        answers = {"versions": split(self.query(queries.pop("versions"), at), keys)}
        if any(answers["versions"].values()):  # nobody has series: the other queries would say nothing
            answers.update({name: split(self.query(promql, at), keys) for name, promql in queries.items()})
        return {
            key: observation(
                key, {name: by_key[key] for name, by_key in answers.items()}, seconds=seconds, end=end, url=self.url
            )
            for key in keys
        }


def _add(parts: list[Quantiles]) -> Quantiles:
    """Stage quantiles summed per quantile: a conservative bound on the quantile of the sum."""

    def total(name: str) -> float | None:
        values = [getattr(p, name) for p in parts]
        present = [v for v in values if v is not None]
        return sum(present) if present else None

    return Quantiles(**{name: total(name) for name in QUANTILES})


def _short(promql: str, limit: int = 200) -> str:
    # A batched query names every model: the reason ends up in a condition message, so it gets
    # the query's start, enough to tell which one failed.
    return repr(promql if len(promql) <= limit else promql[:limit] + "…")


def _error_text(body: bytes) -> str:
    try:
        payload = json.loads(body)
        return str(payload.get("error") or payload)[:300]
    except ValueError:
        return body[:300].decode("utf-8", "replace").strip() or "(empty body)"
