"""The Prometheus client against a real Prometheus scraping a real Triton.

The window's numbers must agree with what Triton itself counted, and every way Prometheus can
fail to answer must come back as MetricsUnavailable with a reason, never as an exception.
"""

from __future__ import annotations

import time

import pytest
import tritonclient.grpc as grpcclient

from honed.feedback import MetricsUnavailable, MetricWindow, PrometheusClient
from honed.feedback.prometheus import PrometheusError
from honed.serving.metrics import model_traffic
from tests.fixtures.feedback import MODEL, SCRAPE_S, Bench, feeds, tensors
from tests.fixtures.prometheus import PrometheusServer

pytestmark = pytest.mark.slow


def test_a_window_agrees_with_tritons_own_counters(bench: Bench) -> None:
    client = grpcclient.InferenceServerClient(bench.grpc)
    inputs = feeds(20, seed=7)
    time.sleep(3 * SCRAPE_S)  # a quiet stretch before the burst, so the window sees all of it
    before = model_traffic(bench.triton.metrics_text(), MODEL)
    start = time.time()
    for _ in range(3):  # each input three times: 20 misses, then 40 hits
        for array in inputs:
            client.infer(MODEL, tensors(array))
    client.close()
    after = model_traffic(bench.triton.metrics_text(), MODEL)
    time.sleep(3 * SCRAPE_S)  # the last scrape after the burst
    seconds = time.time() - start + 2 * SCRAPE_S
    window = bench.client.window(MODEL, seconds=seconds)
    assert isinstance(window, MetricWindow), window
    hits, misses = after.cache_hits - before.cache_hits, after.cache_misses - before.cache_misses
    assert (hits, misses) == (40, 20)
    # rate() extrapolates to the window's edges; the totals match within a scrape or two.
    assert window.cache is not None
    assert window.cache.hit_ratio == pytest.approx(hits / (hits + misses), abs=0.05)
    assert window.request_rate * window.seconds == pytest.approx(60, rel=0.35)
    assert window.failure_rate == 0.0
    assert window.batch.request_mean == pytest.approx(1.0, rel=0.25)
    assert window.versions == [str(bench.written.version)]
    assert window.queue.quantiles.p99 is not None and window.compute.quantiles.p99 is not None
    assert window.request.quantiles.p99 is None, "Triton publishes no request summary with the cache on"
    assert window.p99_us() == window.queue.quantiles.p99 + window.compute.quantiles.p99


def test_a_model_prometheus_has_never_seen_is_unavailable_with_the_reason(bench: Bench) -> None:
    result = bench.client.window("no-such-model", seconds=10)
    assert isinstance(result, MetricsUnavailable)
    assert "no Triton series for model 'no-such-model'" in result.reason


def test_something_that_is_not_prometheus_is_unavailable_with_the_reason(bench: Bench) -> None:
    # Triton's own HTTP port: a real server that answers, just not the Prometheus API.
    result = PrometheusClient(bench.triton.endpoints.http_url).window(MODEL, seconds=10)
    assert isinstance(result, MetricsUnavailable)
    assert bench.triton.endpoints.http_url in result.reason


def test_a_bad_query_reports_prometheus_own_error(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusError, match=r"HTTP 400.*parse error"):
        PrometheusClient(prometheus.url).query("sum(")


def test_a_stopped_prometheus_is_unavailable_with_the_reason(prometheus: PrometheusServer) -> None:
    client = PrometheusClient(prometheus.url, timeout_s=2)
    assert client.query("vector(2)")[0].value == 2.0
    prometheus.stop()
    result = client.window(MODEL, seconds=10)
    assert isinstance(result, MetricsUnavailable)
    assert "cannot reach Prometheus" in result.reason and "refused" in result.reason.lower()
