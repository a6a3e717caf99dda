"""The Prometheus client against a real Prometheus scraping a real Triton, and one holding many models.

The window's numbers must agree with what Triton itself counted, and every way Prometheus can
fail to answer must come back as MetricsUnavailable with a reason, never as an exception. Read
in one batch, every model must get exactly what the per-model reading gave it, with the same
number of queries for one model as for thousands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import tritonclient.grpc as grpcclient

from honed.feedback import MetricsUnavailable, MetricWindow, Observation, PrometheusClient
from honed.feedback.prometheus import QUERIES, ModelKey, PrometheusError
from honed.serving.triton_metrics import model_traffic
from tests.fixtures.feedback import MODEL, SCRAPE_S, Bench, feeds, tensors
from tests.fixtures.per_model_prometheus import PerModelClient
from tests.fixtures.prometheus import INSTALL_HINT, PrometheusServer, prometheus_binary, promtool_binary
from tests.fixtures.triton_series import DURATION_S, END, START, Served, series
from tests.fixtures.triton_series import SCRAPE_S as SCRAPE_INTERVAL_S

pytestmark = pytest.mark.slow


def test_a_window_agrees_with_tritons_own_counters(bench: Bench) -> None:
    client = grpcclient.InferenceServerClient(bench.grpc)
    inputs = feeds(20, seed=7)
    # The window spans a quiet stretch before the burst and one after it: rate() extrapolates the
    # increase between the first and last samples to the window's edges, so the shorter the window
    # the more a late scrape (a loaded machine) inflates the total (82 for 60 seen with 2 s edges).
    start = time.time()
    time.sleep(3 * SCRAPE_S)
    before = model_traffic(bench.triton.metrics_text(), MODEL)
    for _ in range(3):  # each input three times: 20 misses, then 40 hits
        for array in inputs:
            client.infer(MODEL, tensors(array))
    client.close()
    after = model_traffic(bench.triton.metrics_text(), MODEL)
    time.sleep(3 * SCRAPE_S)
    seconds = time.time() - start
    end = datetime.now(UTC)
    window = bench.client.window(MODEL, seconds=seconds, at=end)
    assert isinstance(window, MetricWindow), window
    # Triton's own series, read in a batch, give what the per-model reading gave.
    assert window == PerModelClient(bench.prometheus.url, scrape_interval_s=SCRAPE_S).window(
        MODEL, seconds=seconds, at=end
    )
    hits, misses = after.cache_hits - before.cache_hits, after.cache_misses - before.cache_misses
    assert (hits, misses) == (40, 20)
    # Extrapolated to the edges of a window of about 7 scrapes, the total is within a scrape or two.
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


# -- many models in one Prometheus: one set of queries for all of them ----------------------------

SERVED = [
    Served("vision", "resnet", rate=30, pods=2, versions=("1", "2"), batch=4, hit_ratio=0.4,
           failures={"REJECTED": 0.5, "BACKEND": 0.2}),
    Served("vision", "bert", rate=12, pods=3, batch=2, items=2),
    Served("nlp", "bert", rate=5, latency_us=9000),  # the same model name in another namespace
    Served("nlp", "idle", rate=0),  # series, and no traffic
    Served("vision", "resnet.v1+ft(2)", rate=4),  # regex metacharacters in the name
    Served("", "mlp", rate=8),  # a Triton scraped without a namespace label (local runs)
    # Nobody asks for these: the cross product of the namespaces and the names asked for, and
    # another namespace.
    Served("nlp", "resnet", rate=50, pods=2),
    Served("other", "resnet", rate=70),
]  # fmt: skip
ASKED = [
    ModelKey("vision", "resnet"),
    ModelKey("vision", "bert"),
    ModelKey("nlp", "bert"),
    ModelKey("nlp", "idle"),
    ModelKey("vision", "resnet.v1+ft(2)"),
    ModelKey("", "mlp"),
    ModelKey("nlp", "ghost"),  # no series at all
]
# (window, its end): across the rollout of resnet's version 2, after it, and the whole recording.
WINDOWS = [(60.0, END - 3), (300.0, START + 600), (120.0, START + 480), (float(DURATION_S), END)]


@pytest.fixture(scope="module")
def cluster_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus holding the series of SERVED, as a cluster's would."""
    if prometheus_binary() is None or promtool_binary() is None:
        pytest.skip(f"prometheus or promtool not found: {INSTALL_HINT}")
    server = PrometheusServer(tmp_path_factory.mktemp("cluster-prometheus"))
    server.backfill(series(SERVED))
    with server:
        yield server


def per_model(prometheus: PrometheusServer, key: ModelKey) -> PerModelClient:
    """The operator's reading before batching: one client per namespace, one model per window."""
    matchers = {"namespace": key.namespace} if key.namespace else {}
    return PerModelClient(prometheus.url, scrape_interval_s=SCRAPE_INTERVAL_S, matchers=matchers)


@pytest.mark.parametrize(("seconds", "end"), WINDOWS)
def test_windows_gives_every_model_what_it_observed_alone(
    cluster_prometheus: PrometheusServer, seconds: float, end: int
) -> None:
    at = datetime.fromtimestamp(end, UTC)
    client = PrometheusClient(cluster_prometheus.url, scrape_interval_s=SCRAPE_INTERVAL_S)
    batched = client.windows(ASKED, seconds=seconds, at=at)
    assert list(batched) == ASKED
    for key in ASKED:
        alone = per_model(cluster_prometheus, key).window(key.model, seconds=seconds, at=at)
        assert batched[key] == alone, key
        # window() is windows() for one model, in the namespace its matchers name.
        single = PrometheusClient(cluster_prometheus.url, scrape_interval_s=SCRAPE_INTERVAL_S,
                                  matchers=per_model(cluster_prometheus, key).matchers)  # fmt: skip
        assert single.window(key.model, seconds=seconds, at=at) == alone, key


def test_the_recorded_models_cover_every_part_of_a_window(cluster_prometheus: PrometheusServer) -> None:
    # What the comparison above goes through: otherwise equal could mean equally empty.
    client = PrometheusClient(cluster_prometheus.url, scrape_interval_s=SCRAPE_INTERVAL_S)
    found = client.windows(ASKED, seconds=300, at=datetime.fromtimestamp(START + 600, UTC))
    resnet, bert, nlp_bert = (found[k] for k in ASKED[:3])
    assert isinstance(resnet, MetricWindow) and isinstance(bert, MetricWindow) and isinstance(nlp_bert, MetricWindow)
    assert resnet.versions == ["1", "2"] and set(resnet.failures_by_reason) == {"REJECTED", "BACKEND"}
    assert resnet.cache is not None and resnet.cache.hit_ratio == pytest.approx(0.4, abs=0.1)
    assert resnet.request.quantiles.p99 is None and resnet.compute.quantiles.p99 is not None
    assert resnet.batch.exec_p50 is not None and resnet.pending_max is not None
    assert bert.cache is None and bert.request.quantiles.p99 is not None
    assert bert.batch.request_mean == pytest.approx(2.0)  # two items a request
    # Three pods at 12/s here, one at 5/s in nlp: each namespace's own, never their sum.
    assert bert.request_rate == pytest.approx(36, rel=0.2) and nlp_bert.request_rate == pytest.approx(5, rel=0.3)
    assert nlp_bert.request.quantiles.p50 == pytest.approx(2 * 9000, rel=0.35)
    assert isinstance(found[ModelKey("", "mlp")], MetricWindow)
    assert found[ModelKey("vision", "resnet.v1+ft(2)")].request_rate == pytest.approx(4, rel=0.3)  # type: ignore[union-attr]


def test_no_series_is_no_data_and_no_traffic_is_zero(cluster_prometheus: PrometheusServer) -> None:
    client = PrometheusClient(cluster_prometheus.url, scrape_interval_s=SCRAPE_INTERVAL_S)
    found = client.windows(ASKED, seconds=120, at=datetime.fromtimestamp(END, UTC))
    ghost, idle = found[ModelKey("nlp", "ghost")], found[ModelKey("nlp", "idle")]
    assert isinstance(ghost, MetricsUnavailable)
    assert "no Triton series for model 'ghost'" in ghost.reason
    assert isinstance(idle, MetricWindow)
    assert (idle.request_rate, idle.exec_rate, idle.cache, idle.p99_us()) == (0.0, 0.0, None, None)
    # Only models without series: the same answer, after the one query that finds none.
    alone = client.windows([ModelKey("nlp", "ghost")], seconds=120, at=datetime.fromtimestamp(END, UTC))
    assert alone == {ModelKey("nlp", "ghost"): ghost}


def queries_sent(prometheus: PrometheusServer, call: Callable[[], object]) -> int:
    before = prometheus.queries_answered()
    call()
    # Prometheus counts a request after answering it: read until the count settles.
    counts = [prometheus.queries_answered()]
    while len(counts) < 2 or counts[-1] != counts[-2]:
        time.sleep(0.05)
        counts.append(prometheus.queries_answered())
    return counts[-1] - before


def test_queries_per_interval_do_not_grow_with_the_number_of_models(cluster_prometheus: PrometheusServer) -> None:
    client = PrometheusClient(cluster_prometheus.url, scrape_interval_s=SCRAPE_INTERVAL_S)
    at = datetime.fromtimestamp(END, UTC)
    # Thousands of models, most without series: a selector far longer than a URL should be.
    many = [*ASKED, *(ModelKey(f"team-{i % 40}", f"a-model-with-a-long-name-{i:04}") for i in range(2000))]
    found: dict[ModelKey, Observation] = {}
    one = queries_sent(cluster_prometheus, lambda: client.windows(ASKED[:1], seconds=60, at=at))
    all_of_them = queries_sent(cluster_prometheus, lambda: found.update(client.windows(many, seconds=60, at=at)))
    assert one == all_of_them == QUERIES
    assert len(found) == len(many)
    assert found[ASKED[0]] == client.windows(ASKED[:1], seconds=60, at=at)[ASKED[0]]
    assert isinstance(found[many[-1]], MetricsUnavailable)
