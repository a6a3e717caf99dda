"""The feedback loop end to end on real components.

A real Triton serves the engine's winner for a slow MLP; a real Prometheus scrapes it every
second; client threads generate the traffic; ``PrometheusClient.window`` observes each 3 s
interval and ``evaluate`` decides. Decisions are applied the way the operator applies them
(write a new version, roll it out) - only the Kubernetes plumbing is left out.

``HONED_FEEDBACK_MEASUREMENTS=FILE`` appends what the breach test measured (JSON lines).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from honed.api.spec import Feedback
from honed.feedback import Keep, MetricsUnavailable, MetricWindow, Reoptimize, Retune
from honed.optimizer.report import load_report
from tests.fixtures.feedback import MODEL, Bench, Driver, Traffic, feeds, optimize

pytestmark = pytest.mark.slow

INTERVAL = "3s"


def settings(**overrides: object) -> Feedback:
    return Feedback.from_spec({"interval": INTERVAL, "cooldown": "5m", "badWindows": 2, **overrides})


def test_miss_heavy_traffic_turns_the_response_cache_off(bench: Bench) -> None:
    slo = settings(p99LatencyMs=10_000)  # latency is not the question here
    driver = Driver(bench.client, slo, bench.deployment(), series="miss_heavy")
    with Traffic(bench.grpc, concurrency=4) as traffic:
        step = driver.until_action("c=4 distinct, cache on", max_steps=slo.bad_windows + 3)
        decision = step.evaluation.decision
        assert isinstance(decision, Retune) and decision.response_cache is False, decision
        window = step.observation
        assert isinstance(window, MetricWindow) and window.cache is not None
        assert window.cache.hit_ratio is not None and window.cache.hit_ratio < slo.cache_min_hit_ratio
        # Applied as the operator would: a new version of the same artifact without the cache.
        bench.redeploy(response_cache=False)
        driver.deployment = driver.deployment.after(decision, version=str(bench.written.version))
        assert not (bench.model_config().get("response_cache") or {}).get("enable", False)
        after = [driver.step("c=4 distinct, cache off") for _ in range(2)]
    driver.save()
    assert traffic.errors == []
    assert [s.evaluation.decision.action for s in after] == ["Keep", "Keep"]


def test_repeat_heavy_traffic_keeps_the_response_cache_on(bench: Bench) -> None:
    slo = settings(p99LatencyMs=10_000)
    driver = Driver(bench.client, slo, bench.deployment(), series="repeat_heavy")
    with Traffic(bench.grpc, feeds(8, seed=3), concurrency=4) as traffic:
        steps = [driver.step("c=4 repeating 8 inputs") for _ in range(slo.bad_windows + 2)]
    driver.save()
    assert traffic.errors == []
    assert [s.evaluation.decision.action for s in steps] == ["Keep"] * len(steps)
    caches = [s.observation.cache for s in steps[1:] if isinstance(s.observation, MetricWindow)]
    assert caches and all(c is not None and c.hit_ratio is not None and c.hit_ratio > 0.9 for c in caches), caches
    assert "hit ratio" in steps[-1].evaluation.decision.reason


def test_slo_breach_reoptimizes_for_the_observed_batches_and_the_new_version_takes_over(
    bench: Bench, slow_model: Path, tmp_path: Path
) -> None:
    bench.redeploy(response_cache=False)  # every request computes: latency is what is judged
    deployment = bench.deployment(max_instances=1)  # one instance already uses both cores
    driver = Driver(bench.client, settings(p99LatencyMs=10_000), deployment, series="breach")
    with Traffic(bench.grpc, concurrency=2) as light:
        calm = [driver.step("c=2") for _ in range(3)]
        # Triton's quantiles hold the new version's warmup until traffic dilutes it: the last
        # light window shows what light traffic sees on this (shared) machine right now.
        assert isinstance(calm[-1].observation, MetricWindow), calm[-1].evaluation.decision.reason
        light_p99 = calm[-1].observation.p99_us()
        assert light_p99 is not None
        budget_ms = max(25.0, 2 * light_p99 / 1000)
        driver.slo = settings(p99LatencyMs=round(budget_ms, 1))
        # The load steps up half an interval after a tick: a breach lands inside an interval.
        time.sleep(max(0.0, calm[-1].at + driver.slo.interval_s / 2 - time.monotonic()))
        with Traffic(bench.grpc, concurrency=40) as heavy:
            breach_at = time.monotonic()
            step = driver.until_action("c=2+40", max_steps=6)
            decision, window = step.evaluation.decision, step.observation
            assert isinstance(decision, Reoptimize), decision
            assert isinstance(window, MetricWindow)
            assert decision.trigger == "SLOViolation"
            bad = [s for s in driver.steps if s.phase == "c=2+40"]
            # Hysteresis: the decision comes with the second consecutive bad window.
            assert decision.numbers["badWindows"] == driver.slo.bad_windows
            assert len(bad) <= driver.slo.bad_windows + 1
            # The request carries what live traffic looks like: batches of several, many in flight.
            assert window.batch.exec_p90 is not None and window.batch.exec_p90 > 2
            assert max(decision.batch_sizes) >= int(window.batch.exec_p90)
            assert max(decision.batch_sizes) <= deployment.max_batch_size
            assert decision.concurrency >= 4
            # The re-optimization benchmarks exactly that profile, and its winner is rolled
            # out while the traffic continues.
            new_report = optimize(slow_model, tmp_path / "reoptimized", decision.batch_sizes)
            assert load_report(new_report).settings.batch_sizes == decision.batch_sizes
            answered_before = heavy.answered
            bench.redeploy(new_report, response_cache=False)
            serving_at = time.monotonic()
            time.sleep(1.0)
    assert light.errors == [] and heavy.errors == [], (light.errors + heavy.errors)[:3]
    assert heavy.answered > answered_before
    ready = [v.version for v in bench.triton.model_states(MODEL) if v.state == "READY"]
    assert ready == [str(bench.written.version)]
    driver.save()
    _measured(
        interval_s=driver.slo.interval_s,
        budget_ms=budget_ms,
        light_p99_ms=light_p99 / 1000,
        breach_p99_ms=(window.p99_us() or 0) / 1000,
        windows_to_decision=len(bad),
        breach_to_decision_s=step.at - breach_at,
        observe_and_decide_s=step.observe_s,
        decision_to_serving_s=serving_at - step.at,
        batch_sizes=decision.batch_sizes,
        concurrency=decision.concurrency,
        failed_requests=len(light.errors) + len(heavy.errors),
        answered=light.answered + heavy.answered,
    )


def test_without_prometheus_serving_continues_and_the_condition_says_why(bench: Bench) -> None:
    driver = Driver(bench.client, settings(p99LatencyMs=10_000), bench.deployment())
    with Traffic(bench.grpc, feeds(8, seed=4), concurrency=2) as traffic:
        seen = driver.step("c=2")
        assert isinstance(seen.observation, MetricWindow)
        bench.prometheus.stop()
        answered = traffic.answered
        blind = [driver.step("c=2, Prometheus stopped") for _ in range(2)]
        time.sleep(0.5)
    assert traffic.errors == [] and traffic.answered > answered, "Triton kept answering"
    for step in blind:
        assert isinstance(step.observation, MetricsUnavailable)
        assert isinstance(step.evaluation.decision, Keep)
        condition = next(c for c in step.evaluation.conditions if c.type == "MetricsUnavailable")
        assert condition.status == "True" and condition.reason == "PrometheusUnreachable"
        assert bench.prometheus.url.removeprefix("http://") in condition.message
    assert [e.reason for s in blind for e in s.evaluation.events] == ["MetricsUnavailable"]


def _measured(**values: object) -> None:
    target = os.environ.get("HONED_FEEDBACK_MEASUREMENTS")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **values}) + "\n")
