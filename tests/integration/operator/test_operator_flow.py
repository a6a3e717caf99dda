"""The running operator against a real API server from creation to Serving, through a spec change,
a restart, a failing pool and deletion. The Job and Deployment controllers are real; the tests play
the kubelet on their pods. The Jobs' output is a real report with real ONNX Runtime artifacts,
written where the Job would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from honed.controller import operator_metrics
from honed.controller.kube import DEPLOYMENTS, EVENTS, JOBS, OPTIMIZED_MODELS, SERVICES, KubeClient
from honed.controller.settings import HonedSettings
from honed.controller.stored_repository import write_repository
from honed.optimizer.report import Candidate
from honed.serving.repository import CONFIG_FILE, DEPLOYMENT_FILE
from tests.fixtures.reports import candidate, report
from tests.fixtures.serving_artifacts import mlp_artifact
from tests.integration.operator.harness import (
    StartOperator,
    eventually,
    fail_job,
    finish_job,
    get_om,
    jobs_of,
    manifest,
    out_dir,
    roll_out,
)

pytestmark = pytest.mark.slow


def model_spec(settings: HonedSettings, **extra: Any) -> dict[str, Any]:
    model = Path(settings.artifact_store.removeprefix("file://")).parent / "model.onnx"
    mlp_artifact(model.parent / "source")
    model.write_bytes((model.parent / "source" / "model.onnx").read_bytes())
    return {"model": {"uri": f"file://{model}"}, "targets": [{"pool": "cpu"}, {"pool": "gpu"}], **extra}


def write_output(job: dict[str, Any], candidates: list[Candidate], device: str = "cpu") -> None:
    """What `honed optimize --out` leaves: report.json and one artifact directory per candidate."""
    out = out_dir(job)
    for cand in candidates:
        mlp_artifact(out / str(cand.artifact))
    report(candidates, device=device).write(out)


async def current_jobs(api: KubeClient, namespace: str, name: str, count: int) -> dict[str, dict[str, Any]]:
    async def found() -> dict[str, dict[str, Any]]:
        jobs = await jobs_of(api, namespace, name)
        by_pool = {j["metadata"]["labels"]["honed.dev/pool"]: j for j in jobs}
        return by_pool if len(jobs) == count else {}

    return await eventually(found, what=f"{count} Jobs of {name}")


async def phase(api: KubeClient, namespace: str, name: str, wanted: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body = await get_om(api, namespace, name)
        return body if body.get("status", {}).get("phase") == wanted else None

    return await eventually(reached, what=f"phase {wanted}")


def job_uids(jobs: list[dict[str, Any]]) -> set[str]:
    return {j["metadata"]["uid"] for j in jobs}


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"]["conditions"]}


async def test_from_creation_to_serving_and_through_a_spec_change(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    succeeded_before = (
        operator_metrics.REGISTRY.get_sample_value("honed_optimizations_total", {"outcome": "succeeded"}) or 0
    )
    await start_operator(write_repository)
    await api.create(OPTIMIZED_MODELS, namespace, manifest("mlp", model_spec(settings)))
    jobs = await current_jobs(api, namespace, "mlp", 2)
    body = await phase(api, namespace, "mlp", "Optimizing")
    assert body["status"]["lastOptimization"]["reason"] == "Created"
    for job in jobs.values():
        assert job["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]

    write_output(jobs["cpu"], [candidate("onnx-int8.onnxruntime", p50=2.0, drop=0.004)])
    write_output(jobs["gpu"], [candidate("onnx-fp16.onnxruntime", p50=0.8)], device="cuda")
    await finish_job(api, jobs["cpu"], message="onnx-int8.onnxruntime 5.00x, 1 of 1 accepted")
    await finish_job(api, jobs["gpu"])

    body = await phase(api, namespace, "mlp", "Deploying")
    pools = {p["pool"]: p for p in body["status"]["pools"]}
    assert pools["cpu"]["message"] == "onnx-int8.onnxruntime 5.00x, 1 of 1 accepted"  # the engine's summary
    winner = body["status"]["winner"]
    assert (winner["pool"], winner["name"], winner["version"]) == ("gpu", "onnx-fp16.onnxruntime", 1)
    model_dir = Path(settings.artifact_store.removeprefix("file://")) / namespace / "mlp" / "repository" / "mlp"
    assert (model_dir / "1" / DEPLOYMENT_FILE).is_file() and (model_dir / CONFIG_FILE).is_file()
    deployment = await api.get(DEPLOYMENTS, namespace, "mlp-triton")
    assert deployment is not None and await api.get(SERVICES, namespace, "mlp-triton") is not None
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--model-repository={model_dir.parent}" in args

    await roll_out(api, namespace, "mlp-triton")
    body = await phase(api, namespace, "mlp", "Serving")
    assert conditions(body)["Ready"]["status"] == "True"
    assert body["status"]["endpoint"] == {
        "http": f"http://mlp-triton.{namespace}.svc:8000",
        "grpc": f"mlp-triton.{namespace}.svc:8001",
        "metrics": f"http://mlp-triton.{namespace}.svc:8002/metrics",
        "model": "mlp",
        "version": 1,
    }
    wanted = {"Optimizing", "WinnerSelected", "RolledOut", "Serving", "PhaseServing"}

    async def all_posted() -> bool:
        # kopf posts Events after the status patch that caused them, so they may trail it a little.
        return wanted <= {e["reason"] for e in await api.list(EVENTS, namespace, {})}

    await eventually(all_posted, timeout=30, what=f"Events {sorted(wanted)}")
    succeeded = operator_metrics.REGISTRY.get_sample_value("honed_optimizations_total", {"outcome": "succeeded"})
    assert succeeded == succeeded_before + 1

    # A spec change re-optimizes; version 1 keeps serving until version 2 is ready.
    changed = {**body["spec"], "search": {"objective": "throughput"}}
    await api.patch(OPTIMIZED_MODELS, namespace, "mlp", {"spec": changed})
    body = await phase(api, namespace, "mlp", "Optimizing")
    assert body["status"]["lastOptimization"]["reason"] == "SpecChanged"
    assert conditions(body)["Ready"]["status"] == "True" and body["status"]["endpoint"]["version"] == 1

    async def only_new_jobs() -> dict[str, dict[str, Any]]:
        jobs_now = await jobs_of(api, namespace, "mlp")
        fresh = {
            j["metadata"]["labels"]["honed.dev/pool"]: j
            for j in jobs_now
            if j["metadata"]["name"] not in {old["metadata"]["name"] for old in jobs.values()}
        }
        return fresh if len(fresh) == 2 and len(jobs_now) == 2 else {}

    new_jobs = await eventually(only_new_jobs, what="the old Jobs replaced by new ones")
    write_output(new_jobs["cpu"], [candidate("onnx-int8.onnxruntime", p50=2.0, throughput=50000.0)])
    write_output(new_jobs["gpu"], [candidate("onnx-fp16.onnxruntime", p50=0.8, throughput=20000.0)], "cuda")
    await finish_job(api, new_jobs["cpu"])
    await finish_job(api, new_jobs["gpu"])

    body = await phase(api, namespace, "mlp", "Deploying")
    assert body["status"]["winner"]["version"] == 2 and body["status"]["winner"]["pool"] == "cpu"
    assert body["status"]["endpoint"]["version"] == 1 and conditions(body)["Ready"]["status"] == "True"
    assert (model_dir / "2" / DEPLOYMENT_FILE).is_file()
    await roll_out(api, namespace, "mlp-triton")
    body = await phase(api, namespace, "mlp", "Serving")
    assert body["status"]["endpoint"]["version"] == 2


async def test_restarted_operator_picks_up_running_jobs_without_duplicates(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    first = await start_operator(write_repository)
    await api.create(OPTIMIZED_MODELS, namespace, manifest("resume", model_spec(settings)))
    jobs = await current_jobs(api, namespace, "resume", 2)
    await phase(api, namespace, "resume", "Optimizing")
    await first.close()

    # The Jobs run on while no operator is up; a new one resumes from what exists.
    write_output(jobs["cpu"], [candidate("onnx-int8.onnxruntime", p50=2.0)])
    await finish_job(api, jobs["cpu"])
    await start_operator(write_repository)

    async def cpu_done() -> bool:
        pools = {p["pool"]: p["phase"] for p in (await get_om(api, namespace, "resume"))["status"].get("pools", [])}
        return pools.get("cpu") == "Succeeded"

    await eventually(cpu_done, what="the cpu pool seen as Succeeded by the new operator")
    write_output(jobs["gpu"], [candidate("onnx-fp16.onnxruntime", p50=0.8)], device="cuda")
    await finish_job(api, jobs["gpu"])
    body = await phase(api, namespace, "resume", "Deploying")
    assert body["status"]["winner"]["version"] == 1
    # The very Jobs the first operator created: none deleted and made again, none added.
    assert job_uids(await jobs_of(api, namespace, "resume")) == job_uids(list(jobs.values()))


async def test_a_failing_pool_is_marked_with_its_pod_message_and_the_others_go_on(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    await start_operator(write_repository)
    await api.create(OPTIMIZED_MODELS, namespace, manifest("partial", model_spec(settings)))
    jobs = await current_jobs(api, namespace, "partial", 2)
    # A crash (exit 3 is no engine verdict): the Job controller retries once, then gives up.
    await fail_job(api, jobs["gpu"], exit_code=3, pod_message="searched 4 of 9 candidates before the crash")
    write_output(jobs["cpu"], [candidate("onnx-int8.onnxruntime", p50=2.0)])
    await finish_job(api, jobs["cpu"])
    body = await phase(api, namespace, "partial", "Deploying")
    pools = {p["pool"]: p for p in body["status"]["pools"]}
    assert pools["gpu"]["phase"] == "Failed"
    assert pools["gpu"]["message"].startswith("BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert "searched 4 of 9" in pools["gpu"]["message"]
    assert pools["cpu"]["phase"] == "Succeeded" and pools["cpu"]["report"].endswith("/cpu/report.json")
    assert body["status"]["winner"]["pool"] == "cpu"
    assert "1 pool(s) failed: gpu" in conditions(body)["Optimized"]["message"]


async def test_no_candidate_within_drop_fails_with_the_best_drop(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    await start_operator(write_repository)
    spec = {**model_spec(settings), "targets": [{"pool": "cpu"}]}
    await api.create(OPTIMIZED_MODELS, namespace, manifest("lossy", spec))
    jobs = await current_jobs(api, namespace, "lossy", 1)
    write_output(
        jobs["cpu"],
        [
            candidate("onnx-int8.onnxruntime", p50=2.0, drop=0.08, status="rejected", reason="drop 0.08 > 0.01"),
            candidate("onnx-fp16.onnxruntime", p50=4.0, drop=0.02, status="rejected", reason="drop 0.02 > 0.01"),
        ],
    )
    # As the engine does when nothing passes the gate: report written, exit code 1, which the
    # Job's podFailurePolicy turns into a failed Job at once.
    await fail_job(api, jobs["cpu"], exit_code=1, pod_message="no candidate passed the accuracy gate")
    body = await phase(api, namespace, "lossy", "Failed")
    optimized = conditions(body)["Optimized"]
    assert optimized["reason"] == "NoCandidateWithinDrop"
    assert "best drop is 0.02 (onnx-fp16.onnxruntime on cpu)" in optimized["message"]
    assert await api.get(DEPLOYMENTS, namespace, "lossy-triton") is None


async def test_deleting_the_resource_releases_it(
    api: KubeClient, namespace: str, start_operator: StartOperator, settings: HonedSettings
) -> None:
    await start_operator(write_repository)
    await api.create(OPTIMIZED_MODELS, namespace, manifest("gone", model_spec(settings)))
    jobs = await current_jobs(api, namespace, "gone", 2)
    body = await get_om(api, namespace, "gone")
    assert body["metadata"]["finalizers"] == ["honed.dev/finalizer"]
    # Children go with the owner through the garbage collector.
    for job in jobs.values():
        ref = job["metadata"]["ownerReferences"][0]
        assert (ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
            body["metadata"]["uid"],
            True,
            True,
        )
    await api.delete(OPTIMIZED_MODELS, namespace, "gone")

    async def released() -> bool:
        return await api.get(OPTIMIZED_MODELS, namespace, "gone") is None

    await eventually(released, what="the finalizer released and the object gone")

    async def collected() -> bool:
        return [await api.get(JOBS, namespace, job["metadata"]["name"]) for job in jobs.values()] == [None, None]

    await eventually(collected, what="the Jobs garbage-collected after their owner")
