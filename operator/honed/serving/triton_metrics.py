"""Read Triton's Prometheus text metrics: counters per model, summed over versions."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    """One sample: the metric's name as Triton writes it, its labels and value."""

    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Every sample in Prometheus text exposition format, read by ``prometheus_client``'s parser.

    The parser names a counter's samples the OpenMetrics way (``<family>_total``); they keep the
    family's name here, which is the name Triton writes (none of its counters ends in ``_total``).
    """
    return [
        Sample(_written_name(family, sample.name), dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _written_name(family: Metric, sample_name: str) -> str:
    return family.name if family.type == "counter" and sample_name == f"{family.name}_total" else sample_name


def model_value(text: str, metric: str, model: str, version: str | None = None) -> float:
    """Sum of ``metric`` for ``model`` (one version, or all); 0 when Triton has not reported it."""
    return sum(
        s.value
        for s in parse_metrics(text)
        if s.name == metric
        and s.labels.get("model") == model
        and (version is None or s.labels.get("version") == version)
        and "quantile" not in s.labels
    )


@dataclass(frozen=True)
class ModelTraffic:
    """What Triton observed for one model: requests, batches run, cache hits and misses."""

    inferences: float  # nv_inference_count: items inferred (a batch-4 request counts 4)
    requests: float  # nv_inference_request_success
    executions: float  # nv_inference_exec_count: model runs (one per dynamic batch)
    cache_hits: float
    cache_misses: float

    @property
    def average_batch(self) -> float:
        """Items per model execution: the dynamic batcher's average batch (0.0 before any)."""
        return self.inferences / self.executions if self.executions else 0.0


def model_traffic(text: str, model: str) -> ModelTraffic:
    """Triton's counters for ``model`` in metrics ``text``, summed over its versions."""
    return ModelTraffic(
        inferences=model_value(text, "nv_inference_count", model),
        requests=model_value(text, "nv_inference_request_success", model),
        executions=model_value(text, "nv_inference_exec_count", model),
        cache_hits=model_value(text, "nv_cache_num_hits_per_model", model),
        cache_misses=model_value(text, "nv_cache_num_misses_per_model", model),
    )
