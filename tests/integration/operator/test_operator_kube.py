"""The kube client against kmock: create/get/list/patch/delete semantics the reconcile loop relies on."""

from __future__ import annotations

from pathlib import Path

import kmock
import kopf
import pytest

from honed.api.spec import parse_spec
from honed.artifacts import ArtifactStore
from honed.controller import names
from honed.controller.apply import apply_plan
from honed.controller.kube import CONFIGMAPS, DEPLOYMENTS, EVENTS, OPTIMIZED_MODELS, KubeClient, KubeError
from honed.controller.reconcile import reconcile
from honed.controller.state import JobState, Observed, ReportRead
from honed.errors import HonedError
from honed.settings import HonedSettings, Pool
from tests.fixtures.reports import candidate, report
from tests.integration.operator.harness import NAMESPACE, Cluster, manifest

pytestmark = pytest.mark.slow


def configmap(name: str, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"a": "1"},
    }


async def test_create_conflict_and_delete_not_found_are_success(api: KubeClient) -> None:
    assert await api.create(CONFIGMAPS, NAMESPACE, configmap("one", {})) is True
    assert await api.create(CONFIGMAPS, NAMESPACE, configmap("one", {})) is False  # 409: already there
    assert await api.delete(CONFIGMAPS, NAMESPACE, "one") is True
    assert await api.delete(CONFIGMAPS, NAMESPACE, "one") is False  # 404: already gone
    assert await api.get(CONFIGMAPS, NAMESPACE, "one") is None
    assert await api.patch(CONFIGMAPS, NAMESPACE, "one", {"data": {"a": "2"}}) is None


async def test_list_filters_labels_even_when_the_server_does_not(api: KubeClient) -> None:
    await api.create(CONFIGMAPS, NAMESPACE, configmap("mine", {"honed.dev/optimizedmodel": "a"}))
    await api.create(CONFIGMAPS, NAMESPACE, configmap("theirs", {"honed.dev/optimizedmodel": "b"}))
    found = await api.list(CONFIGMAPS, NAMESPACE, {"honed.dev/optimizedmodel": "a"})
    assert [c["metadata"]["name"] for c in found] == ["mine"]


async def test_merge_patch_and_status_subresource(api: KubeClient) -> None:
    spec = {"model": {"uri": "file:///m.onnx"}, "targets": [{"pool": "cpu"}]}
    await api.create(OPTIMIZED_MODELS, NAMESPACE, manifest("om", spec))
    await api.patch(
        OPTIMIZED_MODELS,
        NAMESPACE,
        "om",
        {"status": {"phase": "Pending", "winner": {"a": 1}}},
        subresource="status",
    )
    await api.patch(OPTIMIZED_MODELS, NAMESPACE, "om", {"status": {"winner": None}}, subresource="status")
    body = await api.get(OPTIMIZED_MODELS, NAMESPACE, "om")
    assert body is not None and body["status"] == {"phase": "Pending"}
    assert body["spec"] == spec


async def test_an_expired_token_logs_in_again(cluster: Cluster) -> None:
    logins: list[int] = []

    def login() -> kopf.ConnectionInfo:
        logins.append(1)
        return kopf.ConnectionInfo(server=str(cluster.url), token=f"token-{len(logins)}")

    client = KubeClient(login)
    cluster["get", kmock.resource("v1/configmaps"), kmock.name("expired")][:1] << 401
    cluster["get", kmock.resource("v1/configmaps"), kmock.name("broken")] << 500
    try:
        assert await client.get(CONFIGMAPS, NAMESPACE, "expired") is None  # 401, login, then 404
        assert len(logins) == 2
        with pytest.raises(KubeError, match="HTTP 500"):
            await client.get(CONFIGMAPS, NAMESPACE, "broken")
    finally:
        await client.close()


async def test_a_failed_repository_write_keeps_the_deployment_and_says_why(api: KubeClient, tmp_path: Path) -> None:

    spec = {"model": {"uri": "file:///m.onnx"}, "targets": [{"pool": "cpu"}]}
    await api.create(OPTIMIZED_MODELS, NAMESPACE, manifest("om", spec))
    body = await api.get(OPTIMIZED_MODELS, NAMESPACE, "om")
    assert body is not None
    settings = HonedSettings(pools=[Pool(name="cpu", image="x")], artifact_store=f"file://{tmp_path}")
    optimization = names.optimization_id(parse_spec(spec), {})
    job = JobState(names.job_name("om", "cpu", optimization), "cpu", optimization, "Succeeded")
    obs = Observed(
        name="om",
        namespace=NAMESPACE,
        uid=body["metadata"]["uid"],
        generation=1,
        annotations={},
        status={},
        settings=settings,
        now="2026-01-01T00:00:00Z",
        jobs={job.name: job},
        reports={"cpu": ReportRead("r", report([candidate("onnx-fp32.onnxruntime", p50=1.0)]))},
    )
    plan = reconcile(spec, obs)
    assert plan.repository is not None and any(m["kind"] == "Deployment" for m in plan.create)

    def full_disk(*_: object) -> None:
        raise HonedError("no space left on device")

    await apply_plan(api, ArtifactStore(settings.artifact_store), plan, obs, full_disk)
    assert await api.get(DEPLOYMENTS, NAMESPACE, "om-triton") is None
    body = await api.get(OPTIMIZED_MODELS, NAMESPACE, "om")
    assert body is not None
    deployed = next(c for c in body["status"]["conditions"] if c["type"] == "Deployed")
    assert deployed["reason"] == "RepositoryWriteFailed" and "no space left" in deployed["message"]
    assert body["status"]["winner"]["version"] == 1  # the selection itself is kept
    events = await api.list(EVENTS, NAMESPACE, {})
    assert any(e["reason"] == "RepositoryWriteFailed" and e["type"] == "Warning" for e in events)
