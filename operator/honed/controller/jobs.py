"""Pure builders of one pool's optimization: the request, its ConfigMap and the Job running the engine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from honed.api.request import OptimizeRequest, RequestModel, RequestTensor
from honed.api.spec import API_VERSION, KIND, OptimizedModelSpec
from honed.artifacts import join_uri, parse_pvc
from honed.controller import names
from honed.controller.settings import HonedSettings, Pool

CONTAINER = "optimizer"
REQUEST_PATH = "/work/request.json"
REQUEST_KEY = "request.json"
TERMINATION_LOG = "/dev/termination-log"
# The root filesystem is read-only: everything written goes to this emptyDir (HOME included, for
# the caches of fsspec, matplotlib and the runtimes).
SCRATCH = "/tmp"
# `honed optimize` exits 1 when its search found no accepted candidate (report.json is written)
# and 2 on bad input (honed.errors.InputError): a retry would only repeat either.
NO_WINNER_EXIT_CODE = 1
INPUT_ERROR_EXIT_CODE = 2
# The time budget ran out before the original model was measured (honed.errors.BudgetExhausted).
BUDGET_EXIT_CODE = 4


@dataclass(frozen=True)
class Owner:
    """The OptimizedModel that owns (and garbage-collects) what is built here."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        """The controller ownerReference: deleting the OptimizedModel deletes the child."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """A child's metadata: the owner labels (the cache watches by them) plus ``labels``, the owner reference."""
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {**names.owner_labels(self.name), **labels},
            "ownerReferences": [self.reference()],
        }
        if annotations:
            meta["annotations"] = annotations
        return meta


def job_limits(time_budget_s: float) -> tuple[int, int]:
    """The Job's backoffLimit and activeDeadlineSeconds for a search of ``time_budget_s``.

    The engine stops searching at its budget but still downloads, exports and uploads around it,
    hence the margin. One retry (a preempted node) fits short searches; long ones get none, since the
    deadline covers every attempt and a retry would mostly double the bill.
    """
    attempt = time_budget_s + max(300.0, 0.25 * time_budget_s)
    backoff_limit = 1 if time_budget_s <= 3600 else 0
    return backoff_limit, math.ceil((backoff_limit + 1) * attempt)


def mounted_uri(uri: str, settings: HonedSettings) -> str:
    """pvc:// URIs become the file:// path where the pod mounts the claim; others pass through."""
    if not uri.startswith("pvc://"):
        return uri
    pvc = parse_pvc(uri)
    return f"file://{settings.pvc_mount_root.rstrip('/')}/{pvc.claim}/{pvc.subpath}".rstrip("/")


def build_request(
    spec: OptimizedModelSpec, pool: Pool, settings: HonedSettings, *, batch_sizes: list[int] | None = None
) -> OptimizeRequest:
    """The optimization request for one pool; ``batch_sizes`` (what live traffic showed) replaces spec.search's."""
    search, validation = spec.search, spec.validation
    return OptimizeRequest(
        model=RequestModel(
            uri=mounted_uri(spec.model.uri, settings),
            format=spec.model.format,
            inputs=[RequestTensor(name=t.name, dtype=t.dtype, shape=list(t.shape)) for t in spec.model.inputs],
        ),
        data_uri=None if validation.data_uri is None else mounted_uri(validation.data_uri, settings),
        metric=validation.metric,
        max_metric_drop=validation.max_metric_drop,
        objective="latency" if search.objective == "latency" else "throughput",
        latency_budget_ms=search.latency_budget_ms,
        batch_sizes=batch_sizes or list(search.batch_sizes),
        backends=list(search.backends),
        time_budget_s=search.time_budget_seconds(),
        device=pool.device,
        pool=pool.name,
        # An empty list in the spec means "the engine's default", which the request's default is.
        **({"precisions": list(search.precisions)} if search.precisions else {}),
    )


def output_uri(settings: HonedSettings, namespace: str, owner: str, run: str, pool: str) -> str:
    """Where the Job writes report.json and artifacts, as the Job sees it (pvc:// is mounted)."""
    store = mounted_uri(settings.artifact_store, settings)
    return join_uri(store, names.optimization_key(namespace, owner, run, pool))


def pvc_volumes(
    uris: list[str], settings: HonedSettings, *, writable: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for every claim named by a pvc:// URI (each claim once)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    seen: set[str] = set()
    for uri in uris:
        if not uri.startswith("pvc://"):
            continue
        claim = parse_pvc(uri).claim
        if claim in seen:
            continue
        seen.add(claim)
        volume = names.bounded(f"pvc-{claim}")
        read_only = claim not in writable
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append(
            {
                "name": volume,
                "mountPath": f"{settings.pvc_mount_root.rstrip('/')}/{claim}",
                "readOnly": read_only,
            }
        )
    return volumes, mounts


def secret_env(secrets: list[str | None]) -> list[dict[str, Any]]:
    """``envFrom`` entries for the named Secrets, each once, in order; None entries are skipped."""
    return [{"secretRef": {"name": name}} for name in dict.fromkeys(s for s in secrets if s)]


def pool_scheduling(pool: Pool) -> dict[str, Any]:
    """The pod spec fields that put a pod on the pool: nodeSelector and tolerations, where set."""
    scheduling: dict[str, Any] = {}
    if pool.node_selector:
        scheduling["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        scheduling["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations]
    return scheduling


def pod_security(settings: HonedSettings) -> dict[str, Any]:
    """Pod securityContext passing the ``restricted`` Pod Security Standard (namespaces may enforce it)."""
    context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if settings.pod_uid is not None:
        uid = settings.pod_uid
        # fsGroup makes a writable claim (the pvc:// store) writable for the uid; OnRootMismatch
        # skips the recursive chown of a large volume when its root already has the group.
        context |= {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid, "fsGroupChangePolicy": "OnRootMismatch"}
    return context


def container_security() -> dict[str, Any]:
    """Container securityContext of the ``restricted`` profile, with a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def request_configmap(owner: Owner, job: str, pool: str, optimization: str, request: OptimizeRequest) -> dict[str, Any]:
    """The ConfigMap holding the Job's request.json; it is named like the Job ``job``."""
    labels = {names.COMPONENT: "optimizer", names.POOL: pool, names.OPTIMIZATION: optimization}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(job, labels),
        "data": {REQUEST_KEY: request.to_json() + "\n"},
    }


def optimizer_job(
    owner: Owner,
    spec: OptimizedModelSpec,
    pool: Pool,
    settings: HonedSettings,
    optimization: str,
    run: str,
) -> dict[str, Any]:
    """The Job that runs ``honed optimize`` for one pool; its ConfigMap has the same name.

    The name follows the optimization (a restarted operator finds the Job instead of making a
    twin); the output follows the run, recorded on the Job so that a restart keeps writing there.
    """
    name = names.job_name(owner.name, pool.name, optimization)
    labels = {names.COMPONENT: "optimizer", names.POOL: pool.name, names.OPTIMIZATION: optimization}
    backoff_limit, deadline = job_limits(spec.search.time_budget_seconds())
    out = output_uri(settings, owner.namespace, owner.name, run, pool.name)
    pvc_uris = [settings.artifact_store, spec.model.uri, spec.validation.data_uri or ""]
    store_claims = {parse_pvc(settings.artifact_store).claim} if settings.artifact_store.startswith("pvc://") else set()
    volumes, mounts = pvc_volumes(pvc_uris, settings, writable=store_claims)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pool.image,
        "command": ["honed", "optimize", "--request", REQUEST_PATH, "--out", out],
        "env": [
            {"name": "HONED_POOL", "value": pool.name},
            {"name": "HONED_TERMINATION_LOG", "value": TERMINATION_LOG},
            {"name": "HOME", "value": SCRATCH},
        ],
        "resources": pool.pod_resources(),
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the engine writes its summary still leaves the log tail as the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "request", "mountPath": REQUEST_PATH, "subPath": REQUEST_KEY, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH},
            *mounts,
        ],
    }
    env_from = secret_env([settings.artifact_secret, spec.model.credentials_secret])
    if env_from:
        container["envFrom"] = env_from
    if pool.image_pull_policy:
        container["imagePullPolicy"] = pool.image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The engine never calls the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(settings),
        "containers": [container],
        "volumes": [
            {"name": "request", "configMap": {"name": name}},
            {"name": "scratch", "emptyDir": {}},
            *volumes,
        ],
        **pool_scheduling(pool),
    }
    if settings.optimizer_service_account:
        pod_spec["serviceAccountName"] = settings.optimizer_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(name, labels, {names.RUN: run}),
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [NO_WINNER_EXIT_CODE, INPUT_ERROR_EXIT_CODE, BUDGET_EXIT_CODE],
                        },
                    },
                    # Evictions and preemptions are the node's fault: they do not use up the retry.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {
                "metadata": {"labels": {**names.owner_labels(owner.name), **labels}},
                "spec": pod_spec,
            },
        },
    }
