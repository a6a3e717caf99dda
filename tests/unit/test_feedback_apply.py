"""Retune and Fallback decisions applied: the feedback patch writes status.serving, reconcile turns
it into a new model version (same artifact, overridden config; or the runner-up), level-based."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from honed.api.spec import parse_spec
from honed.controller import names
from honed.controller.feedback_loop import feedback_inputs, feedback_patch, instance_room
from honed.controller.observe import fallback_pools
from honed.controller.reconcile import reconcile
from honed.controller.reconcile_data import DeploymentState, JobState, Plan
from honed.controller.settings import Pool
from honed.feedback import Evaluation, Fallback, FeedbackState, Retune
from tests.unit.test_feedback_controller import NOW, WITH_PROMETHEUS, served_body
from tests.unit.test_reconcile import CPU_REPORT, GPU_REPORT, SPEC, T2, T3, conditions, observed, pods, rolled

V1: dict[str, Any] = {"repository_versions": frozenset({1}), "repository_ready": frozenset({1})}
V2: dict[str, Any] = {"repository_versions": frozenset({1, 2}), "repository_ready": frozenset({1, 2})}
REPORTS = {"cpu": CPU_REPORT, "gpu": GPU_REPORT}


def decided(decision: Retune | Fallback) -> Evaluation:
    event = {"type": "Normal", "reason": decision.action, "message": decision.summary()}
    return Evaluation(decision=decision, state=FeedbackState(), conditions=[], events=[event])


def apply_merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies the patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge(result.get(key), value)
    return result


def patched(body: dict[str, Any], decision: Retune | Fallback) -> dict[str, Any]:
    """The resource after the feedback pass wrote its status patch."""
    patch = feedback_patch(body, decided(decision), NOW)
    return {**body, "status": apply_merge(body["status"], patch.status)}


def pass_on(body: dict[str, Any], deployment: DeploymentState, **fields: Any) -> Plan:
    return reconcile(body["spec"], observed(body["status"], deployment=deployment, service=True, now=T2, **fields))


def args(plan: Plan) -> list[str]:
    container_args: list[str] = plan.patch[0].body["spec"]["template"]["spec"]["containers"][0]["args"]
    return container_args


def test_the_winner_records_the_config_derived_from_its_benchmark() -> None:
    config = served_body()["status"]["winner"]["config"]
    assert config["maxBatchSize"] == 8 and config["instances"] == 1 and config["responseCache"] is True
    assert config["maxQueueDelayMicroseconds"] >= 0


def test_a_retune_becomes_a_new_version_of_the_same_artifact_and_survives_a_restart() -> None:
    body = served_body()
    deployment = rolled(pass_on(body, None, **V1), 1)  # type: ignore[arg-type]
    retune = Retune(response_cache=False, reason="hit ratio 0.00 < 0.1")
    patch = feedback_patch(body, decided(retune), NOW)
    assert patch.annotations == {}
    assert patch.status["serving"]["overrides"] == {"responseCache": False} and patch.status["serving"]["basis"]
    assert "not applied" not in patch.events[0].message

    body = patched(body, retune)
    plan = pass_on(body, deployment, **V1)
    winner = plan.status["winner"]
    assert (winner["name"], winner["version"], winner["overrides"]) == (
        "onnx-fp16.tensorrt",
        2,
        {"responseCache": False},
    )
    assert plan.repository is not None and plan.repository.version == 2
    assert plan.repository.candidate == "onnx-fp16.tensorrt" and plan.repository.serving["response_cache"] is False
    assert plan.status["serving"]["overrides"] == {"responseCache": False}, "kept for a restarted operator"
    assert [p.kind for p in plan.patch] == ["Deployment"]
    annotations = plan.patch[0].body["spec"]["template"]["metadata"]["annotations"]
    assert annotations[names.MODEL_VERSION] == "2"
    assert not any(a.startswith("--cache-config") for a in args(plan))
    assert plan.status["endpoint"]["version"] == 1, "the old version serves until the new one is ready"
    assert "Retuned" in {e.reason for e in plan.events}

    # A restarted operator (the same status, version 2 written) derives the same version: no third.
    again = replace(observed(plan.status, deployment=deployment, service=True, now=T3, **V2))
    replay = reconcile(body["spec"], again)
    assert replay.status["winner"]["version"] == 2 and replay.repository is None
    version_2 = rolled(plan, 2)
    done = reconcile(
        body["spec"], replace(again, status=replay.status, deployment=version_2, server_pods=pods(version_2, 1))
    )
    assert done.status["endpoint"]["version"] == 2 and conditions(done)["Deployed"][:2] == ("True", "RolledOut")

    # Inputs of the next evaluation see the retuned config, and the same deployment key.
    served = {**body, "status": done.status}
    inputs = feedback_inputs(served, WITH_PROMETHEUS)
    assert not isinstance(inputs, str) and inputs.deployment.response_cache is False
    assert inputs.deployment.version == winner["optimization"]

    # A second retune adds to the first; a change of spec.serving by its owner drops both.
    delay = Retune(max_queue_delay_us=500, reason="queueing dominates")
    served = patched(served, delay)
    assert served["status"]["serving"]["overrides"] == {"responseCache": False, "maxQueueDelayMicroseconds": 500}
    third = pass_on(served, rolled(plan, 2), **V2)
    assert third.status["winner"]["version"] == 3 and third.repository is not None
    assert third.repository.serving["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    owner = {**served, "spec": {**SPEC, "serving": {"responseCache": True, "instances": 2}}}
    dropped = pass_on(owner, rolled(plan, 2), **V2)
    assert "serving" not in dropped.status and "overrides" not in dropped.status["winner"]
    assert dropped.status["winner"]["version"] == 3 and dropped.repository is not None
    assert dropped.repository.serving["instances"] == 2 and dropped.repository.serving["response_cache"] is True
    assert "OverridesDropped" in {e.reason for e in dropped.events}


def fallback_body(
    candidate: str = "onnx-int8.openvino", pool: str = "cpu", left: list[str] | None = None
) -> dict[str, Any]:
    body = patched(served_body(), Fallback(candidate=candidate, pool=pool, reason="p99 120 ms > 90 ms"))
    if left:
        body["status"]["feedback"] = {"fallenBackFrom": left}
    return body


def test_a_fallback_serves_the_runner_up_as_a_new_version() -> None:
    body = fallback_body()
    request = body["status"]["serving"]["fallback"]
    assert request["replaces"] == "onnx-fp16.tensorrt@gpu" and request["requestedAt"] == "2026-01-01T00:05:00Z"
    assert fallback_pools(body["status"]) == ["cpu", "gpu"]
    deployment = rolled(pass_on(served_body(), None, **V1), 1)  # type: ignore[arg-type]

    plan = pass_on(body, deployment, reports=REPORTS, **V1)
    winner = plan.status["winner"]
    assert (winner["pool"], winner["name"], winner["version"]) == ("cpu", "onnx-int8.openvino", 2)
    assert (winner["reason"], winner["fallbackFrom"]) == ("FallbackFromSLO", "onnx-fp16.tensorrt on gpu")
    assert winner["report"].endswith(f"/optimizations/{winner['optimization']}/cpu/report.json")
    assert winner["artifact"].endswith("/cpu/artifacts/onnx-int8.openvino")
    assert "serving" not in plan.status, "the request is applied and cleared in the same status write"
    status, reason, message = conditions(plan)["Optimized"]
    assert (status, reason) == ("True", "FallbackFromSLO") and "instead of onnx-fp16.tensorrt on gpu" in message
    assert any(e.type == "Warning" and e.reason == "FallbackFromSLO" for e in plan.events)
    verdicts = {(c["name"], c["pool"]): c["verdict"] for c in plan.status["candidates"]}
    assert verdicts[("onnx-int8.openvino", "cpu")] == "winner" and verdicts[("onnx-fp16.tensorrt", "gpu")] == "eligible"
    assert plan.repository is not None and (plan.repository.version, plan.repository.pool) == (2, "cpu")
    template = plan.patch[0].body["spec"]["template"]
    assert template["metadata"]["labels"][names.POOL] == "cpu"
    assert plan.status["endpoint"]["version"] == 1 and plan.status["phase"] == "Deploying"

    # Restart-safe: the same observation again changes nothing more.
    replay = pass_on({**body, "status": plan.status}, deployment, **V2)
    assert replay.status["winner"] == winner and replay.repository is None


def test_a_fallback_to_a_candidate_no_longer_eligible_takes_the_next_best_by_the_objective() -> None:
    deployment = rolled(pass_on(served_body(), None, **V1), 1)  # type: ignore[arg-type]
    plan = pass_on(fallback_body(candidate="onnx-bf16.openvino"), deployment, reports=REPORTS, **V1)
    assert plan.status["winner"]["name"] == "onnx-int8.openvino"
    # ... but never one the loop already left for breaking the SLO.
    left = fallback_body(candidate="onnx-bf16.openvino", left=["onnx-int8.openvino@cpu"])
    plan = pass_on(left, deployment, reports=REPORTS, **V1)
    assert plan.status["winner"]["name"] == "onnx-fp32.onnxruntime"


def test_a_fallback_waits_for_reports_and_is_dropped_when_impossible_or_stale() -> None:
    deployment = rolled(pass_on(served_body(), None, **V1), 1)  # type: ignore[arg-type]
    body = fallback_body()
    waiting = pass_on(body, deployment, **V1)  # observe has not read the reports yet
    assert waiting.status["winner"]["name"] == "onnx-fp16.tensorrt" and "fallback" in waiting.status["serving"]

    unreadable = {"cpu": replace(CPU_REPORT, report=None, error="nothing at file:///store/cpu/report.json")}
    dropped = pass_on(body, deployment, reports=unreadable, **V1)
    assert dropped.status["winner"]["version"] == 1 and "serving" not in dropped.status
    impossible = next(e for e in dropped.events if e.reason == "FallbackImpossible")
    assert impossible.type == "Warning" and "nothing at" in impossible.message

    stale = fallback_body()
    stale["status"]["serving"]["fallback"]["replaces"] = "onnx-fp32.onnxruntime@cpu"
    plan = pass_on(stale, deployment, reports=REPORTS, **V1)
    assert plan.status["winner"]["version"] == 1 and "serving" not in plan.status


def test_a_new_winner_clears_the_requests_about_the_previous_one() -> None:
    body = patched(served_body(), Retune(instance_count=2, reason="busy"))
    annotations = {names.REOPTIMIZE: "SLOViolation:2026-01-01T00:05:00Z batchSizes=1,8 concurrency=4"}
    started = reconcile(body["spec"], observed(body["status"], annotations=annotations, now=T2, **V1))
    assert started.status["phase"] == "Optimizing" and started.status["serving"]["overrides"] == {"instances": 2}
    opt = names.optimization_id(parse_spec(body["spec"]), annotations)
    done = {
        names.job_name("tiny", pool, opt): JobState(names.job_name("tiny", pool, opt), pool, opt, "Succeeded")
        for pool in ("cpu", "gpu")
    }
    chosen = reconcile(
        body["spec"],
        observed(started.status, annotations=annotations, jobs=done, reports=REPORTS, now=T3, **V2),
    )
    winner = chosen.status["winner"]
    assert winner["reason"] == "WinnerSelected" and winner["optimization"] == names.run_id(opt, T2)
    assert winner["version"] == 3
    assert "overrides" not in winner and "serving" not in chosen.status


def test_instance_room_is_one_per_whole_core_of_a_cpu_pool() -> None:
    def pool(device: str = "cpu", **resources: Any) -> Pool:
        return Pool(name="p", image="i", device=device, serving_resources=resources)

    assert instance_room(pool(limits={"cpu": "4"})) == 4
    assert instance_room(pool(requests={"cpu": "2500m"})) == 2
    assert instance_room(pool()) == 1 and instance_room(None) == 1
    assert instance_room(pool("cuda", limits={"cpu": "8"})) == 1
