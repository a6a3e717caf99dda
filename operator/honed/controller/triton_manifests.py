"""Pure builders of the Triton Deployment and Service that serve the winner."""

from __future__ import annotations

from typing import Any

from honed.api.spec import Serving
from honed.api.status import Endpoint
from honed.artifacts import join_uri
from honed.controller import names
from honed.controller.jobs import (
    SCRATCH,
    Owner,
    container_security,
    mounted_uri,
    pod_security,
    pool_scheduling,
    pvc_volumes,
    secret_env,
)
from honed.controller.settings import HonedSettings, Pool
from honed.serving.repository import version_config_name

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
CONTAINER = "triton"
PRESTOP_SECONDS = 5


def repository_uri(settings: HonedSettings, namespace: str, owner: str) -> str:
    """The model repository as Triton opens it: s3:// natively, pvc:// and file:// as a local path."""
    uri = mounted_uri(join_uri(settings.artifact_store, names.repository_key(namespace, owner)), settings)
    return uri.removeprefix("file://")


def serving_config_hash(serving: Serving) -> str:
    """What the pods read at start (config.pbtxt choices, server flags): a change rolls them.

    The replica count is left out: scaling adds or removes pods, it must not restart them.
    """
    return names.short_hash(serving.model_dump(mode="json", exclude={"replicas"}))


def runs_serving_config(recorded: str | None, serving: Serving, replicas: int) -> bool:
    """Whether pods whose template records ``recorded`` run ``serving``.

    Earlier operators hashed the replica count in too; their pods run the same config, and an
    operator upgrade must not restart every served model to rewrite an annotation.
    """
    legacy = names.short_hash(serving.model_copy(update={"replicas": replicas}).model_dump(mode="json"))
    return recorded in (serving_config_hash(serving), legacy)


def triton_args(model: str, repository: str, serving: Serving, device: str, version: int) -> list[str]:
    """The tritonserver command line: only ``model``, pinned to ``version``'s config, metrics on."""
    args = [
        "tritonserver",
        f"--model-repository={repository}",
        # Pinned to the version this pod template serves, with that version's own config: a pod of
        # the serving version that restarts while a newer (maybe broken) version is being written
        # or rolled out still loads its own version (config.pbtxt follows the newest written one).
        f"--model-config-name={version_config_name(version)}",
        # Explicit control: only this model loads, and a version that fails to load never
        # replaces a serving one; the rollout keeps old pods until new ones are ready.
        "--model-control-mode=explicit",
        f"--load-model={model}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if device == 'cuda' else 'false'}",
        "--metrics-config=summary_latencies=true",
    ]
    if serving.response_cache:
        args.append(f"--cache-config=local,size={serving.cache_size_mib * 1024 * 1024}")
    return args


def triton_deployment(
    owner: Owner,
    serving: Serving,
    pool: Pool,
    settings: HonedSettings,
    version: int,
) -> dict[str, Any]:
    """The Triton Deployment serving ``version`` on ``pool``.

    Its rolling update keeps old pods until new ones are ready; its pod template records the version
    and the serving config hash, which ``observe`` reads back.
    """
    name = names.server_name(owner.name)
    model = names.triton_model_name(owner.name)
    repository = repository_uri(settings, owner.namespace, owner.name)
    selector = {**names.owner_labels(owner.name), names.COMPONENT: "server"}
    pod_annotations = {
        names.MODEL_VERSION: str(version),
        names.SERVING_CONFIG: serving_config_hash(serving),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    volumes, mounts = pvc_volumes([settings.artifact_store], settings, writable=set())
    http_probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.triton_image,
        "args": triton_args(model, repository, serving, pool.device, version),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": {**http_probe, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # Loading a large model (or building a TensorRT engine cache) can take minutes.
        "startupProbe": {**http_probe, "failureThreshold": 120},
        # A pod being replaced stays in the Service's endpoints until every proxy has seen it go;
        # it keeps answering for that while before Triton gets SIGTERM (and drains in-flight work).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "resources": pool.pod_resources(serving=True),
        # A read-only root: the python backend's environments, s3 downloads of the repository and
        # HOME go to the scratch emptyDir.
        "env": [{"name": "HOME", "value": SCRATCH}],
        "securityContext": container_security(),
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}, *mounts],
    }
    env_from = secret_env([settings.artifact_secret])
    if env_from:
        container["envFrom"] = env_from
    if settings.triton_image_pull_policy:
        container["imagePullPolicy"] = settings.triton_image_pull_policy
    pod_spec: dict[str, Any] = {
        # Triton never calls the Kubernetes API; a token in a pod that serves requests is only a risk.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(settings),
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}, *volumes],
        **pool_scheduling(pool),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(
            name, {names.COMPONENT: "server", names.POOL: pool.name}, {names.MODEL_VERSION: str(version)}
        ),
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": selector},
            # Past this the Deployment reports ProgressDeadlineExceeded, shown as RolloutStalled.
            "progressDeadlineSeconds": 900,
            # Old pods serve until new ones pass readiness: a version that fails to load never goes live.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {**selector, names.POOL: pool.name}, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def triton_service(owner: Owner) -> dict[str, Any]:
    """The ClusterIP Service in front of every Triton pod of the resource: HTTP, gRPC and metrics."""
    name = names.server_name(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(name, {names.COMPONENT: "server"}),
        "spec": {
            "type": "ClusterIP",
            "selector": {**names.owner_labels(owner.name), names.COMPONENT: "server"},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }


def endpoint(owner: Owner, version: int) -> Endpoint:
    """``status.endpoint``: the Service's in-cluster URLs and the model version they serve."""
    host = f"{names.server_name(owner.name)}.{owner.namespace}.svc"
    return Endpoint(
        http=f"http://{host}:{HTTP_PORT}",
        grpc=f"{host}:{GRPC_PORT}",
        metrics=f"http://{host}:{METRICS_PORT}/metrics",
        model=names.triton_model_name(owner.name),
        version=version,
    )
