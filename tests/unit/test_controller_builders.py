"""Pure builders: names, the optimizer request/Job, and the Triton Deployment/Service."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from honed.api.spec import parse_spec
from honed.controller import names
from honed.controller.jobs import Owner, build_request, job_limits, optimizer_job, request_configmap
from honed.controller.settings import HonedSettings, Pool
from honed.controller.triton_manifests import endpoint, repository_uri, triton_deployment, triton_service

OWNER = Owner(name="resnet50", namespace="vision", uid="8d1f-uid")
CPU = Pool(
    name="cpu",
    image="honed/optimizer-cpu:0.1",
    node_selector={"pool": "cpu"},
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    resources={"limits": {"cpu": "8"}},
)
GPU = Pool(name="gpu", image="honed/optimizer-gpu:0.1", device="cuda", resources={"limits": {"nvidia.com/gpu": 1}})
SETTINGS = HonedSettings(
    pools=[CPU, GPU],
    artifact_store="s3://honed/store",
    artifact_secret="honed-store",
    optimizer_service_account="honed-optimizer",
)
SPEC = parse_spec(
    {
        "model": {
            "uri": "pvc://models/resnet50/model.onnx",
            "credentialsSecret": "models-s3",
            "inputs": [{"name": "input", "shape": [-1, 3, 224, 224]}],
        },
        "validation": {"dataUri": "s3://data/val.npz", "metric": "top1"},
        "search": {"objective": "cost", "batchSizes": [1, 8, 32], "timeBudget": "20m"},
        "targets": [{"pool": "cpu"}, {"pool": "gpu"}],
    }
)


def test_names_are_deterministic_bounded_and_distinct() -> None:
    optimization = names.optimization_id(SPEC, {})
    assert optimization == names.optimization_id(parse_spec(SPEC.to_wire()), {})
    assert names.job_name("resnet50", "cpu", optimization) != names.job_name("resnet50", "gpu", optimization)
    long = names.job_name("a" * 80, "cpu", optimization)
    assert len(long) <= 63 and long == names.job_name("a" * 80, "cpu", optimization)
    assert long != names.job_name("a" * 79 + "b", "cpu", optimization)
    assert len(names.owner_labels("x" * 100)[names.OWNER]) <= 63


def test_optimization_id_ignores_serving_and_follows_the_search_and_reoptimize_annotation() -> None:
    base = names.optimization_id(SPEC, {})
    serving = parse_spec({**SPEC.to_wire(), "serving": {"replicas": 3}})
    assert names.optimization_id(serving, {}) == base
    search = parse_spec({**SPEC.to_wire(), "search": {"objective": "latency"}})
    assert names.optimization_id(search, {}) != base
    assert names.optimization_id(SPEC, {names.REOPTIMIZE: "SLOViolation:17"}) != base
    assert names.reoptimize_reason({names.REOPTIMIZE: "SLOViolation:17"}) == "SLOViolation"
    assert names.reoptimize_reason({names.REOPTIMIZE: "please"}) == "Requested"


def test_request_carries_the_spec_and_the_pool() -> None:
    request = build_request(SPEC, GPU, SETTINGS)
    assert request.model.uri == "file:///mnt/honed/models/resnet50/model.onnx"  # pvc:// is mounted
    assert request.model.inputs[0].shape == [-1, 3, 224, 224]
    assert request.data_uri == "s3://data/val.npz"
    assert request.device == "cuda" and request.pool == "gpu"
    assert request.objective == "throughput"  # cost ranks like throughput inside one pool
    assert request.batch_sizes == [1, 8, 32] and request.time_budget_s == 1200


def test_job_limits_scale_with_the_budget() -> None:
    assert job_limits(1200) == (1, 2 * (1200 + 300))
    assert job_limits(7200) == (0, 7200 + 1800)


def test_optimizer_job() -> None:
    optimization = names.optimization_id(SPEC, {})
    run = names.run_id(optimization, "2026-01-01T00:00:00Z")
    job = optimizer_job(OWNER, SPEC, CPU, SETTINGS, optimization, run)
    kubernetes_validate.validate(job, "1.33.0", strict=True)
    meta = job["metadata"]
    assert meta["name"] == names.job_name("resnet50", "cpu", optimization)
    assert meta["ownerReferences"][0] == {
        "apiVersion": "honed.dev/v1alpha1",
        "kind": "OptimizedModel",
        "name": "resnet50",
        "uid": "8d1f-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert meta["labels"][names.OPTIMIZATION] == optimization and meta["labels"][names.POOL] == "cpu"
    assert meta["annotations"] == {names.RUN: run} and run == f"{optimization}-20260101000000"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == job_limits(1200)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "honed-optimizer"
    assert pod["nodeSelector"] == {"pool": "cpu"} and pod["tolerations"][0]["key"] == "dedicated"
    container = pod["containers"][0]
    # The name follows the optimization, the output its run: a re-applied spec writes elsewhere.
    out = f"s3://honed/store/vision/resnet50/optimizations/{run}/cpu"
    assert container["command"] == ["honed", "optimize", "--request", "/work/request.json", "--out", out]
    assert container["resources"] == {"limits": {"cpu": "8"}}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["envFrom"] == [
        {"secretRef": {"name": "honed-store"}},
        {"secretRef": {"name": "models-s3"}},
    ]
    claims = {v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims["models"]["persistentVolumeClaim"]["readOnly"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/work/request.json", "/mnt/honed/models"} <= mounts
    rules = spec["podFailurePolicy"]["rules"]
    # No winner, bad input, the budget gone before the original ran: a retry repeats each.
    assert rules[0]["onExitCodes"]["values"] == [1, 2, 4]


def test_request_configmap_holds_the_request() -> None:
    request = build_request(SPEC, CPU, SETTINGS)
    cm = request_configmap(OWNER, "job-x", "cpu", "abc", request)
    kubernetes_validate.validate(cm, "1.33.0", strict=True)
    assert cm["data"]["request.json"].strip() == request.to_json()


def test_pvc_store_is_mounted_writable_and_passed_as_a_path() -> None:
    settings = SETTINGS.model_copy(update={"artifact_store": "pvc://honed-store/root"})
    job = optimizer_job(OWNER, SPEC, CPU, settings, "abcdef0123", "abcdef0123-20260101000000")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1].startswith("file:///mnt/honed/honed-store/root/vision/resnet50/")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["pvc-honed-store"]["persistentVolumeClaim"]["readOnly"] is False
    assert repository_uri(settings, "vision", "resnet50") == "/mnt/honed/honed-store/root/vision/resnet50/repository"


@pytest.mark.parametrize("cache", [True, False])
def test_triton_deployment(cache: bool) -> None:
    serving = SPEC.serving.model_copy(update={"response_cache": cache, "replicas": 2})
    deployment = triton_deployment(OWNER, serving, GPU, SETTINGS, version=3)
    kubernetes_validate.validate(deployment, "1.33.0", strict=True)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    template = spec["template"]
    assert template["metadata"]["annotations"][names.MODEL_VERSION] == "3"
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    container = template["spec"]["containers"][0]
    args = container["args"]
    assert "--model-control-mode=explicit" in args and "--load-model=resnet50" in args
    assert "--model-repository=s3://honed/store/vision/resnet50/repository" in args
    # The pod loads the version its template serves, with that version's own config.
    assert "--model-config-name=version-3" in args
    assert any(a.startswith("--cache-config=local,size=") for a in args) == cache
    assert "--allow-gpu-metrics=true" in args
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0  # endpoints drop it before it stops
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001, 8002}
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}


def test_triton_service_and_endpoint() -> None:
    service = triton_service(OWNER)
    kubernetes_validate.validate(service, "1.33.0", strict=True)
    deployment = triton_deployment(OWNER, SPEC.serving, CPU, SETTINGS, version=1)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    point = endpoint(OWNER, 1)
    assert point.http == "http://resnet50-triton.vision.svc:8000" and point.grpc == "resnet50-triton.vision.svc:8001"


# The checks of the `restricted` Pod Security Standard (kubernetes.io/docs/concepts/security/
# pod-security-standards), as the API server's admission applies them to a pod template.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    found = []
    pod_context = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(key)
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    for container in pod["containers"] + (pod.get("initContainers") or []):
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities not dropped")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{name}: hostPort")
    return found


def test_the_restricted_check_can_fail() -> None:
    assert restricted_violations({"containers": [{"name": "c"}]}) == [
        "c: allowPrivilegeEscalation is not false",
        "c: runAsNonRoot is not true",
        "c: seccompProfile None",
        "c: capabilities not dropped",
    ]


@pytest.mark.parametrize("uid", [10001, None])
def test_pods_pass_the_restricted_pod_security_standard(uid: int | None) -> None:
    settings = SETTINGS.model_copy(update={"pod_uid": uid, "artifact_store": "pvc://honed-store/root"})
    job = optimizer_job(OWNER, SPEC, CPU, settings, "abcdef0123", "abcdef0123-20260101000000")
    deployment = triton_deployment(OWNER, SPEC.serving, CPU, settings, version=1)
    for pod in (job["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]):
        assert restricted_violations(pod) == []
        # Neither the engine nor Triton calls the API: no token to steal.
        assert pod["automountServiceAccountToken"] is False
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # With a read-only root, HOME and /tmp are the scratch emptyDir.
        assert {"name": "HOME", "value": "/tmp"} in container["env"]
        scratch = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert {"name": scratch, "emptyDir": {}} in pod["volumes"]
        context = pod["securityContext"]
        if uid is None:
            assert "runAsUser" not in context and "fsGroup" not in context  # the image's USER decides
        else:
            assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, uid, uid)


def test_pod_uid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HonedSettings().pod_uid == 10001
    monkeypatch.setenv("HONED_POD_UID", "1000")
    assert HonedSettings().pod_uid == 1000
    monkeypatch.setenv("HONED_POD_UID", "")
    assert HonedSettings().pod_uid is None
    monkeypatch.setenv("HONED_POD_UID", "0")
    with pytest.raises(ValueError, match="pod_uid"):
        HonedSettings()
