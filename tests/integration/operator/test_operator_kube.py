"""The kube client against a real API server: the semantics the reconcile loop relies on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes import client as k8s

from honed.api.spec import parse_spec
from honed.artifacts import ArtifactStore
from honed.controller import names
from honed.controller.apply import apply_plan
from honed.controller.kube import CONFIGMAPS, DEPLOYMENTS, EVENTS, JOBS, OPTIMIZED_MODELS, KubeClient, KubeError
from honed.controller.reconcile import reconcile
from honed.controller.reconcile_data import JobState, Observed, ReportRead
from honed.controller.settings import HonedSettings, Pool
from honed.errors import HonedError
from tests.fixtures.k8s import Envtest
from tests.fixtures.reports import candidate, report
from tests.integration.operator.harness import eventually, manifest

pytestmark = pytest.mark.slow
SPEC = {"model": {"uri": "file:///m.onnx"}, "targets": [{"pool": "cpu"}]}


def configmap(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"a": "1"}}


async def test_create_conflict_and_delete_not_found_are_success(api: KubeClient, namespace: str) -> None:
    assert await api.create(CONFIGMAPS, namespace, configmap("one", {})) is True
    assert await api.create(CONFIGMAPS, namespace, configmap("one", {})) is False  # 409: already there
    assert await api.delete(CONFIGMAPS, namespace, "one") is True
    assert await api.delete(CONFIGMAPS, namespace, "one") is False  # 404: already gone
    assert await api.get(CONFIGMAPS, namespace, "one") is None
    assert await api.patch(CONFIGMAPS, namespace, "one", {"data": {"a": "2"}}) is None


async def test_list_selects_labels_on_the_server(api: KubeClient, namespace: str) -> None:
    await api.create(CONFIGMAPS, namespace, configmap("mine", {"honed.dev/optimizedmodel": "a"}))
    await api.create(CONFIGMAPS, namespace, configmap("theirs", {"honed.dev/optimizedmodel": "b"}))
    found = await api.list(CONFIGMAPS, namespace, {"honed.dev/optimizedmodel": "a"})
    assert [c["metadata"]["name"] for c in found] == ["mine"]
    assert {c["metadata"]["name"] for c in await api.list(CONFIGMAPS, namespace, {})} >= {"mine", "theirs"}


async def test_an_invalid_object_is_refused_with_the_servers_reason(api: KubeClient, namespace: str) -> None:
    bad = manifest("bad", {**SPEC, "targets": "cpu"})  # the CRD schema wants a list
    with pytest.raises(KubeError, match=r"spec.targets: Invalid value") as refused:
        await api.create(OPTIMIZED_MODELS, namespace, bad)
    assert refused.value.status == 422


async def test_merge_patch_status_subresource_generation_and_conflicts(
    api: KubeClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    await api.create(OPTIMIZED_MODELS, namespace, manifest("om", SPEC))
    created = await api.get(OPTIMIZED_MODELS, namespace, "om")
    assert created is not None and created["metadata"]["generation"] == 1 and created["metadata"]["uid"]

    # The status subresource ignores spec, and a status change does not bump the generation.
    patched = await api.patch(
        OPTIMIZED_MODELS,
        namespace,
        "om",
        {"spec": {"targets": [{"pool": "gpu"}]}, "status": {"phase": "Pending", "observedGeneration": 1}},
        subresource="status",
    )
    assert patched is not None and patched["status"]["phase"] == "Pending"
    # (the spec as stored: the CRD schema's defaults filled in)
    assert patched["spec"] == created["spec"] and patched["metadata"]["generation"] == 1
    assert patched["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    # null removes a field (merge patch); the schema's defaults fill in the lists.
    await api.patch(OPTIMIZED_MODELS, namespace, "om", {"status": {"observedGeneration": None}}, subresource="status")
    body = await api.get(OPTIMIZED_MODELS, namespace, "om")
    assert body is not None
    assert body["status"] == {"phase": "Pending", "conditions": [], "pools": [], "candidates": []}

    # The main resource ignores status; a spec change bumps the generation.
    changed = {**SPEC, "targets": [{"pool": "gpu"}]}
    body = await api.patch(OPTIMIZED_MODELS, namespace, "om", {"spec": changed, "status": {"phase": "Failed"}})
    assert body is not None and body["spec"]["targets"] == [{"pool": "gpu"}] and body["metadata"]["generation"] == 2
    assert body["status"]["phase"] == "Pending"

    # A patch made against a stale resourceVersion conflicts: logged and left to the next pass.
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "status": {"phase": "Failed"}}
    with caplog.at_level(logging.WARNING, logger="honed.controller.kube"):
        assert await api.patch(OPTIMIZED_MODELS, namespace, "om", stale, subresource="status") is None
    assert "HTTP 409" in caplog.text and "the next pass" in caplog.text
    body = await api.get(OPTIMIZED_MODELS, namespace, "om")
    assert body is not None and body["status"]["phase"] == "Pending"


async def test_an_expired_token_logs_in_again(envtest: Envtest, namespace: str) -> None:
    real = envtest.api.client.configuration
    logins: list[kopf.ConnectionInfo] = []

    def login() -> kopf.ConnectionInfo:
        # First a token the API server does not know (as an expired one), then the real client cert.
        if not logins:
            info = kopf.ConnectionInfo(server=real.host, ca_path=real.ssl_ca_cert, token="expired")
        else:
            info = kopf.ConnectionInfo(
                server=real.host,
                ca_path=real.ssl_ca_cert,
                certificate_path=real.cert_file,
                private_key_path=real.key_file,
            )
        logins.append(info)
        return info

    client = KubeClient(login)
    try:
        assert await client.get(CONFIGMAPS, namespace, "absent") is None  # 401, login, then 404
        assert len(logins) == 2
        assert await client.create(CONFIGMAPS, namespace, configmap("after", {})) is True
        assert len(logins) == 2
    finally:
        await client.close()


async def test_forbidden_names_the_verb_and_resource(
    envtest: Envtest, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ServiceAccount without a role: RBAC refuses, and the log says what to grant."""
    core = k8s.CoreV1Api(envtest.api.client)
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="bare")))
    token = core.create_namespaced_service_account_token(
        "bare", namespace, k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[]))
    ).status.token
    real = envtest.api.client.configuration
    client = KubeClient(lambda: kopf.ConnectionInfo(server=real.host, ca_path=real.ssl_ca_cert, token=token))
    try:
        with caplog.at_level(logging.ERROR, logger="honed.controller.kube"), pytest.raises(KubeError) as refused:
            await client.list(JOBS, namespace, {names.MANAGED_BY: "honed"})
        assert refused.value.status == 403
        assert f"may not list /apis/batch/v1/namespaces/{namespace}/jobs" in caplog.text
        assert f'system:serviceaccount:{namespace}:bare" cannot list resource "jobs"' in caplog.text
        assert "RBAC role" in caplog.text

        # Granted, the same token lists (the refusal was RBAC's, not the login's).
        rbac = k8s.RbacAuthorizationV1Api(envtest.api.client)
        rule = k8s.V1PolicyRule(api_groups=["batch"], resources=["jobs"], verbs=["list"])
        rbac.create_namespaced_role(namespace, k8s.V1Role(metadata=k8s.V1ObjectMeta(name="jobs"), rules=[rule]))
        subject = k8s.RbacV1Subject(kind="ServiceAccount", name="bare", namespace=namespace)
        binding = k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="jobs"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="jobs"),
            subjects=[subject],
        )
        rbac.create_namespaced_role_binding(namespace, binding)

        async def allowed() -> bool:
            try:
                return await client.list(JOBS, namespace, {}) == []
            except KubeError as exc:
                assert exc.status == 403
                return False

        assert await eventually(allowed, what="the RoleBinding to take effect")
    finally:
        await client.close()


async def test_a_failed_repository_write_keeps_the_deployment_and_says_why(
    api: KubeClient, namespace: str, tmp_path: Path
) -> None:
    await api.create(OPTIMIZED_MODELS, namespace, manifest("om", SPEC))
    body = await api.get(OPTIMIZED_MODELS, namespace, "om")
    assert body is not None
    settings = HonedSettings(pools=[Pool(name="cpu", image="x")], artifact_store=f"file://{tmp_path}")
    optimization = names.optimization_id(parse_spec(SPEC), {})
    job = JobState(names.job_name("om", "cpu", optimization), "cpu", optimization, "Succeeded")
    obs = Observed(
        name="om",
        namespace=namespace,
        uid=body["metadata"]["uid"],
        generation=1,
        annotations={},
        status={},
        settings=settings,
        now="2026-01-01T00:00:00Z",
        jobs={job.name: job},
        reports={"cpu": ReportRead("r", report([candidate("onnx-fp32.onnxruntime", p50=1.0)]))},
    )
    plan = reconcile(SPEC, obs)
    assert plan.repository is not None and any(m["kind"] == "Deployment" for m in plan.create)

    def full_disk(*_: object) -> None:
        raise HonedError("no space left on device")

    await apply_plan(api, ArtifactStore(settings.artifact_store), plan, obs, full_disk)
    assert await api.get(DEPLOYMENTS, namespace, "om-triton") is None
    body = await api.get(OPTIMIZED_MODELS, namespace, "om")
    assert body is not None
    deployed = next(c for c in body["status"]["conditions"] if c["type"] == "Deployed")
    assert deployed["reason"] == "RepositoryWriteFailed" and "no space left" in deployed["message"]
    assert body["status"]["winner"]["version"] == 1  # the selection itself is kept
    events = await api.list(EVENTS, namespace, {})
    assert any(e["reason"] == "RepositoryWriteFailed" and e["type"] == "Warning" for e in events)
