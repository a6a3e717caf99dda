"""Reading the cluster's and the store's state: Job phases, pod messages, rollouts, reports, model URIs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp import web

from honed.artifacts import ArtifactStore
from honed.controller import operator_metrics
from honed.controller.cache import Cache, owner_name
from honed.controller.cli import run_operator, watch_scope
from honed.controller.kube import EVENTS, PODS, KubeClient, Resource
from honed.controller.observe import (
    check_model_uri,
    deployment_state,
    failed_create,
    job_phase,
    job_pods_problem,
    job_state,
    pod_message,
    pod_problem,
    read_report,
    server_pod_state,
    serves_or_will,
)
from honed.controller.reconcile_data import Plan, PodProblem, PodState
from honed.controller.settings import HonedSettings
from honed.errors import InputError
from tests.fixtures.reports import candidate, report

SETTINGS = HonedSettings()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, ("Pending", "")),
        ({"active": 1}, ("Running", "")),
        ({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, ("Succeeded", "")),
        (
            {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "late"}]},
            ("Failed", "DeadlineExceeded: late"),
        ),
        ({"active": 1, "conditions": [{"type": "Failed", "status": "False"}]}, ("Running", "")),
    ],
)
def test_job_phase(status: dict[str, Any], expected: tuple[str, str]) -> None:
    assert job_phase({"status": status}) == expected


def test_pod_message_takes_the_newest_pods_termination_message() -> None:
    def pod(created: str, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "metadata": {"creationTimestamp": created},
            "status": {"containerStatuses": [{"state": state}]},
        }

    pods = [
        pod("2026-01-01T00:00:00Z", {"terminated": {"message": "first try: OOM", "exitCode": 137}}),
        pod("2026-01-01T00:05:00Z", {"terminated": {"message": "input x has no shape\n", "exitCode": 2}}),
    ]
    assert pod_message(pods) == "input x has no shape"
    assert pod_message([pod("t", {"terminated": {"reason": "OOMKilled", "exitCode": 137}})]) == (
        "OOMKilled (exit code 137)"
    )
    assert pod_message([]) == ""


def test_deployment_state_reads_the_pod_template() -> None:
    base = {
        "metadata": {"generation": 3, "annotations": {"honed.dev/model-version": "1"}},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {
                    "labels": {"honed.dev/pool": "cpu"},
                    "annotations": {"honed.dev/model-version": "2", "honed.dev/serving-config": "abc"},
                },
                "spec": {"nodeSelector": {"pool": "cpu"}},
            },
        },
    }
    stale = deployment_state({**base, "status": {"observedGeneration": 2}})
    assert not stale.rolled_out and stale.node_selector == {"pool": "cpu"}
    assert (stale.version, stale.serving_config, stale.pool, stale.replicas) == (2, "abc", "cpu", 2)
    assert deployment_state({**base, "status": {"observedGeneration": 3}}).rolled_out
    assert not deployment_state({**base, "status": {}}).rolled_out
    progressing = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"}
    refused = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": 'pods "x-1" is forbidden: violates PodSecurity "restricted:latest"',
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    stalled = deployment_state({**base, "status": {"observedGeneration": 3, "conditions": [progressing, refused]}})
    assert stalled.stalled == "slow"
    assert stalled.problem == PodProblem("FailedCreate", refused["message"], "2026-01-01T00:00:00Z")


CREATED = "2026-01-01T00:00:00Z"


def pod_with(status: dict[str, Any], phase: str = "Pending", created: str = CREATED, **meta: object) -> dict[str, Any]:
    return {"metadata": {"name": "p", "creationTimestamp": created, **meta}, "status": {"phase": phase, **status}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {
        "containerStatuses": [
            {"name": "triton", "image": "img:1", "state": {"waiting": {"reason": reason, "message": message}}}
        ]
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, None),
        (
            {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient cpu.",
                        "lastTransitionTime": "2026-01-01T00:00:05Z",
                    }
                ]
            },
            PodProblem("Unschedulable", "0/1 nodes are available: 1 Insufficient cpu.", "2026-01-01T00:00:05Z"),
        ),
        (
            waiting("ErrImageNeverPull", 'Container image "honed/x:1" is not present with pull policy of Never'),
            PodProblem(
                "ImageUnavailable",
                'ErrImageNeverPull: Container image "honed/x:1" is not present with pull policy of Never',
                CREATED,
            ),
        ),
        (waiting("ImagePullBackOff"), PodProblem("ImageUnavailable", "ImagePullBackOff: image img:1", CREATED)),
        (
            waiting("CreateContainerConfigError", 'secret "models-s3" not found'),
            PodProblem("ContainerConfigError", 'CreateContainerConfigError: secret "models-s3" not found', CREATED),
        ),
        (waiting("ContainerCreating"), None),
    ],
)
def test_pod_problem(status: dict[str, Any], expected: PodProblem | None) -> None:
    assert pod_problem(pod_with(status)) == expected


def test_crash_loops_and_oom_kills_name_the_last_exit() -> None:
    container = {
        "name": "triton",
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
        "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "message": "failed to load 'mlp'\n"}},
    }
    problem = pod_problem(pod_with({"containerStatuses": [container]}, phase="Running"))
    assert problem == PodProblem(
        "CrashLoopBackOff",
        "container triton restarted 4 times; last exit: Error (exit code 1) failed to load 'mlp'",
        CREATED,
    )
    oom = {**container, "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    assert pod_problem(pod_with({"containerStatuses": [oom]}, phase="Running")) == PodProblem(
        "OOMKilled", "container triton restarted 4 times; last exit: OOMKilled (exit code 137)", CREATED
    )


def test_job_pods_problem_prefers_the_live_attempt() -> None:
    oom = {
        "containerStatuses": [{"name": "optimizer", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]
    }
    first = pod_with(oom, phase="Failed", created="2026-01-01T00:00:00Z")
    retry = pod_with(waiting("ImagePullBackOff"), created="2026-01-01T00:01:00Z")
    assert job_pods_problem([first, retry]) == PodProblem(
        "ImageUnavailable", "ImagePullBackOff: image img:1", "2026-01-01T00:01:00Z"
    )
    running = pod_with({}, phase="Running", created="2026-01-01T00:01:00Z")
    earlier = job_pods_problem([first, running])
    assert earlier is not None and earlier.reason == "OOMKilled"
    assert earlier.message.startswith("an earlier attempt ended: container optimizer ran out of memory")
    assert job_pods_problem([running]) is None


def test_failed_create_takes_the_newest_event() -> None:
    events = [
        {"reason": "FailedCreate", "message": "old", "lastTimestamp": "2026-01-01T00:00:01Z"},
        {
            "reason": "FailedCreate",
            "message": 'pods "j-x" is forbidden: violates PodSecurity',
            "lastTimestamp": "2026-01-01T00:00:09Z",
        },
        {"reason": "SuccessfulCreate", "message": "later", "lastTimestamp": "2026-01-01T00:00:10Z"},
    ]
    assert failed_create(events, CREATED) == PodProblem(
        "FailedCreate", 'pods "j-x" is forbidden: violates PodSecurity', CREATED
    )
    assert failed_create([], CREATED) is None


def test_server_pod_state() -> None:
    ready = pod_with(
        {"conditions": [{"type": "Ready", "status": "True"}]},
        phase="Running",
        annotations={"honed.dev/model-version": "3", "honed.dev/serving-config": "abc"},
    )
    assert server_pod_state(ready) == PodState("p", 3, "abc", ready=True)
    pulling = server_pod_state(pod_with(waiting("ErrImagePull", "not found")))
    assert not pulling.ready and pulling.version is None
    assert pulling.problem == PodProblem("ImageUnavailable", "ErrImagePull: not found", CREATED)
    assert pulling.note == ""  # the problem says it


def test_a_not_ready_server_pod_says_it_restarted_or_what_it_waits_for() -> None:
    killed = {
        "name": "triton",
        "restartCount": 1,
        "state": {"running": {}},
        "lastState": {"terminated": {"reason": "Error", "exitCode": 137}},
    }
    assert server_pod_state(pod_with({"containerStatuses": [killed]}, phase="Running")).note == (
        "container triton restarted 1 time, last exit Error (exit code 137)"
    )
    creating = {"name": "triton", "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
    assert server_pod_state(pod_with({"containerStatuses": [creating]})).note == "container triton ContainerCreating"
    assert server_pod_state(pod_with({}, phase="Running")).note == "phase Running, not ready yet"


def test_a_server_pod_on_a_node_that_stopped_reporting_names_the_node() -> None:
    # As measured with the kubelet killed: the node lifecycle controller sets Ready False (no
    # reason), ContainersReady stays True, the container still says ready and running.
    conditions = [
        {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:01:00Z"},
        {"type": "ContainersReady", "status": "True"},
    ]
    running = {"name": "triton", "ready": True, "restartCount": 0, "state": {"running": {}}}
    pod = pod_with({"conditions": conditions, "containerStatuses": [running]}, phase="Running")
    pod["spec"] = {"nodeName": "n1"}
    state = server_pod_state(pod)
    assert not state.ready and state.problem is None
    assert state.note.startswith("node n1 stopped reporting since 2026-01-01T00:01:00Z (NotReady: ")
    # A readiness gate holds Ready with its own reason: no node's fault either.
    conditions[0]["reason"] = "ReadinessGatesNotReady"
    assert "stopped reporting" not in server_pod_state(pod).note
    del conditions[0]["reason"]
    # A container that is not ready (Triton loading, a failed probe) is no node's fault.
    conditions[1]["status"] = "False"
    assert server_pod_state(pod).note == "phase Running, not ready yet"


def test_read_report_names_what_is_wrong(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}")
    assert read_report(store, "none/report.json").error == f"nothing at file://{tmp_path}/none/report.json"
    store.write_text("bad/report.json", '{"schema": "honed.report/v1"}')
    assert "is not a honed report" in str(read_report(store, "bad/report.json").error)
    report([candidate("onnx-fp32.onnxruntime", p50=1.0)]).write(tmp_path)
    good = read_report(store, "report.json")
    assert good.report is not None and good.report.winner == "onnx-fp32.onnxruntime"


async def test_model_uri_checks(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    assert await check_model_uri(f"file://{model}", SETTINGS) is None
    assert await check_model_uri(f"file://{tmp_path}/other.onnx", SETTINGS) == f"no file at {tmp_path}/other.onnx"
    # pvc:// is checked only where the claim is mounted
    assert await check_model_uri("pvc://models/m.onnx", SETTINGS.model_copy(update={"pvc_mount_root": "/nope"})) is None
    (tmp_path / "models").mkdir()
    mounted = SETTINGS.model_copy(update={"pvc_mount_root": str(tmp_path)})
    assert await check_model_uri("pvc://models/m.onnx", mounted) == "no file m.onnx in claim models"
    # s3:// needs the model's credentials, which only the Job has
    assert await check_model_uri("s3://bucket/m.onnx", SETTINGS) is None

    async def serve_model(request: web.Request) -> web.Response:
        return web.Response(body=b"onnx")

    app = web.Application()
    app.router.add_get("/model.onnx", serve_model)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        assert await check_model_uri(f"http://127.0.0.1:{port}/model.onnx", SETTINGS) is None
        assert await check_model_uri(f"http://127.0.0.1:{port}/gone.onnx", SETTINGS) == (
            f"HTTP 404 from http://127.0.0.1:{port}/gone.onnx"
        )
    finally:
        await runner.cleanup()
    error = await check_model_uri(f"http://127.0.0.1:{port}/model.onnx", SETTINGS, timeout_s=2)
    assert error is not None and error.startswith("cannot reach")


def test_owner_name_from_the_controller_reference() -> None:
    ref = {"apiVersion": "honed.dev/v1alpha1", "kind": "OptimizedModel", "name": "resnet50"}
    assert owner_name({"metadata": {"ownerReferences": [ref]}}) == "resnet50"
    assert owner_name({"metadata": {"ownerReferences": [{**ref, "kind": "ReplicaSet"}]}}) is None
    assert owner_name({"metadata": {}}) is None


def test_watch_scope() -> None:
    settings = HonedSettings(watch_namespaces=["vision", "nlp"])
    assert watch_scope(argparse.Namespace(all_namespaces=False, namespace=None), settings) == (
        False,
        ["vision", "nlp"],
    )
    assert watch_scope(argparse.Namespace(all_namespaces=False, namespace=["a"]), settings) == (False, ["a"])
    assert watch_scope(argparse.Namespace(all_namespaces=True, namespace=None), settings) == (True, [])
    assert watch_scope(argparse.Namespace(all_namespaces=False, namespace=None), HonedSettings()) == (
        True,
        [],
    )


def test_operator_refuses_to_start_without_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HONED_POOLS", raising=False)
    with pytest.raises(InputError, match="HONED_POOLS lists no node pools"):
        run_operator(argparse.Namespace(all_namespaces=False, namespace=None))


def test_metrics_follow_the_plan() -> None:
    def value(name: str, labels: dict[str, str]) -> float:
        return operator_metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("honed_optimizations_total", {"outcome": "failed"})
    jobs_before = value("honed_optimizer_jobs_created_total", {"pool": "gpu"})
    plan = Plan(
        create=[{"kind": "Job", "metadata": {"labels": {"honed.dev/pool": "gpu"}}}],
        optimization_outcome="failed",
        optimization_seconds=42.0,
    )
    operator_metrics.record_plan(plan, "ml", "x")
    assert value("honed_optimizations_total", {"outcome": "failed"}) == before + 1
    assert value("honed_optimizer_jobs_created_total", {"pool": "gpu"}) == jobs_before + 1
    operator_metrics.record_plan(Plan(winner_speedup=6.1), "ml", "x")
    assert value("honed_winner_speedup", {"namespace": "ml", "name": "x"}) == 6.1


def cached(*objects: tuple[Resource, dict[str, Any]]) -> Cache:
    """A watch cache holding ``objects``, as its watches would have filled it (nothing is started)."""
    cache = Cache(KubeClient(lambda: kopf.ConnectionInfo(server="https://unused")), None, watch_timeout_s=60)
    for resource, obj in objects:
        cache.remember(resource, {**obj, "metadata": {"namespace": "ml", **obj["metadata"]}})
    return cache


def with_pods(*pods: dict[str, Any]) -> Cache:
    return cached(*((PODS, pod) for pod in pods))


def job_manifest(**meta: object) -> dict[str, Any]:
    labels = {"honed.dev/pool": "cpu", "honed.dev/optimization": "abc"}
    return {"metadata": {"name": "m-opt-cpu-abc", "creationTimestamp": CREATED, "labels": labels, **meta}, "status": {}}


def test_a_job_without_a_pod_is_explained_by_its_failed_create_event() -> None:
    refused: dict[str, Any] = {
        "metadata": {"name": "m-opt-cpu-abc.1", "namespace": "ml", "resourceVersion": "7"},
        "reason": "FailedCreate",
        "involvedObject": {"kind": "Job", "name": "m-opt-cpu-abc"},
        "message": 'Error creating: pods "m-opt-cpu-abc-x" is forbidden: violates PodSecurity "restricted:latest"',
    }
    other = {**refused, "metadata": {"name": "other.1", "namespace": "ml"}, "involvedObject": {"name": "other"}}
    state = job_state(
        cached((EVENTS, refused), (EVENTS, other)), "ml", job_manifest(), labels={}, decided=False, current="abc"
    )
    assert state.problem == PodProblem("FailedCreate", refused["message"], CREATED)
    assert (
        job_state(cached((EVENTS, other)), "ml", job_manifest(), labels={}, decided=False, current="abc").problem
        is None
    )


def test_a_job_the_operator_gave_up_on_stays_failed() -> None:
    annotations = {"honed.dev/failed": "Unschedulable: 0/1 nodes are available (waited 10 min)"}
    state = job_state(cached(), "ml", job_manifest(annotations=annotations), labels={}, decided=False, current="abc")
    assert (state.phase, state.reason) == ("Failed", "Unschedulable") and state.message == annotations[
        "honed.dev/failed"
    ]


def test_a_running_jobs_pods_are_asked_why() -> None:
    pod = pod_with(
        waiting("CreateContainerConfigError", 'secret "models-s3" not found'), labels={"job-name": "m-opt-cpu-abc"}
    )
    state = job_state(
        with_pods(pod), "ml", {**job_manifest(), "status": {"active": 1}}, labels={}, decided=False, current="abc"
    )
    assert state.phase == "Running" and state.problem is not None and state.problem.reason == "ContainerConfigError"
    recorded = job_manifest(annotations={"honed.dev/run": "abc-20260101000000"})
    assert job_state(cached(), "ml", recorded, labels={}, decided=True, current="abc").run == "abc-20260101000000"
    # An older spec's Job is about to go: nobody asks.
    other = job_state(with_pods(pod), "ml", job_manifest(), labels={}, decided=False, current="new")
    assert other.problem is None


def test_evicted_and_terminating_pods_do_not_count_for_a_rollout() -> None:
    assert serves_or_will(pod_with({}, phase="Running"))
    assert serves_or_will(pod_with({}, phase="Pending"))
    assert not serves_or_will(pod_with({"reason": "Evicted"}, phase="Failed"))
    assert not serves_or_will(pod_with({}, phase="Running", deletionTimestamp="2026-01-01T00:01:00Z"))


def failed_job(reason: str, message: str) -> dict[str, Any]:
    condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
    return {**job_manifest(), "status": {"failed": 1, "conditions": [condition]}}


def finished_pod(exit_code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "reason": reason, "message": message}
    status = {"phase": "Failed", "containerStatuses": [{"name": "optimizer", "state": {"terminated": terminated}}]}
    return {"metadata": {"name": "p", "labels": {"job-name": "m-opt-cpu-abc"}}, "status": status}


@pytest.mark.parametrize(
    ("job", "pods", "reason"),
    [
        # Seen on a real cluster (make e2e-faults): a Job whose activeDeadlineSeconds ran out ended
        # in AllPoolsFailed, not in a reason that says to raise spec.search.timeBudget.
        (failed_job("DeadlineExceeded", "Job was active longer than specified deadline"), [], "DeadlineExceeded"),
        # The engine refused the data (exit 2, podFailurePolicy FailJob): the input is what to fix.
        (
            failed_job("PodFailurePolicy", "Container optimizer for pod models/p failed with exit code 2"),
            [finished_pod(2, message="validation.dataUri: input 'input' has shape (4, 3, 8, 8)")],
            "InvalidInput",
        ),
        (
            failed_job("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            [finished_pod(137, "OOMKilled")],
            "OOMKilled",
        ),
        (failed_job("BackoffLimitExceeded", "Job has reached the specified backoff limit"), [finished_pod(3)], None),
        (failed_job("PodFailurePolicy", "Container optimizer exited with 4"), [finished_pod(4)], "TimeBudgetExhausted"),
    ],
)
def test_a_failed_job_names_why(job: dict[str, Any], pods: list[dict[str, Any]], reason: str | None) -> None:
    state = job_state(with_pods(*pods), "ml", job, labels={}, decided=False, current="abc")
    assert (state.phase, state.reason) == ("Failed", reason)
