"""The operator side of the feedback loop: inputs from a served resource, the status/annotation
patch from an evaluation, and the observed batch sizes reaching the next optimization request."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from honed.controller import names
from honed.controller.feedback_loop import (
    feedback_inputs,
    feedback_interval,
    feedback_patch,
    next_round,
    reoptimize_annotation,
)
from honed.controller.reconcile import reconcile
from honed.controller.settings import HonedSettings
from honed.feedback import Evaluation, FeedbackState, Reoptimize, evaluate
from tests.unit.test_feedback_policy import load
from tests.unit.test_reconcile import SETTINGS, SPEC, T2, observed, serving_state

WITH_PROMETHEUS = SETTINGS.model_copy(update={"prometheus_url": "http://prometheus:9090"})
FEEDBACK = {"enabled": True, "p99LatencyMs": 90, "interval": "3s", "cooldown": "1m"}
NOW = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


def served_body(feedback: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    """A resource whose winner is served, as reconcile left it, with the loop turned on."""
    served, _ = serving_state()
    spec = {**SPEC, "feedback": FEEDBACK if feedback is None else feedback}
    return {
        "metadata": {"name": "tiny", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": spec,
        "status": {**served, **status},
    }


def breach_evaluation(body: dict[str, Any], settings: HonedSettings = WITH_PROMETHEUS) -> Evaluation:
    """The policy on the recorded breach, with inputs read from ``body``."""
    inputs = feedback_inputs(body, settings)
    assert not isinstance(inputs, str), inputs
    state, evaluation = inputs.state, None
    for _, window in load("breach"):
        evaluation = evaluate(window, inputs.slo, inputs.deployment, inputs.options, state, window.end)
        state = evaluation.state
    assert evaluation is not None
    return evaluation


def test_inputs_come_from_the_served_winner_and_the_spec() -> None:
    body = served_body()
    inputs = feedback_inputs(body, WITH_PROMETHEUS)
    assert not isinstance(inputs, str), inputs
    winner, endpoint = body["status"]["winner"], body["status"]["endpoint"]
    assert inputs.model == endpoint["model"]
    assert (inputs.deployment.candidate, inputs.deployment.pool) == (winner["name"], winner["pool"])
    # Retunes write new versions of one selection; the deployment the policy counts on is the selection.
    assert inputs.deployment.version == winner["optimization"] and endpoint["version"] == winner["version"]
    assert inputs.deployment.response_cache is True and inputs.deployment.deployed_at is not None
    assert inputs.slo.p99_latency_ms == 90 and inputs.slo.interval_s == 3
    eligible = {c["name"] for c in body["status"]["candidates"] if c["verdict"] in ("winner", "eligible")}
    assert {o.name for o in inputs.options} == eligible


def test_nothing_to_judge_says_why() -> None:
    assert feedback_inputs(served_body({"enabled": False}), WITH_PROMETHEUS) == "spec.feedback.enabled is false"
    assert "HONED_PROMETHEUS_URL" in str(feedback_inputs(served_body(), SETTINGS))
    unserved = served_body()
    del unserved["status"]["endpoint"]
    assert feedback_inputs(unserved, WITH_PROMETHEUS) == "no version is served yet"
    assert "spec.feedback.badWindows" in str(
        feedback_inputs(served_body({**FEEDBACK, "badWindows": 0}), WITH_PROMETHEUS)
    )


def test_a_breach_is_recorded_and_asks_for_a_reoptimization_with_the_observed_batches() -> None:
    body = served_body()
    evaluation = breach_evaluation(body)
    decision = evaluation.decision
    assert isinstance(decision, Reoptimize)
    patch = feedback_patch(body, evaluation, NOW)
    slo_met = next(c for c in patch.status["conditions"] if c["type"] == "SLOMet")
    assert (slo_met["status"], slo_met["reason"]) == ("False", "LatencyOverBudget")
    assert slo_met["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    recorded = patch.status["feedback"]["lastDecision"]
    assert recorded["action"] == "Reoptimize" and recorded["numbers"]["p99Ms"] > 90
    annotation = patch.annotations[names.REOPTIMIZE]
    assert annotation.startswith("SLOViolation:2026-01-01T00:05:00Z")
    assert names.reoptimize_reason(patch.annotations) == "SLOViolation"
    assert names.observed_batch_sizes(patch.annotations) == decision.batch_sizes
    assert [e.reason for e in patch.events] == ["Reoptimize"]  # SLOViolated came a window earlier
    # Only what the loop owns changes: the operator's fields and conditions are left as they were
    # (a merge patch replaces the whole conditions list, so theirs are written back unchanged).
    assert set(patch.status) == {"conditions", "feedback"}
    before = {c["type"]: c for c in body["status"]["conditions"]}
    assert {"Optimized", "Deployed", "Ready"} <= before.keys()
    assert all(c == before[c["type"]] for c in patch.status["conditions"] if c["type"] in before)


def test_the_next_optimization_benchmarks_what_the_loop_observed() -> None:
    status, deployment = serving_state()
    decision = Reoptimize(trigger="SLOViolation", batch_sizes=[1, 6, 8], concurrency=40, reason="p99 over budget")
    annotations = {names.REOPTIMIZE: reoptimize_annotation(decision, NOW)}
    plan = reconcile(SPEC, observed(status, annotations=annotations, deployment=deployment, service=True, now=T2))
    assert plan.status["lastOptimization"]["reason"] == "SLOViolation"
    requests = [json.loads(m["data"]["request.json"]) for m in plan.create if m["kind"] == "ConfigMap"]
    assert len(requests) == 2 and all(r["batch_sizes"] == [1, 6, 8] for r in requests)
    by_hand = {names.REOPTIMIZE: "Requested:1767225600"}
    plan = reconcile(SPEC, observed(status, annotations=by_hand, deployment=deployment, service=True, now=T2))
    requests = [json.loads(m["data"]["request.json"]) for m in plan.create if m["kind"] == "ConfigMap"]
    assert all(r["batch_sizes"] == [1, 8] for r in requests), "spec.search.batchSizes when nothing was observed"


def test_a_hand_edited_feedback_status_restarts_the_loops_memory() -> None:
    body = served_body()
    body["status"]["feedback"] = {"badWindows": "many"}
    inputs = feedback_inputs(body, WITH_PROMETHEUS)
    assert not isinstance(inputs, str) and inputs.state == FeedbackState()


def test_rounds_fall_on_multiples_of_the_interval_so_models_share_their_queries() -> None:
    # Two models whose feedback started at different times, with the same interval, are judged
    # in the same round; a model with another interval in its own.
    assert next_round(1000.0, 60.0) == next_round(1019.5, 60.0) == 1020.0
    assert next_round(1020.0, 60.0) == 1080.0  # a round that has just run is not due again
    assert next_round(1000.0, 45.0) == 1035.0


def test_the_interval_comes_from_the_spec_and_none_means_off() -> None:
    assert feedback_interval({"feedback": {**FEEDBACK, "interval": "2m"}}) == 120.0
    assert feedback_interval({"feedback": {"enabled": False}}) is None
    assert feedback_interval({}) is None
    assert feedback_interval({"feedback": {"enabled": True, "interval": "soon"}}) is None  # reconcile says why
