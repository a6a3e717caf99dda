"""spec.feedback parsing, decisions' wire format, candidate options and the client's failure paths."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter

from honed.api.durations import Seconds
from honed.api.spec import Feedback
from honed.errors import InputError
from honed.feedback import Decision, MetricsUnavailable, Option, PrometheusClient, Reoptimize
from honed.feedback.prometheus import ModelKey, PrometheusError, series_selector


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m", 60), ("1.5h", 5400), ("1h30m", 5400), (45, 45), ("250ms", 0.25)],
)
def test_durations(text: object, seconds: float) -> None:
    assert TypeAdapter(Seconds).validate_python(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1m", "0s", True, "1w", "7", "1d"])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        TypeAdapter(Seconds).validate_python(bad)


def test_spec_feedback_from_the_manifest() -> None:
    slo = Feedback.from_spec(
        {
            "enabled": True,
            "p99LatencyMs": 50,
            "interval": "1m",
            "cooldown": "30m",
            "maxReoptimizationsPerDay": 2,
        }
    )
    assert (slo.p99_budget_us, slo.interval_s, slo.cooldown_s, slo.max_reoptimizations_per_day) == (
        50_000,
        60,
        1800,
        2,
    )
    assert Feedback.from_spec(None).p99_latency_ms is None
    assert Feedback.from_spec({"badWindows": None, "cacheProbeAfter": "2h"}).bad_windows == 2


def test_bad_spec_feedback_names_the_field() -> None:
    with pytest.raises(InputError, match=r"spec\.feedback\.cooldown"):
        Feedback.from_spec({"cooldown": "later"})
    with pytest.raises(InputError, match=r"spec\.feedback\.maxFailureRatio"):
        Feedback.from_spec({"maxFailureRatio": 2})


def test_decisions_serialize_with_their_action_and_camel_case() -> None:
    decision = Reoptimize(trigger="SLOViolation", batch_sizes=[1, 12], concurrency=9, reason="r", numbers={"p99Ms": 80})
    wire = decision.model_dump(by_alias=True)
    assert wire["action"] == "Reoptimize" and wire["batchSizes"] == [1, 12]
    assert TypeAdapter(Decision).validate_python(wire) == decision
    assert "batch sizes [1, 12]" in decision.summary()


def test_option_latency_between_and_beyond_benchmarked_batches() -> None:
    option = Option(name="x", p99_ms_by_batch={1: 2.0, 8: 10.0})
    assert option.p99_ms_at(1) == 2.0
    assert option.p99_ms_at(5.5) == 10.0
    assert option.p99_ms_at(16) == 20.0
    assert Option(name="y").p99_ms_at(1) is None


def test_unreachable_prometheus_is_a_result_not_an_exception() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = PrometheusClient(f"http://127.0.0.1:{port}").window("m", seconds=60)
    assert isinstance(result, MetricsUnavailable)
    assert "cannot reach Prometheus" in result.reason and "refused" in result.reason.lower()


def test_a_prometheus_that_never_answers_times_out_with_a_reason() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
        thread.start()
        client = PrometheusClient(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=0.3)
        result = client.window("m", seconds=60, at=datetime(2026, 1, 1, tzinfo=UTC))
        for conn in accepted:
            conn.close()
    assert isinstance(result, MetricsUnavailable)
    assert "0.3s" in result.reason or "timed out" in result.reason


def test_query_errors_raise_prometheus_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PrometheusError):
        PrometheusClient(f"http://127.0.0.1:{port}").query("up")


def test_label_values_are_escaped_in_selectors() -> None:
    selector = series_selector([ModelKey("ns", "m\\x")], {"service": 'a"b'})
    assert selector == '{service="a\\"b",namespace=~"ns",model=~"m\\\\\\\\x"}'
