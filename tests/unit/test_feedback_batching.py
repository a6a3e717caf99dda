"""The batched Prometheus reading's pure parts: which series it asks for, and how answers split per model.

tests/integration/test_feedback_prometheus.py runs the queries against a real Prometheus and
compares every model with the per-model reading; these pin the pieces that decide it.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from honed.feedback import MetricsUnavailable, MetricWindow, PrometheusClient
from honed.feedback.prometheus import (
    GROUP,
    QUERIES,
    ModelKey,
    Sample,
    observation,
    series_selector,
    split,
    window_queries,
)

END = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
URL = "http://prometheus:9090"


def regexes(selector: str) -> dict[str, str]:
    """The regex each ``=~`` matcher of ``selector`` holds, as Prometheus reads the string."""
    return {label: json.loads(f'"{text}"') for label, text in re.findall(r'(\w+)=~"((?:[^"\\]|\\.)*)"', selector)}


def test_the_selector_matches_exactly_the_names_asked_for() -> None:
    names = ["resnet.v1", "a+b", "x(1)|y", "c[0]", "plain", "back\\slash", 'quo"te', "^$*?{2}"]
    keys = [ModelKey("vision", name) for name in names] + [ModelKey("", "plain"), ModelKey("nlp", "plain")]
    found = regexes(series_selector(keys, {}))
    assert set(found) == {"namespace", "model"}
    for name in names:  # Prometheus anchors the regex, as fullmatch does
        assert re.fullmatch(found["model"], name), name
    for near_miss in ["resnetXv1", "aab", "x(1)", "y", "c0", "plainer", "back\\\\slash", ""]:
        assert not re.fullmatch(found["model"], near_miss), near_miss
    assert re.fullmatch(found["namespace"], "")  # matches series without the label
    assert not re.fullmatch(found["namespace"], "vision2")


def test_the_selector_keeps_the_clients_matchers_and_is_stable() -> None:
    keys = [ModelKey("b", "y"), ModelKey("a", "x"), ModelKey("a", "y")]
    selector = series_selector(keys, {"service": "triton"})
    assert selector == '{service="triton",namespace=~"a|b",model=~"x|y"}'
    assert series_selector(reversed(keys), {"service": "triton"}) == selector


def test_every_query_keeps_the_model_in_its_grouping() -> None:
    queries = window_queries("{x}", 60, 15)
    assert len(queries) == QUERIES
    for name, promql in queries.items():
        aggregations = re.findall(r"\b(sum|max|min|avg|count)\s*(by\s*\([^)]*\))?\s*\(", promql)
        assert aggregations, name
        for _operator, grouping in aggregations:
            assert grouping.startswith(f"by ({GROUP}"), (name, promql)
    # The labels each query used to group by, next to the model's.
    assert f"by ({GROUP}, version)" in queries["versions"]
    assert f"by ({GROUP}, reason)" in queries["failures"]
    assert f"by ({GROUP}, quantile)" in queries["queue_q"]


def sample(namespace: str | None, model: str, value: float, **labels: str) -> Sample:
    base = {"model": model} if namespace is None else {"namespace": namespace, "model": model}
    return Sample({**base, **labels}, value)


def test_split_gives_each_pair_its_samples_and_drops_the_cross_product() -> None:
    keys = [ModelKey("a", "x"), ModelKey("b", "y"), ModelKey("", "z"), ModelKey("a", "ghost")]
    answer = [
        sample("a", "x", 1.0, quantile="0.5"),
        sample("a", "y", 2.0),  # namespaces and models asked for, but not this pair
        sample("b", "y", 3.0),
        sample(None, "z", 4.0),  # no namespace label: the namespace ""
        sample("a", "x", 5.0, quantile="0.99"),
        sample("c", "x", 6.0),
    ]
    assert split(answer, keys) == {
        keys[0]: [answer[0], answer[4]],
        keys[1]: [answer[2]],
        keys[2]: [answer[3]],
        keys[3]: [],
    }


def test_a_model_without_series_is_no_data() -> None:
    key = ModelKey("a", "x")
    result = observation(key, {"versions": [], "success": [sample("a", "x", 3.0)]}, seconds=60, end=END, url=URL)
    assert isinstance(result, MetricsUnavailable)
    assert result.model == "x" and result.at == END and result.url == URL
    assert "no Triton series for model 'x' in the last 60s" in result.reason


def test_a_model_with_series_and_no_traffic_is_a_window_of_zeros() -> None:
    key = ModelKey("a", "x")
    answers = {
        "versions": [sample("a", "x", 2.0, version="3")],
        "success": [sample("a", "x", 0.0)],
        "request_q": [sample("a", "x", float("nan"), quantile="0.99")],  # an empty summary
        "pending_max": [sample("a", "x", 0.0)],
    }
    result = observation(key, answers, seconds=60, end=END, url=URL)
    assert isinstance(result, MetricWindow)
    assert (result.model, result.versions, result.seconds) == ("x", ["3"], 60)
    assert (result.request_rate, result.failure_rate, result.exec_rate) == (0.0, 0.0, 0.0)
    assert result.request.mean_us is None and result.request.quantiles.p99 is None
    assert result.cache is None and result.batch.exec_mean is None and result.pending_max == 0.0


def test_the_cache_is_there_when_its_counters_are_even_at_zero() -> None:
    key = ModelKey("a", "x")
    answers = {
        "versions": [sample("a", "x", 1.0, version="1")],
        "success": [sample("a", "x", 10.0)],
        "cache": [sample("a", "x", 2.0)],
        "cache_hits": [sample("a", "x", 4.0)],
        "cache_hit_time": [sample("a", "x", 200.0)],
        "inferences": [sample("a", "x", 6.0)],
    }
    result = observation(key, answers, seconds=60, end=END, url=URL)
    assert isinstance(result, MetricWindow) and result.cache is not None
    assert (result.cache.hit_rate, result.cache.miss_rate, result.cache.hit_mean_us) == (4.0, 0.0, 50.0)
    assert result.cache.miss_mean_us is None
    assert result.batch.request_mean == 1.0  # 6 items over the 10 - 4 requests computed


def test_no_models_ask_nothing_and_a_dead_prometheus_blinds_every_model() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        client = PrometheusClient(f"http://127.0.0.1:{sock.getsockname()[1]}")
    assert client.windows([], seconds=60) == {}
    keys = [ModelKey("a", "x"), ModelKey("b", "x")]
    found = client.windows([*keys, ("a", "x")], seconds=60, at=END)
    assert list(found) == keys
    assert all(isinstance(o, MetricsUnavailable) and "cannot reach Prometheus" in o.reason for o in found.values())
    assert [o.model for o in found.values()] == ["x", "x"]


class _MatrixAnswer(BaseHTTPRequestHandler):
    """Answers every POST with a range result: a Prometheus answer the client cannot use."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # quiet test output


@pytest.fixture
def matrix_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MatrixAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_batched_query_that_fails_keeps_the_reason_short(matrix_server: str) -> None:
    keys = [ModelKey("team", f"model-{i:04}") for i in range(1000)]
    found = PrometheusClient(matrix_server).windows(keys, seconds=60, at=END)
    reasons = {o.reason for o in found.values() if isinstance(o, MetricsUnavailable)}
    assert len(found) == 1000 and len(reasons) == 1
    (reason,) = reasons
    assert "expected an instant vector" in reason and "got matrix" in reason and len(reason) < 400
