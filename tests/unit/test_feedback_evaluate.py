"""evaluate(): conditions, events and the persisted state the operator's timer records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from honed.api.spec import Feedback
from honed.feedback import (
    Deployment,
    FeedbackState,
    Keep,
    MetricsUnavailable,
    MetricWindow,
    evaluate,
)

SERIES = Path(__file__).parent / "test_feedback_series"
SLO = Feedback.from_spec({"p99LatencyMs": 100, "interval": "3s", "cooldown": "60s"})
DEPLOYED = Deployment(candidate="onnx-fp32.onnxruntime", pool="cpu", version="1", max_batch_size=8)


def windows(name: str) -> list[MetricWindow]:
    raw = json.loads((SERIES / f"{name}.json").read_text())
    return [MetricWindow.model_validate({k: v for k, v in w.items() if k != "_phase"}) for w in raw]


def unavailable(at: datetime) -> MetricsUnavailable:
    return MetricsUnavailable(
        model="mlp",
        at=at,
        url="http://127.0.0.1:9",
        reason="cannot reach Prometheus at http://127.0.0.1:9: [Errno 111] Connection refused",
    )


def condition(evaluation, kind: str):  # type: ignore[no-untyped-def]
    return next(c for c in evaluation.conditions if c.type == kind)


def test_unavailable_metrics_keep_serving_and_say_why_once() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = evaluate(unavailable(now), SLO, DEPLOYED, [], FeedbackState(), now)
    assert isinstance(first.decision, Keep)
    assert "Connection refused" in first.decision.reason
    cond = condition(first, "MetricsUnavailable")
    assert (cond.status, cond.reason) == ("True", "PrometheusUnreachable")
    assert condition(first, "SLOMet").status == "Unknown"
    assert [e.reason for e in first.events] == ["MetricsUnavailable"]
    again = evaluate(unavailable(now + timedelta(seconds=4)), SLO, DEPLOYED, [], first.state, now)
    assert again.events == [], "one Event per outage, not one per interval"
    assert again.state.last_decision is not None and again.state.last_decision.action == "Keep"


def test_no_series_for_the_model_is_its_own_reason() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    blind = MetricsUnavailable(
        model="mlp",
        at=now,
        url="http://p",
        reason="Prometheus at http://p has no Triton series for model 'mlp'",
    )
    assert condition(evaluate(blind, SLO, DEPLOYED, [], FeedbackState(), now), "MetricsUnavailable").reason == (
        "NoTritonSeries"
    )


def test_recovery_after_an_outage_is_an_event() -> None:
    window = windows("steady")[0]
    state = FeedbackState(metrics_available=False)
    result = evaluate(window, SLO.model_copy(update={"p99_latency_ms": 1000.0}), DEPLOYED, [], state, window.end)
    assert "MetricsAvailable" in [e.reason for e in result.events]
    assert condition(result, "MetricsUnavailable").status == "False"
    assert result.state.metrics_available is True


def test_breach_events_and_the_action_carry_the_numbers() -> None:
    series = windows("overload")
    state, reasons, decisions = FeedbackState(), [], []
    for window in series:
        result = evaluate(window, SLO, DEPLOYED, [], state, window.end)
        state = result.state
        reasons += [e.reason for e in result.events]
        decisions.append(result)
    assert reasons.count("SLOViolated") == 1, reasons
    assert "Reoptimize" in reasons
    action_event = next(e for r in decisions for e in r.events if e.reason == "Reoptimize")
    assert "p99Ms=" in action_event.message and "budgetMs=100" in action_event.message
    assert len(action_event.message) <= 1000
    recorded = state.last_decision
    assert recorded is not None and recorded.at == series[-1].end
    slo_met = [condition(r, "SLOMet").status for r in decisions]
    assert "False" in slo_met


def test_state_round_trips_through_status_json() -> None:
    series = windows("overload")
    state = FeedbackState()
    for window in series:
        state = evaluate(window, SLO, DEPLOYED, [], state, window.end).state
    as_status = json.loads(state.model_dump_json(by_alias=True))
    assert "badWindows" in as_status and "lastDecision" in as_status
    assert FeedbackState.model_validate(as_status) == state
