"""The feedback policy on metric series recorded from a real Triton scraped by a real Prometheus.

The series (tests/unit/test_feedback_series/*.json) were recorded with
``python -m tests.fixtures.record_feedback_series`` and the integration tests: the engine's
winner for a slow MLP (a few ms per item) served by Triton on this 2-core machine, 1 s scrapes,
3 s windows (60 s for "noisy"), client threads at the concurrency in each window's ``_phase``.
Cases the recordings cannot show (failing requests, queue-bound latency) are derived from
recorded windows by changing only the fields in question, and say so.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from honed.api.spec import Feedback
from honed.feedback import (
    Deployment,
    Fallback,
    FeedbackState,
    Keep,
    MetricWindow,
    Option,
    Reoptimize,
    Retune,
)
from honed.feedback.judge import batch_profile
from honed.feedback.policy import PolicyResult, decide
from honed.feedback.window import Latency, Quantiles

SERIES = Path(__file__).parent / "test_feedback_series"
ALL_SERIES = ["idle_then_load", "steady", "overload", "noisy", "breach", "miss_heavy", "repeat_heavy"]


def load(name: str) -> list[tuple[str, MetricWindow]]:
    raw = json.loads((SERIES / f"{name}.json").read_text())
    return [(w.pop("_phase"), MetricWindow.model_validate(w)) for w in raw]


def slo(**overrides: object) -> Feedback:
    settings: dict[str, object] = {"p99LatencyMs": 100, "interval": "3s", "cooldown": "60s", **overrides}
    return Feedback.from_spec(settings)


# What served the recordings: one CPU instance, batches up to 8, a 286 us batching delay.
DEPLOYED = Deployment(
    candidate="onnx-fp32.onnxruntime",
    pool="cpu",
    version="2",
    max_batch_size=8,
    max_queue_delay_us=286,
    instance_count=1,
    max_instances=1,
    response_cache=False,
    benchmarked_batch_sizes=[1, 8],
)
CACHED = DEPLOYED.model_copy(update={"response_cache": True, "version": "1"})
RUNNER_UP = Option(name="onnx-int8.openvino", pool="gpu", p99_ms_by_batch={1: 2.0, 8: 6.0, 16: 11.0})


def failing(windows: list[MetricWindow], ratio: float = 0.2) -> list[MetricWindow]:
    """Derived: recorded windows in which ``ratio`` of the requests failed in the backend."""
    return [
        w.model_copy(
            update={
                "failure_rate": ratio * w.request_rate,
                "failures_by_reason": {"BACKEND": ratio * w.request_rate},
            }
        )
        for w in windows
    ]


def replay(
    windows: list[MetricWindow],
    settings: Feedback,
    deployment: Deployment = DEPLOYED,
    options: list[Option] | None = None,
    state: FeedbackState | None = None,
) -> list[PolicyResult]:
    """Run the policy window by window, applying each decision as the operator would."""
    results, state = [], state or FeedbackState()
    for window in windows:
        result = decide(window, settings, deployment, options or [], state, window.end)
        results.append(result)
        state = result.state
        deployment = deployment.after(result.decision)
    return results


def actions(results: list[PolicyResult]) -> list[str]:
    return [r.decision.action for r in results]


def first_bad(series: list[tuple[str, MetricWindow]], settings: Feedback) -> int:
    budget = settings.p99_budget_us
    assert budget is not None
    return next(i for i, (_, w) in enumerate(series) if (w.p99_us() or 0) > budget)


def test_steady_traffic_within_the_slo_keeps_everything() -> None:
    windows = [w for _, w in load("steady")]
    results = replay(windows, slo())
    assert set(actions(results)) == {"Keep"}
    assert {r.verdict.status for r in results} == {"True"}


def test_overload_reoptimizes_with_the_observed_profile_within_two_windows() -> None:
    series = load("overload")
    settings = slo()
    breach = first_bad(series, settings)
    assert series[breach][0] == "c=40", "the breach comes from the load step"
    results = replay([w for _, w in series], settings)
    acted = [i for i, r in enumerate(results) if not isinstance(r.decision, Keep)]
    assert acted, [r.decision.reason for r in results]
    decision = results[acted[0]].decision
    assert isinstance(decision, Reoptimize) and decision.trigger == "SLOViolation"
    assert acted[0] - breach == 1, "decision at the second bad window: within two intervals of the breach"
    # The dynamic batcher grouped several requests under load; that is what gets benchmarked.
    window = series[acted[0]][1]
    assert window.batch.exec_p90 is not None and window.batch.exec_p90 > 4
    assert max(decision.batch_sizes) == DEPLOYED.max_batch_size >= int(window.batch.exec_p90)
    assert 1 in decision.batch_sizes, "clients send single items"
    assert decision.concurrency >= 16
    assert float(decision.numbers["p99Ms"] or 0) > 100
    # Afterwards the optimization runs and the cooldown holds: no second action.
    assert set(actions(results[acted[0] + 1 :])) == {"Keep"}


def test_recorded_breach_decides_on_its_second_bad_window() -> None:
    series = load("breach")
    settings = slo(p99LatencyMs=90.2)  # the budget the integration run calibrated
    results = replay([w for _, w in series], settings)
    assert actions(results) == ["Keep"] * (len(series) - 1) + ["Reoptimize"]
    assert [r.verdict.status for r in results] == ["True"] * 3 + ["False"] * 2


def test_isolated_bad_windows_never_reach_the_hysteresis_threshold() -> None:
    settings = slo()
    series = load("overload")
    good = [w for _, w in series if (w.p99_us() or 0) <= 100_000]
    bad = [w for _, w in series if (w.p99_us() or 0) > 100_000]
    assert good and bad
    # Recorded good and bad windows interleaved on one clock: every breach is followed by a recovery.
    interleaved, clock = [], series[0][1].start
    for i in range(8):
        window = (bad if i % 2 == 0 else good)[i // 2 % min(len(good), len(bad))]
        clock += timedelta(seconds=3)
        interleaved.append(window.model_copy(update={"start": clock - timedelta(seconds=3), "end": clock}))
    results = replay(interleaved, settings)
    assert set(actions(results)) == {"Keep"}
    assert max(r.state.bad_windows for r in results) == 1


def test_recorded_noisy_minutes_keep_the_deployment() -> None:
    # One-minute windows with one-minute bursts: each burst breaches in one window only.
    series = load("noisy")
    settings = slo(interval="60s", cooldown="10m")
    results = replay([w for _, w in series], settings)
    statuses = [r.verdict.status for r in results]
    assert "False" in statuses, "the bursts do breach the budget"
    assert "False, False" not in ", ".join(statuses)
    assert set(actions(results)) == {"Keep"}


def test_short_windows_see_one_burst_for_a_minute() -> None:
    # With 3 s windows, Triton's minute-long summaries keep a burst's tail in every following
    # window: consecutive windows are not independent, and the hysteresis counts that minute.
    series = load("overload")
    after = [w for p, w in series[first_bad(series, slo()) :] if p == "c=2"]
    assert after and all((w.p99_us() or 0) > 100_000 for w in after)
    assert all(w.request.mean_us is not None and w.request.mean_us < 100_000 for w in after[1:])


def test_idle_windows_are_no_evidence_either_way() -> None:
    series = load("idle_then_load")
    idle = [w for p, w in series if p == "c=0"]
    assert idle, "the recording starts idle"
    results = replay(idle, slo())
    assert {r.verdict.reason for r in results} == {"Idle"}
    assert set(actions(results)) == {"Keep"}
    assert all(r.state.bad_windows == 0 for r in results)


def test_warmup_in_the_quantiles_of_a_fresh_version_is_not_a_breach() -> None:
    # Recorded right after the version loaded: until traffic outnumbers its warmup requests
    # (batch 1 and 8) a hundred to one, the p99 may be the warmup's.
    series = load("idle_then_load")
    idle = next(w for p, w in series if p == "c=0")
    assert idle.p99_us() is not None, "Triton's quantiles hold the warmup before any traffic"
    first_light = next(w for p, w in series if p == "c=2")
    strict = slo(p99LatencyMs=20)
    assert (first_light.p99_us() or 0) > 20_000
    fresh = DEPLOYED.model_copy(update={"deployed_at": first_light.end - timedelta(seconds=2)})
    assert replay([first_light], strict, fresh)[0].verdict.reason == "WarmupInQuantiles"
    diluted = fresh.model_copy(update={"deployed_at": first_light.end - timedelta(seconds=10)})
    assert replay([first_light], strict, diluted)[0].verdict.reason == "LatencyOverBudget"


def test_missing_and_idle_windows_inside_a_breach_neither_break_nor_extend_it() -> None:
    settings = slo()
    series = load("overload")
    bad = series[first_bad(series, settings)][1]
    idle = bad.model_copy(update={"request_rate": 0.0})
    at = [bad.end + timedelta(seconds=3 * k) for k in range(3)]
    windows = [
        w.model_copy(update={"end": t, "start": t - timedelta(seconds=3)})
        for w, t in zip([bad, idle, bad], at, strict=True)
    ]
    results = replay(windows, settings)
    assert [r.state.bad_windows for r in results[:2]] == [1, 1]
    assert actions(results) == ["Keep", "Keep", "Reoptimize"]
    assert results[-1].decision.numbers["badWindows"] == 2


def test_a_long_gap_restarts_the_streak() -> None:
    settings = slo()
    series = load("overload")
    bad = series[first_bad(series, settings)][1]
    gap = timedelta(seconds=60)
    later = bad.model_copy(update={"start": bad.start + gap, "end": bad.end + gap})
    results = replay([bad, later], settings)
    assert [r.state.bad_windows for r in results] == [1, 1]
    assert set(actions(results)) == {"Keep"}


def test_windows_without_latency_quantiles_are_unknown_not_bad() -> None:
    window = load("steady")[2][1]
    blank = window.model_copy(update={"request": Latency(mean_us=5000.0), "queue": Latency(), "compute": Latency()})
    result = replay([blank, blank, blank], slo())[-1]
    assert result.verdict.reason == "NoLatencyData"
    assert isinstance(result.decision, Keep)


def test_a_mean_over_budget_is_a_breach_even_without_quantiles() -> None:
    window = load("steady")[2][1]
    slow = window.model_copy(update={"request": Latency(mean_us=180_000.0), "queue": Latency(), "compute": Latency()})
    assert replay([slow], slo())[0].verdict.reason == "LatencyOverBudget"


def test_failures_fall_back_to_the_runner_up_or_reoptimize_without_one() -> None:
    series = failing([w for _, w in load("steady")])
    with_runner_up = replay(series, slo(), options=[RUNNER_UP])
    assert with_runner_up[0].verdict.reason == "FailuresOverBudget"
    decision = next(r.decision for r in with_runner_up if not isinstance(r.decision, Keep))
    assert isinstance(decision, Fallback)
    assert (decision.candidate, decision.pool) == ("onnx-int8.openvino", "gpu")
    alone = replay(series, slo())
    assert next(r.decision for r in alone if not isinstance(r.decision, Keep)).action == "Reoptimize"


def test_miss_heavy_cache_is_turned_off() -> None:
    series = [w for p, w in load("miss_heavy") if p.endswith("cache on")]
    assert all(w.cache is not None and w.cache.hit_ratio == 0 for w in series), "recorded: every lookup missed"
    settings = slo(p99LatencyMs=10_000)
    results = replay(series, settings, CACHED)
    assert actions(results) == ["Keep"] * (settings.bad_windows - 1) + ["Retune"]
    decision = results[-1].decision
    assert isinstance(decision, Retune) and decision.response_cache is False
    assert decision.max_queue_delay_us is None and decision.instance_count is None
    assert float(decision.numbers["cacheCostUs"] or 0) > float(decision.numbers["cacheSavingUs"] or 0)


def test_repeat_heavy_cache_is_kept() -> None:
    series = [w for _, w in load("repeat_heavy")]
    assert all(w.cache is not None and (w.cache.hit_ratio or 0) > 0.99 for w in series[1:])
    results = replay(series, slo(p99LatencyMs=10_000), CACHED)
    assert set(actions(results)) == {"Keep"}
    assert "hit ratio 1.00" in results[-1].decision.reason


def test_cache_off_by_the_loop_is_probed_again_later() -> None:
    window = load("steady")[0][1]
    state = FeedbackState(deployment=DEPLOYED.key, cache_disabled_at=window.end - timedelta(hours=7))
    result = decide(window, slo(), DEPLOYED, [], state, window.end)
    assert isinstance(result.decision, Retune) and result.decision.response_cache is True
    user_off = DEPLOYED.model_copy(update={"cache_allowed": False})
    result = decide(window, slo(), user_off, [], state, window.end)
    assert isinstance(result.decision, Keep), "spec.serving.responseCache=false is the user's call"


def queue_bound(window: MetricWindow) -> MetricWindow:
    """Derived: a recorded breach window with the time moved into the queue."""
    return window.model_copy(
        update={
            "request": Latency(mean_us=30_000.0),
            "queue": Latency(mean_us=25_000.0, quantiles=Quantiles(p50=20_000.0, p90=150_000.0, p99=180_000.0)),
            "compute": Latency(mean_us=4_000.0, quantiles=Quantiles(p50=3_000.0, p90=5_000.0, p99=9_000.0)),
            "exec_rate": 240.0,
        }
    )


def repeated(window: MetricWindow, count: int, step_s: float = 3.0) -> list[MetricWindow]:
    shift = [timedelta(seconds=step_s * k) for k in range(count)]
    return [window.model_copy(update={"start": window.start + d, "end": window.end + d}) for d in shift]


def test_queue_bound_breach_retunes_delay_then_instances_then_reoptimizes() -> None:
    settings = slo(cooldown="3s", maxRetunes=2)
    series = load("overload")
    windows = repeated(queue_bound(series[first_bad(series, settings)][1]), 9)
    deployment = DEPLOYED.model_copy(update={"max_queue_delay_us": 16_000, "max_instances": 2})
    results = replay(windows, settings, deployment)
    taken = [r.decision for r in results if not isinstance(r.decision, Keep)]
    assert isinstance(taken[0], Retune) and taken[0].max_queue_delay_us == 8_000
    assert isinstance(taken[1], Retune) and taken[1].instance_count == 2
    assert isinstance(taken[2], Reoptimize), "retunes used up: re-optimize"


def test_reoptimization_that_did_not_help_falls_back_and_the_daily_cap_holds() -> None:
    settings = slo(cooldown="3s", maxReoptimizationsPerDay=1)
    series = load("overload")
    windows = repeated(series[first_bad(series, settings)][1], 12)
    # The operator finishes each optimization and deploys a new version before the next window.
    results, state, deployment = [], FeedbackState(), DEPLOYED
    for k, window in enumerate(windows):
        result = decide(window, settings, deployment, [RUNNER_UP], state, window.end)
        results.append(result)
        state = result.state
        if not isinstance(result.decision, Keep):
            deployment = deployment.after(result.decision, version=str(k + 3)).model_copy(update={"optimizing": False})
    taken = [r.decision for r in results if not isinstance(r.decision, Keep)]
    assert [d.action for d in taken[:2]] == ["Reoptimize", "Fallback"]
    assert len([d for d in taken if d.action == "Reoptimize"]) == 1, "cap of 1 per day"
    capped = results[-1].decision
    assert isinstance(capped, Keep) and "daily cap" in capped.reason and "runner-up" in capped.reason


def test_reoptimizations_older_than_a_day_do_not_count() -> None:
    window = load("steady")[0][1]
    old = FeedbackState(reoptimizations=[window.end - timedelta(hours=25)] * 5)
    result = decide(window, slo(), DEPLOYED, [], old, window.end)
    assert result.state.reoptimizations == []


def test_a_new_deployment_starts_its_counters_over() -> None:
    window = load("steady")[0][1]
    state = FeedbackState(deployment="other@cpu/1", bad_windows=5, retunes=2, cache_bad_windows=1)
    result = decide(window, slo(), DEPLOYED, [], state, window.end)
    assert (result.state.deployment, result.state.retunes, result.state.bad_windows) == (DEPLOYED.key, 0, 0)


def test_traffic_far_beyond_the_benchmark_reoptimizes_even_within_the_slo() -> None:
    under_load = [w for p, w in load("overload") if p == "c=40"]
    small = DEPLOYED.model_copy(update={"benchmarked_batch_sizes": [1, 2]})
    results = replay(under_load, slo(p99LatencyMs=10_000), small)
    decision = next(r.decision for r in results if not isinstance(r.decision, Keep))
    assert isinstance(decision, Reoptimize) and decision.trigger == "TrafficShift"
    assert set(actions(replay(under_load, slo(p99LatencyMs=10_000)))) == {"Keep"}, "benchmarked up to 8"


def test_runner_up_must_fit_the_budget_at_the_observed_batch() -> None:
    series = failing([w for _, w in load("steady")])
    too_slow = Option(name="onnx-fp32.openvino", pool="cpu", p99_ms_by_batch={1: 30.0, 8: 400.0})
    results = replay(series, slo(maxReoptimizationsPerDay=0), options=[too_slow])
    assert set(actions(results)) == {"Keep"}
    assert "no runner-up fits" in results[-1].decision.reason
    fits = too_slow.model_copy(update={"p99_ms_by_batch": {1: 3.0, 8: 20.0}})
    assert "Fallback" in actions(replay(series, slo(maxReoptimizationsPerDay=0), options=[fits]))


def test_batch_profile_is_capped_by_max_batch_size() -> None:
    window = next(w for p, w in load("overload") if p == "c=40")
    assert max(batch_profile(window, DEPLOYED.model_copy(update={"max_batch_size": 4}))) == 4


def test_decide_is_pure() -> None:
    window = next(w for p, w in load("overload") if p == "c=40")
    state = FeedbackState(bad_windows=1, last_bad_end=window.start)
    first = decide(window, slo(), DEPLOYED, [RUNNER_UP], state, window.end)
    second = decide(window, slo(), DEPLOYED, [RUNNER_UP], state, window.end)
    assert first.decision == second.decision and first.state == second.state
    assert state.bad_windows == 1


@pytest.mark.parametrize("name", ALL_SERIES)
def test_recorded_windows_round_trip_through_json(name: str) -> None:
    windows = load(name)
    assert windows
    for _, window in windows:
        assert MetricWindow.model_validate_json(window.model_dump_json()) == window
