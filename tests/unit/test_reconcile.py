"""reconcile(spec, observed) -> Plan through a resource's life, and every fault, without a cluster."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from honed.api.spec import parse_spec
from honed.api.status import Condition, OptimizedModelStatus
from honed.controller import names
from honed.controller.conditions import transition_events
from honed.controller.reconcile import reconcile
from honed.controller.reconcile_data import DeploymentState, JobState, Observed, Plan, PodProblem, PodState, ReportRead
from honed.controller.settings import HonedSettings, Pool
from tests.fixtures.reports import candidate, report

SETTINGS = HonedSettings(
    pools=[
        Pool(name="cpu", image="opt-cpu", device="cpu", price_per_hour=0.5),
        Pool(name="gpu", image="opt-gpu", device="cuda", price_per_hour=3.0),
    ],
    artifact_store="file:///store",
)
SPEC: dict[str, Any] = {
    "model": {"uri": "file:///models/tiny.onnx"},
    "search": {"objective": "latency", "timeBudget": "10m"},
    "targets": [{"pool": "cpu"}, {"pool": "gpu"}],
}
V1: dict[str, Any] = {"repository_versions": frozenset({1}), "repository_ready": frozenset({1})}
T0, T1, T2, T3 = (f"2026-01-01T00:0{i}:00+00:00" for i in range(4))


def observed(status: dict[str, Any] | None = None, **fields: Any) -> Observed:
    """An observation; a Deployment comes with ready pods of its template unless ``server_pods`` says otherwise."""
    deployment = fields.get("deployment")
    if deployment is not None and "server_pods" not in fields:
        fields["server_pods"] = pods(deployment, ready=deployment.replicas)
    base = Observed(
        name="tiny",
        namespace="ml",
        uid="uid-1",
        generation=1,
        annotations={},
        status=status or {},
        settings=SETTINGS,
        now=T0,
    )
    return replace(base, **fields)


def optimization(spec: dict[str, Any] = SPEC, annotations: dict[str, Any] | None = None) -> str:
    return names.optimization_id(parse_spec(spec), annotations or {})


def job(pool: str, phase: str, message: str = "", spec: dict[str, Any] = SPEC) -> JobState:
    opt = optimization(spec)
    return JobState(names.job_name("tiny", pool, opt), pool, opt, phase, message)  # type: ignore[arg-type]


def jobs(*states: JobState) -> dict[str, JobState]:
    return {state.name: state for state in states}


def conditions(plan: Plan) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in plan.status["conditions"]}


def kinds(manifests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in manifests]


CPU_REPORT = ReportRead(
    "file:///store/cpu/report.json",
    report([candidate("onnx-int8.openvino", p50=2.0, drop=0.004), candidate("onnx-fp32.onnxruntime", p50=8.0)]),
)
GPU_REPORT = ReportRead(
    "file:///store/gpu/report.json", report([candidate("onnx-fp16.tensorrt", p50=0.8)], device="cuda")
)


def rolled(plan: Plan, version: int) -> DeploymentState:
    """The Deployment the plan created or patched, as the cluster reports it once rolled out."""
    manifest = next((m for m in plan.create if m["kind"] == "Deployment"), None)
    body = manifest if manifest else plan.patch[0].body
    template = body["spec"]["template"]["metadata"]
    assert template["annotations"][names.MODEL_VERSION] == str(version)
    return DeploymentState(
        version=version,
        replicas=body["spec"]["replicas"],
        rolled_out=True,
        serving_config=template["annotations"][names.SERVING_CONFIG],
        pool=template["labels"][names.POOL],
    )


def pods(deployment: DeploymentState, ready: int, count: int | None = None, prefix: str = "p") -> tuple[PodState, ...]:
    """``count`` pods of the Deployment's template (default: ``ready``), the first ``ready`` of them ready."""
    return tuple(
        PodState(f"{prefix}{i}", deployment.version, deployment.serving_config, ready=i < ready)
        for i in range(ready if count is None else count)
    )


def test_new_resource_starts_one_job_per_pool() -> None:
    plan = reconcile(SPEC, observed())
    opt = optimization()
    assert kinds(plan.create) == [
        ("ConfigMap", names.job_name("tiny", "cpu", opt)),
        ("Job", names.job_name("tiny", "cpu", opt)),
        ("ConfigMap", names.job_name("tiny", "gpu", opt)),
        ("Job", names.job_name("tiny", "gpu", opt)),
    ]
    status = plan.status
    assert status["phase"] == "Optimizing" and status["observedGeneration"] == 1
    assert status["lastOptimization"] == {
        "id": opt,
        "run": f"{opt}-20260101000000",
        "reason": "Created",
        "startedAt": T0,
        "generation": 1,
    }
    assert [p["phase"] for p in status["pools"]] == ["Pending", "Pending"]
    assert conditions(plan)["Optimized"][:2] == ("False", "Optimizing")
    assert conditions(plan)["Ready"][:2] == ("False", "AwaitingWinner")
    # One Event for a new resource: its waiting Deployed/Ready and first phase say nothing more.
    assert [e.reason for e in plan.events] == ["Optimizing"]
    assert plan.requeue_after is None  # the Jobs' watch events wake the next pass; no timer


def test_restarted_operator_creates_no_duplicate_jobs() -> None:
    first = reconcile(SPEC, observed())
    # After a restart the status may even be lost; the Jobs are found by their deterministic names.
    for status in (first.status, {}):
        plan = reconcile(
            SPEC,
            observed(
                status,
                jobs=jobs(job("cpu", "Running"), job("gpu", "Pending")),
                configmaps=frozenset(j.name for j in (job("cpu", ""), job("gpu", ""))),
            ),
        )
        assert plan.create == [] and plan.delete == []
        assert [p["phase"] for p in plan.status["pools"]] == ["Running", "Pending"]


def test_steady_state_is_quiet() -> None:
    running = observed(jobs=jobs(job("cpu", "Running"), job("gpu", "Running")))
    first = reconcile(SPEC, running)
    again = reconcile(SPEC, replace(running, status=first.status, now=T1))
    assert again.status == first.status  # no lastTransitionTime churn: nothing to patch
    assert again.events == []


def finished(status: dict[str, Any], **fields: Any) -> Observed:
    return observed(
        status,
        jobs=jobs(job("cpu", "Succeeded"), job("gpu", "Succeeded")),
        reports={"cpu": CPU_REPORT, "gpu": GPU_REPORT},
        now=T1,
        **fields,
    )


def test_finished_jobs_select_the_winner_and_deploy_it() -> None:
    started = reconcile(SPEC, observed())
    plan = reconcile(SPEC, finished(started.status))
    winner = plan.status["winner"]
    assert (winner["pool"], winner["name"], winner["version"]) == ("gpu", "onnx-fp16.tensorrt", 1)
    run = f"{optimization()}-20260101000000"  # the run started at T0
    assert winner["artifact"].endswith(f"/optimizations/{run}/gpu/artifacts/onnx-fp16.tensorrt")
    assert winner["optimization"] == run and plan.status["pools"][1]["report"].endswith(f"/{run}/gpu/report.json")
    assert plan.status["lastOptimization"]["finishedAt"] == T1
    assert plan.status["lastOptimization"]["outcome"] == "Succeeded"
    assert [c["verdict"] for c in plan.status["candidates"]] == ["winner", "eligible", "eligible"]
    assert plan.repository is not None and plan.repository.version == 1
    assert plan.repository.repository_uri == "file:///store/ml/tiny/repository"
    assert [k for k, _ in kinds(plan.create)] == ["Deployment", "Service"]
    assert plan.status["phase"] == "Deploying"
    assert conditions(plan)["Optimized"][:2] == ("True", "WinnerSelected")
    assert plan.optimization_outcome == "succeeded" and plan.optimization_seconds == 60.0
    assert plan.winner_speedup == pytest.approx(12.5)

    # The Deployment rolls out: Serving, with an endpoint.
    serving = reconcile(SPEC, finished(plan.status, deployment=rolled(plan, 1), service=True, **V1))
    assert serving.create == [] and serving.patch == [] and serving.repository is None
    assert serving.status["phase"] == "Serving"
    assert serving.status["endpoint"]["http"] == "http://tiny-triton.ml.svc:8000"
    assert conditions(serving)["Ready"][:2] == ("True", "Serving")
    assert conditions(serving)["Deployed"][:2] == ("True", "RolledOut")
    assert {e.reason for e in serving.events} == {"RolledOut", "Serving", "PhaseServing"}


def serving_state() -> tuple[dict[str, Any], DeploymentState]:
    plan = reconcile(SPEC, finished(reconcile(SPEC, observed()).status))
    deployment = rolled(plan, 1)
    done = reconcile(SPEC, finished(plan.status, deployment=deployment, service=True, **V1))
    return done.status, deployment


def test_spec_change_reoptimizes_while_the_current_version_keeps_serving() -> None:
    status, deployment = serving_state()
    changed = {**SPEC, "search": {"objective": "throughput", "timeBudget": "10m"}}
    old_jobs = jobs(job("cpu", "Succeeded"), job("gpu", "Succeeded"))
    plan = reconcile(
        changed,
        observed(
            status,
            jobs=old_jobs,
            deployment=deployment,
            service=True,
            now=T2,
            **V1,
        ),
    )
    assert sorted(d.name for d in plan.delete) == sorted(old_jobs)  # the old spec's Jobs go
    assert [k for k, _ in kinds(plan.create)] == ["ConfigMap", "Job", "ConfigMap", "Job"]
    assert plan.patch == []  # the serving Deployment is untouched
    assert plan.status["lastOptimization"]["reason"] == "SpecChanged"
    assert plan.status["phase"] == "Optimizing"
    assert conditions(plan)["Ready"][:2] == ("True", "Serving")
    assert plan.status["winner"]["version"] == 1 and plan.status["endpoint"]["version"] == 1

    # The new optimization picks a new winner: a new version, rolled out next to the old one.
    new_jobs = jobs(job("cpu", "Succeeded", spec=changed), job("gpu", "Succeeded", spec=changed))
    cpu_fast = ReportRead("r", report([candidate("onnx-int8.openvino", p50=2.0, throughput=90000.0)]))
    chosen = reconcile(
        changed,
        observed(
            plan.status,
            jobs=new_jobs,
            reports={"cpu": cpu_fast, "gpu": GPU_REPORT},
            deployment=deployment,
            service=True,
            now=T3,
            **V1,
        ),
    )
    assert chosen.status["winner"]["version"] == 2 and chosen.status["winner"]["pool"] == "cpu"
    assert chosen.repository is not None and chosen.repository.version == 2
    assert [p.kind for p in chosen.patch] == ["Deployment"]
    template = chosen.patch[0].body["spec"]["template"]
    assert template["metadata"]["annotations"][names.MODEL_VERSION] == "2"
    assert chosen.status["phase"] == "Deploying"
    assert conditions(chosen)["Ready"][:2] == ("True", "Serving")
    assert chosen.status["endpoint"]["version"] == 1  # still the old pods answering


def test_a_failed_job_fails_only_its_pool() -> None:
    started = reconcile(SPEC, observed())
    plan = reconcile(
        SPEC,
        observed(
            started.status,
            jobs=jobs(
                job("cpu", "Succeeded"),
                job(
                    "gpu",
                    "Failed",
                    "DeadlineExceeded: Job was active longer than specified deadline; pod: searched 3/9 candidates",
                ),
            ),
            reports={"cpu": CPU_REPORT},
            now=T1,
        ),
    )
    pools = {p["pool"]: p for p in plan.status["pools"]}
    assert pools["gpu"]["phase"] == "Failed" and "searched 3/9 candidates" in pools["gpu"]["message"]
    assert plan.status["winner"]["pool"] == "cpu"
    status, reason, message = conditions(plan)["Optimized"]
    assert (status, reason) == ("True", "WinnerSelected") and "pool(s) failed: gpu" in message


def test_every_pool_failing_fails_and_leaves_the_serving_version_alone() -> None:
    status, deployment = serving_state()
    changed = {**SPEC, "search": {"objective": "throughput", "timeBudget": "10m"}}
    failing = jobs(
        job("cpu", "Failed", "BackoffLimitExceeded; pod: OOMKilled", spec=changed),
        job("gpu", "Failed", "DeadlineExceeded", spec=changed),
    )
    plan = reconcile(
        changed,
        observed(status, jobs=failing, deployment=deployment, service=True, now=T2, **V1),
    )
    assert plan.status["phase"] == "Failed"
    _, reason, message = conditions(plan)["Optimized"]
    assert reason == "AllPoolsFailed" and "cpu: BackoffLimitExceeded; pod: OOMKilled" in message
    assert plan.create == [] and plan.patch == [] and plan.repository is None
    assert plan.status["winner"]["version"] == 1 and conditions(plan)["Ready"][0] == "True"
    assert plan.optimization_outcome == "failed"
    assert any(e.type == "Warning" and e.reason == "AllPoolsFailed" for e in plan.events)


def test_no_candidate_within_drop_fails_with_the_best_drop() -> None:
    rejected = ReportRead(
        "r",
        report(
            [
                candidate("onnx-int8.openvino", p50=2.0, drop=0.03, status="rejected", reason="drop 0.03 > 0.01"),
                candidate("onnx-bf16.openvino", p50=4.0, drop=0.015, status="rejected", reason="drop 0.015 > 0.01"),
            ]
        ),
    )
    spec = {**SPEC, "targets": [{"pool": "cpu"}]}
    plan = reconcile(spec, observed(jobs=jobs(job("cpu", "Succeeded", spec=spec)), reports={"cpu": rejected}))
    assert plan.status["phase"] == "Failed"
    _, reason, message = conditions(plan)["Optimized"]
    assert reason == "NoCandidateWithinDrop" and "best drop is 0.015 (onnx-bf16.openvino on cpu)" in message
    assert "winner" not in plan.status and plan.create == []


def test_unreadable_report_fails_that_pool() -> None:
    spec = {**SPEC, "targets": [{"pool": "cpu"}]}
    broken = ReportRead("file:///store/x/report.json", error="nothing at file:///store/x/report.json")
    plan = reconcile(spec, observed(jobs=jobs(job("cpu", "Succeeded", spec=spec)), reports={"cpu": broken}))
    assert plan.status["pools"][0]["phase"] == "Failed"
    assert "report is unusable: nothing at" in plan.status["pools"][0]["message"]
    assert conditions(plan)["Optimized"][1] == "AllPoolsFailed"


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({**SPEC, "search": {"batchSizes": [0]}}, "InvalidSpec", "spec.search.batchSizes[0]: "),
        (
            {**SPEC, "targets": [{"pool": "cpu"}, {"pool": "tpu"}]},
            "UnknownPool",
            "spec.targets[1].pool: unknown pool 'tpu'; known pools: cpu, gpu",
        ),
        ({**SPEC, "model": {"uri": "file:///m.onnx", "format": "keras"}}, "InvalidSpec", "spec.model.format"),
        (
            {**SPEC, "targets": [{"pool": "cpu"}], "search": {"backends": ["tensorrt"]}},
            "NoBackendForPool",
            "spec.search.backends: none of tensorrt runs on pool 'cpu' (spec.targets[0], device cpu, which runs "
            "onnxruntime, openvino, torch)",
        ),
    ],
)
def test_bad_spec_fails_with_a_condition_naming_the_field(spec: dict[str, Any], reason: str, words: str) -> None:
    status, deployment = serving_state()
    plan = reconcile(spec, observed(status, deployment=deployment, service=True, now=T2))
    _, got_reason, message = conditions(plan)["Optimized"]
    assert got_reason == reason and words in message
    assert plan.status["phase"] == "Failed"
    assert plan.create == [] and plan.patch == [] and plan.delete == [] and plan.repository is None  # serving untouched
    assert plan.status["winner"]["version"] == 1


def test_cost_objective_needs_every_pool_priced() -> None:
    settings = SETTINGS.model_copy(update={"pools": [Pool(name="cpu", image="x"), SETTINGS.pools[1]]})
    plan = reconcile({**SPEC, "search": {"objective": "cost"}}, observed(settings=settings))
    _, reason, message = conditions(plan)["Optimized"]
    assert reason == "PoolWithoutPrice" and message.startswith("spec.search.objective: cost needs a pricePerHour")


def test_unreachable_model_uri_creates_nothing_and_retries() -> None:
    plan = reconcile(SPEC, observed(model_error="no file at /models/tiny.onnx"))
    assert plan.create == []
    assert conditions(plan)["Optimized"][1:] == (
        "ModelUnreachable",
        "spec.model.uri: no file at /models/tiny.onnx",
    )
    assert plan.status["phase"] == "Failed" and plan.requeue_after == 60.0
    # Once the model is there, the next pass starts the Jobs.
    assert [k for k, _ in kinds(reconcile(SPEC, observed(plan.status)).create)].count("Job") == 2


def test_reoptimize_annotation_records_its_reason() -> None:
    status, deployment = serving_state()
    annotations = {names.REOPTIMIZE: "SLOViolation:p99 80ms > 50ms"}
    plan = reconcile(SPEC, observed(status, annotations=annotations, deployment=deployment, service=True, now=T2))
    assert plan.status["lastOptimization"]["reason"] == "SLOViolation"
    assert plan.status["lastOptimization"]["id"] == optimization(annotations=annotations)
    assert [k for k, _ in kinds(plan.create)].count("Job") == 2


def test_fields_of_other_writers_survive() -> None:
    status, deployment = serving_state()
    status = {
        **status,
        "lastDecision": {"action": "Keep"},
        "conditions": [
            *status["conditions"],
            {
                "type": "SLOMet",
                "status": "True",
                "reason": "WithinSLO",
                "message": "",
                "lastTransitionTime": T1,
            },
        ],
    }
    plan = reconcile(SPEC, finished(status, deployment=deployment, service=True, **V1))
    assert plan.status["lastDecision"] == {"action": "Keep"}
    assert conditions(plan)["SLOMet"][:2] == ("True", "WithinSLO")


def test_serving_change_patches_the_deployment_without_reoptimizing() -> None:
    status, deployment = serving_state()
    scaled = {**SPEC, "serving": {"replicas": 3}}
    plan = reconcile(scaled, finished(status, deployment=deployment, service=True, **V1))
    # Scaling touches only the replica count: the running pods are not restarted.
    assert [p.kind for p in plan.patch] == ["Deployment"] and plan.patch[0].body == {"spec": {"replicas": 3}}
    assert plan.create == [] and plan.repository is None
    assert conditions(plan)["Deployed"][:2] == ("False", "RollingOut")


def rolling_to_version_2() -> tuple[dict[str, Any], DeploymentState, DeploymentState, dict[str, Any]]:
    """A served version 1, and a new winner whose version 2 the Deployment's template now runs."""
    status, deployment = serving_state()
    changed = {**SPEC, "search": {"objective": "throughput", "timeBudget": "10m"}}
    new_jobs = jobs(job("cpu", "Succeeded", spec=changed), job("gpu", "Succeeded", spec=changed))
    cpu_fast = ReportRead("r", report([candidate("onnx-int8.openvino", p50=2.0, throughput=90000.0)]))
    chosen = reconcile(
        changed,
        observed(
            status,
            jobs=new_jobs,
            reports={"cpu": cpu_fast, "gpu": GPU_REPORT},
            deployment=deployment,
            service=True,
            now=T2,
            **V1,
        ),
    )
    fields = {
        "jobs": new_jobs,
        "service": True,
        "now": T3,
        "repository_versions": frozenset({1, 2}),
        "repository_ready": frozenset({1, 2}),
    }
    return chosen.status | {"_spec": changed}, deployment, rolled(chosen, 2), fields


def test_ready_counts_only_the_new_versions_pods() -> None:
    status, old, new, fields = rolling_to_version_2()
    spec = status.pop("_spec")
    # The Deployment's readyReplicas would say 1/1: the ready pod is version 1's.
    plan = reconcile(spec, observed(status, deployment=new, server_pods=pods(old, 1) + pods(new, 0, 1, "n"), **fields))
    _, reason, message = conditions(plan)["Deployed"]
    assert reason == "RollingOut" and "0/1 replicas ready; version 1 keeps serving" in message
    assert plan.status["endpoint"]["version"] == 1 and conditions(plan)["Ready"][:2] == ("True", "Serving")
    assert plan.patch == [] and plan.create == []

    # Both ready: the rollout is not over until the old pod is gone.
    both = reconcile(spec, observed(status, deployment=new, server_pods=pods(old, 1) + pods(new, 1, 1, "n"), **fields))
    assert conditions(both)["Deployed"][1] == "RollingOut" and both.status["endpoint"]["version"] == 1
    done = reconcile(spec, observed(status, deployment=new, server_pods=pods(new, 1, 1, "n"), **fields))
    assert conditions(done)["Deployed"][:2] == ("True", "RolledOut") and done.status["endpoint"]["version"] == 2


def test_a_crash_looping_new_version_keeps_the_old_one_serving_and_says_why() -> None:
    status, old, new, fields = rolling_to_version_2()
    spec = status.pop("_spec")
    crash = PodProblem("CrashLoopBackOff", "container triton restarted 4 times; last exit: Error (exit code 1)")
    crashing = (PodState("n0", 2, new.serving_config, ready=False, problem=crash),)
    plan = reconcile(spec, observed(status, deployment=new, server_pods=pods(old, 1) + crashing, **fields))
    _, reason, message = conditions(plan)["Deployed"]
    assert reason == "CrashLoopBackOff"
    assert "0/1 new pods ready; CrashLoopBackOff: container triton restarted 4 times" in message
    assert message.endswith("; version 1 keeps serving")
    assert conditions(plan)["Ready"][:2] == ("True", "Serving") and plan.status["endpoint"]["version"] == 1
    assert plan.patch == []  # the Deployment is left to keep retrying; the old pods stay (maxUnavailable 0)
    assert any(e.type == "Warning" and e.reason == "CrashLoopBackOff" for e in plan.events)

    # Nothing serves at all (a first version that cannot pull its image): Ready says why too.
    pull = PodProblem("ImageUnavailable", 'ImagePullBackOff: Back-off pulling image "triton:nope"')
    stuck = (PodState("n0", 2, new.serving_config, ready=False, problem=pull),)
    alone = reconcile(spec, observed(status, deployment=new, server_pods=stuck, **fields))
    assert conditions(alone)["Deployed"][1] == "ImageUnavailable"
    assert conditions(alone)["Ready"][1:] == (
        "NotReady",
        "no Triton pod of version 2 (onnx-int8.openvino on cpu) is ready yet: "
        'ImageUnavailable: ImagePullBackOff: Back-off pulling image "triton:nope"',
    )


def test_a_refused_replicaset_is_reported() -> None:
    status, old, new, fields = rolling_to_version_2()
    spec = status.pop("_spec")
    refused = replace(new, problem=PodProblem("FailedCreate", 'pods "x" is forbidden: violates PodSecurity'))
    plan = reconcile(spec, observed(status, deployment=refused, server_pods=pods(old, 1), **fields))
    _, reason, message = conditions(plan)["Deployed"]
    assert reason == "FailedCreate" and "violates PodSecurity" in message and "version 1 keeps serving" in message


def test_a_stalled_rollout_is_reported_while_the_old_version_serves() -> None:
    status, old, new, fields = rolling_to_version_2()
    spec = status.pop("_spec")
    stuck = replace(new, stalled='ReplicaSet "mlp-triton-7d9" has timed out progressing.')
    plan = reconcile(
        spec, observed(status, deployment=stuck, server_pods=pods(old, 1) + pods(new, 0, 1, "n"), **fields)
    )
    _, reason, message = conditions(plan)["Deployed"]
    assert reason == "RolloutStalled" and "timed out progressing" in message
    assert "version 1 keeps serving" in message
    assert conditions(plan)["Ready"][:2] == ("True", "Serving") and plan.status["endpoint"]["version"] == 1
    assert any(e.type == "Warning" and e.reason == "RolloutStalled" for e in plan.events)


def test_pods_of_the_served_version_lost_while_nothing_rolls_out_leave_it_serving() -> None:
    status, deployment = serving_state()
    assert conditions(reconcile(SPEC, finished(status, deployment=deployment, service=True, **V1)))["Deployed"][0]
    # The pod deleted (its replacement is starting), or Triton killed (its container restarted).
    starting = PodState("p9", 1, deployment.serving_config, ready=False, note="container triton ContainerCreating")
    plan = reconcile(SPEC, finished(status, deployment=deployment, service=True, server_pods=(starting,), **V1))
    _, reason, message = conditions(plan)["Deployed"]
    assert reason == "ReplicasUnavailable"
    assert message == (
        "version 1 (onnx-fp16.tensorrt on gpu) rolled out, but 0/1 replicas are ready now "
        "(pod p9: container triton ContainerCreating); Kubernetes restarts or replaces the pods, "
        "nothing to do unless this lasts"
    )
    assert conditions(plan)["Ready"] == (
        "False",
        "NotReady",
        "no Triton pod of version 1 (onnx-fp16.tensorrt on gpu) is ready now: "
        "pod p9: container triton ContainerCreating",
    )
    # Nothing about what is served changes, and nothing is rolled out or written.
    assert plan.status["phase"] == "Serving" and plan.status["winner"] == status["winner"]
    assert plan.status["endpoint"] == status["endpoint"]
    assert plan.create == [] and plan.patch == [] and plan.repository is None
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "ReplicasUnavailable"), ("Warning", "NotReady")]

    # A crash of the served version is named too, and the reason holds until the pod is back.
    crash = PodProblem("CrashLoopBackOff", "container triton restarted 3 times; last exit: Error (exit code 137)")
    crashing = (PodState("p9", 1, deployment.serving_config, ready=False, problem=crash),)
    again = reconcile(SPEC, finished(plan.status, deployment=deployment, service=True, server_pods=crashing, **V1))
    assert conditions(again)["Deployed"][1] == "ReplicasUnavailable" and again.status["phase"] == "Serving"
    assert "pod p9: CrashLoopBackOff: container triton restarted 3 times" in conditions(again)["Deployed"][2]
    back = reconcile(SPEC, finished(again.status, deployment=deployment, service=True, **V1))
    assert conditions(back)["Deployed"][:2] == ("True", "RolledOut") and back.status["phase"] == "Serving"
    assert conditions(back)["Ready"][:2] == ("True", "Serving")

    # A version that never rolled out has no pods to lose: its first pods are a rollout.
    first = reconcile(SPEC, finished(reconcile(SPEC, observed()).status))
    fresh = rolled(first, 1)
    starting_first = (PodState("p0", 1, fresh.serving_config, ready=False, note="container triton ContainerCreating"),)
    deploying = reconcile(
        SPEC, finished(first.status, deployment=fresh, service=True, server_pods=starting_first, **V1)
    )
    assert conditions(deploying)["Deployed"][1] == "RollingOut" and deploying.status["phase"] == "Deploying"


def test_an_operator_upgrade_does_not_restart_serving() -> None:
    status, deployment = serving_state()
    # A new operator: another Triton image, another uid, another mount root; same spec and winner.
    upgraded = SETTINGS.model_copy(
        update={"triton_image": "nvcr.io/nvidia/tritonserver:99.01-py3", "pod_uid": 2000, "pvc_mount_root": "/m"}
    )
    plan = reconcile(SPEC, finished(status, deployment=deployment, service=True, settings=upgraded, **V1))
    assert plan.patch == [] and plan.create == [] and plan.repository is None
    assert conditions(plan)["Deployed"][:2] == ("True", "RolledOut")

    # Deployments written by operators that hashed the replica count into the serving config stay too.
    legacy = names.short_hash(parse_spec(SPEC).serving.model_dump(mode="json"))
    old_style = replace(deployment, serving_config=legacy)
    plan = reconcile(SPEC, finished(status, deployment=old_style, service=True, settings=upgraded, **V1))
    assert plan.patch == [] and conditions(plan)["Deployed"][:2] == ("True", "RolledOut")

    # The next version takes the new settings along.
    changed = {**SPEC, "serving": {"responseCache": False}}
    plan = reconcile(changed, finished(status, deployment=deployment, service=True, settings=upgraded, **V1))
    [patch] = plan.patch
    container = patch.body["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/tritonserver:99.01-py3"


UNSCHEDULABLE = PodProblem("Unschedulable", "0/1 nodes are available: 1 Insufficient cpu.", since=T0)
LATER = "2026-01-01T00:10:01+00:00"  # past the default HONED_PENDING_TIMEOUT_S (600 s) after T0


def test_a_pod_that_cannot_run_is_named_in_the_pool_and_the_condition() -> None:
    started = reconcile(SPEC, observed())
    waiting = replace(job("cpu", "Running"), problem=UNSCHEDULABLE)
    plan = reconcile(SPEC, observed(started.status, jobs=jobs(waiting, job("gpu", "Running")), now=T1))
    pools = {p["pool"]: p for p in plan.status["pools"]}
    assert pools["cpu"]["phase"] == "Running" and pools["cpu"]["reason"] == "Unschedulable"
    assert pools["cpu"]["message"] == "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    _, reason, message = conditions(plan)["Optimized"]
    assert reason == "Optimizing"
    assert message.endswith("cpu running: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu., gpu running")
    assert plan.patch == [] and plan.status["phase"] == "Optimizing"
    # Nothing in the cluster changes when the timeout passes: the pass is timed for it.
    waited = (datetime.fromisoformat(T1) - datetime.fromisoformat(T0)).total_seconds()
    assert plan.requeue_after == SETTINGS.pending_timeout_s - waited + 1.0


def test_a_pool_waiting_past_the_timeout_fails_with_the_reason_and_its_job_is_suspended() -> None:
    started = reconcile(SPEC, observed())
    pull = PodProblem("ImageUnavailable", 'ErrImageNeverPull: image "opt-gpu"', since=T0)
    waiting = jobs(replace(job("cpu", "Running"), problem=UNSCHEDULABLE), replace(job("gpu", "Pending"), problem=pull))
    plan = reconcile(SPEC, observed(started.status, jobs=waiting, now=LATER))
    pools = {p["pool"]: p for p in plan.status["pools"]}
    assert (pools["cpu"]["phase"], pools["cpu"]["reason"]) == ("Failed", "Unschedulable")
    assert pools["gpu"]["message"].startswith('ImageUnavailable: ErrImageNeverPull: image "opt-gpu" (waited 10 min')
    suspended = {p.name: p.body for p in plan.patch}
    assert suspended[job("cpu", "").name]["spec"] == {"suspend": True}
    annotation = suspended[job("gpu", "").name]["metadata"]["annotations"][names.FAILED]
    assert annotation == pools["gpu"]["message"]
    assert plan.status["phase"] == "Failed" and conditions(plan)["Optimized"][1] == "AllPoolsFailed"

    # One cause on every pool is named as the reason.
    same = jobs(*(replace(job(pool, "Running"), problem=UNSCHEDULABLE) for pool in ("cpu", "gpu")))
    plan = reconcile(SPEC, observed(started.status, jobs=same, now=LATER))
    _, reason, message = conditions(plan)["Optimized"]
    assert reason == "Unschedulable" and "Insufficient cpu" in message
    assert any(e.type == "Warning" and e.reason == "Unschedulable" for e in plan.events)


@pytest.mark.parametrize(
    ("problem", "fix"),
    [
        (
            PodProblem("ImageUnavailable", 'ErrImageNeverPull: Container image "opt-cpu" is not present', since=T0),
            "fix: make the optimizer image pullable by the pool's nodes (push it, or load it onto the nodes when its "
            "pullPolicy is Never), or correct image.repository/tag in the pools[] entry 'cpu' of the chart's values",
        ),
        (
            PodProblem("ContainerConfigError", 'CreateContainerConfigError: secret "models-s3" not found', since=T0),
            "fix: create Secret 'models-s3' in namespace 'ml', or correct spec.model.credentialsSecret",
        ),
        (
            PodProblem("ContainerConfigError", 'CreateContainerConfigError: secret "store" not found', since=T0),
            "fix: create what the message names in namespace 'ml' (the store's Secret is the chart's)",
        ),
        (
            PodProblem("FailedCreate", 'pods "x" is forbidden: exceeded quota: q, requested: memory=3Gi', since=T0),
            "fix: namespace 'ml' refuses the pod: raise its ResourceQuota or LimitRange, relax its Pod Security level, "
            "or lower resources in the pools[] entry 'cpu' of the chart's values",
        ),
        (
            UNSCHEDULABLE,
            "fix: add a node that matches nodeSelector/tolerations and fits resources of the pools[] entry 'cpu' of "
            "the chart's values, or target another pool",
        ),
    ],
)
def test_a_pool_that_gave_up_says_what_to_fix_and_how_to_retry(problem: PodProblem, fix: str) -> None:
    spec = {**SPEC, "model": {**SPEC["model"], "credentialsSecret": "models-s3"}, "targets": [{"pool": "cpu"}]}
    started = reconcile(spec, observed())
    stuck = replace(job("cpu", "Running", spec=spec), problem=problem)
    plan = reconcile(spec, observed(started.status, jobs=jobs(stuck), now=LATER))
    [pool] = plan.status["pools"]
    assert pool["phase"] == "Failed"
    assert pool["message"] == (
        f"{problem.describe()} (waited 10 min, HONED_PENDING_TIMEOUT_S is 600 s); {fix}; "
        'then annotate the OptimizedModel honed.dev/reoptimize="Requested:$(date +%s)" to run it again'
    )
    _, reason, message = conditions(plan)["Optimized"]
    assert reason == problem.reason and message.endswith(pool["message"])
    # Before the timeout the pool only waits, and says so without a fix: the wait may still end.
    early = reconcile(spec, observed(started.status, jobs=jobs(stuck), now=T1))
    assert early.status["pools"][0]["message"] == problem.describe()


def test_a_crash_or_an_earlier_oom_is_shown_but_never_times_out() -> None:
    started = reconcile(SPEC, observed())
    oom = PodProblem("OOMKilled", "an earlier attempt ended: container optimizer ran out of memory", since=T0)
    plan = reconcile(
        SPEC,
        observed(
            started.status, jobs=jobs(replace(job("cpu", "Running"), problem=oom), job("gpu", "Running")), now=LATER
        ),
    )
    pools = {p["pool"]: p for p in plan.status["pools"]}
    assert (pools["cpu"]["phase"], pools["cpu"]["reason"]) == ("Running", "OOMKilled") and plan.patch == []


def test_feedback_without_prometheus_says_so() -> None:
    status, deployment = serving_state()
    watched = {**SPEC, "feedback": {"enabled": True, "p99LatencyMs": 50}}
    plan = reconcile(watched, finished(status, deployment=deployment, service=True, **V1))
    assert conditions(plan)["SLOMet"][:2] == ("Unknown", "PrometheusNotConfigured")
    assert "HONED_PROMETHEUS_URL" in conditions(plan)["SLOMet"][2]
    configured = SETTINGS.model_copy(update={"prometheus_url": "http://prometheus:9090"})
    fixed = reconcile(watched, finished(plan.status, deployment=deployment, service=True, settings=configured, **V1))
    assert "SLOMet" not in conditions(fixed)  # the loop writes its own verdict from now on


def test_the_same_spec_again_is_a_new_run_with_its_own_store_key_but_the_same_job_names() -> None:
    status, deployment = serving_state()
    first_run = status["lastOptimization"]["run"]
    changed = {**SPEC, "search": {"objective": "throughput", "timeBudget": "10m"}}
    other = reconcile(changed, observed(status, deployment=deployment, service=True, now=T2, **V1))
    # Back to the first spec (a revert in Git): the same optimization id, a new run.
    back = reconcile(SPEC, observed(other.status, deployment=deployment, service=True, now=T3, **V1))
    last = back.status["lastOptimization"]
    assert last["id"] == status["lastOptimization"]["id"] and last["run"] != first_run
    assert last["run"] == f"{optimization()}-20260101000300"
    jobs_made = [m for m in back.create if m["kind"] == "Job"]
    assert [m["metadata"]["name"] for m in jobs_made] == [
        names.job_name("tiny", p, optimization()) for p in ("cpu", "gpu")
    ]
    assert all(
        f"/optimizations/{last['run']}/" in m["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        for m in jobs_made
    )


def test_a_restart_that_lost_the_status_keeps_the_jobs_run() -> None:
    existing = replace(job("cpu", "Running"), run=f"{optimization()}-20251231235900")
    plan = reconcile(SPEC, observed(jobs=jobs(existing), now=T1))
    assert plan.status["lastOptimization"]["run"] == existing.run
    gpu_job = next(m for m in plan.create if m["kind"] == "Job")
    assert gpu_job["metadata"]["annotations"][names.RUN] == existing.run  # the other pool joins that run
    # A Job of an operator from before runs: its output is keyed by the id alone.
    legacy = reconcile(SPEC, observed(jobs=jobs(job("cpu", "Running")), now=T1))
    assert legacy.status["lastOptimization"]["run"] == optimization()


def test_a_short_pending_timeout_says_seconds() -> None:
    # Seen on a real cluster (make e2e-faults, HONED_PENDING_TIMEOUT_S=30): "waited 0 min".
    settings = SETTINGS.model_copy(update={"pending_timeout_s": 30.0})
    started = reconcile(SPEC, observed(settings=settings))
    waiting = jobs(*(replace(job(pool, "Running"), problem=UNSCHEDULABLE) for pool in ("cpu", "gpu")))
    plan = reconcile(SPEC, observed(started.status, jobs=waiting, now="2026-01-01T00:00:45+00:00", settings=settings))
    message = {p["pool"]: p for p in plan.status["pools"]}["cpu"]["message"]
    assert "(waited 45 s, HONED_PENDING_TIMEOUT_S is 30 s); fix: " in message, message


def test_events_follow_transitions_and_a_new_resource_posts_one() -> None:
    def status(phase: str | None, *conds: tuple[str, str, str]) -> OptimizedModelStatus:
        made = [
            Condition(type=t, status=s, reason=r, message="m", last_transition_time="2026-01-01T00:00:00Z")
            for t, s, r in conds
        ]
        return OptimizedModelStatus(phase=phase, conditions=made)

    waiting = [("Deployed", "False", "AwaitingWinner"), ("Ready", "False", "AwaitingWinner")]
    new = status("Optimizing", ("Optimized", "False", "Optimizing"), *waiting)
    assert [e.reason for e in transition_events(status(None), new)] == ["Optimizing"]
    # An invalid spec: its Warning says it, not a phase event besides.
    failed = status("Failed", ("Optimized", "False", "InvalidSpec"), *waiting)
    assert [(e.type, e.reason) for e in transition_events(status(None), failed)] == [("Warning", "InvalidSpec")]
    # Later, every change of a condition and of the phase is an Event, AwaitingWinner too.
    done = status("Deploying", ("Optimized", "True", "WinnerSelected"), ("Deployed", "False", "Rollout"), waiting[1])
    assert [e.reason for e in transition_events(new, done)] == ["WinnerSelected", "Rollout", "PhaseDeploying"]
    assert [e.reason for e in transition_events(done, new)] == ["Optimizing", "AwaitingWinner", "PhaseOptimizing"]
