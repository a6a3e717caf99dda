"""Gather what reconcile needs: the owned Jobs, Deployment and Service, reports, the model URI.

Everything with I/O that reconcile's decisions depend on happens here, before it runs. The
Kubernetes objects come from the watch cache (memory, no request); the store is read only where
the state needs it (reports until an optimization is decided, the model URI before its first Job).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from pydantic import ValidationError

from honed.api.spec import SpecError, parse_spec
from honed.api.timestamps import utc_timestamp
from honed.artifacts import ArtifactStore, parse_pvc
from honed.controller import names
from honed.controller.cache import Cache
from honed.controller.jobs import BUDGET_EXIT_CODE, INPUT_ERROR_EXIT_CODE
from honed.controller.jobs import CONTAINER as OPTIMIZER_CONTAINER
from honed.controller.kube import CONFIGMAPS, DEPLOYMENTS, JOBS, PODS, SERVICES
from honed.controller.reconcile_data import DeploymentState, JobState, Observed, PodProblem, PodState, ReportRead
from honed.controller.settings import HonedSettings
from honed.controller.stored_repository import repository_state
from honed.errors import HonedError
from honed.optimizer.report import REPORT_FILE, SCHEMA, Report


def job_phase(job: dict[str, Any]) -> tuple[str, str]:
    """(phase, message) from a Job's status conditions and counters."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "Succeeded", ""
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or "Failed"
            return "Failed", f"{reason}: {cond.get('message') or 'the Job failed'}"
    if status.get("succeeded"):
        return "Succeeded", ""
    if status.get("active") or status.get("ready"):
        return "Running", ""
    return "Pending", ""


def pod_message(pods: list[dict[str, Any]]) -> str:
    """The newest pod's termination message (the engine's summary, or its log tail)."""
    newest = sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True)
    for pod in newest:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            for state_key in ("state", "lastState"):
                terminated = (container.get(state_key) or {}).get("terminated") or {}
                text = (terminated.get("message") or "").strip()
                if text:
                    return text
                if terminated.get("reason") and terminated.get("exitCode"):
                    return f"{terminated['reason']} (exit code {terminated['exitCode']})"
    return ""


def job_failure_reason(job: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """Why a failed Job failed, as a status reason, when it is one a person acts on differently.

    ``OOMKilled`` (raise the pool's memory), ``DeadlineExceeded`` (the Job's activeDeadlineSeconds,
    from spec.search.timeBudget), ``InvalidInput`` (the engine refused the model or data: exit 2),
    ``TimeBudgetExhausted`` (spec.search.timeBudget ran out before the original model was measured:
    exit 4); None for any other failure.
    """
    if any((problem := pod_problem(pod)) is not None and problem.reason == "OOMKilled" for pod in pods):
        return "OOMKilled"
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True" and cond.get("reason") == "DeadlineExceeded":
            return "DeadlineExceeded"
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if container.get("name") != OPTIMIZER_CONTAINER:
                continue
            if terminated.get("exitCode") == INPUT_ERROR_EXIT_CODE:
                return "InvalidInput"
            if terminated.get("exitCode") == BUDGET_EXIT_CODE:
                return "TimeBudgetExhausted"
    return None


# Waiting reasons of a container, as the kubelet reports them, grouped by what fixes them.
IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


def _terminated_text(terminated: dict[str, Any]) -> str:
    parts = [str(terminated.get("reason") or "Error")]
    if terminated.get("exitCode") is not None:
        parts.append(f"(exit code {terminated['exitCode']})")
    text = (terminated.get("message") or "").strip()
    if text:
        parts.append(f"{text.splitlines()[-1][:200]}")
    return " ".join(parts)


def pod_problem(pod: dict[str, Any]) -> PodProblem | None:
    """Why a pod does not run, from its conditions and container states; None when nothing is wrong.

    ``since`` is when the wait started, so that reconcile can give up after a timeout.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    created = meta.get("creationTimestamp")
    for cond in status.get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
            message = cond.get("message") or "no node can take the pod"
            since = cond.get("lastTransitionTime") or created
            return PodProblem(reason="Unschedulable", message=message, since=since)
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        why, text = waiting.get("reason"), (waiting.get("message") or "").strip()
        if why in IMAGE_REASONS:
            detail = text or f"image {container.get('image', '')}"
            return PodProblem(reason="ImageUnavailable", message=f"{why}: {detail}", since=created)
        if why in CONFIG_REASONS:
            detail = text or "see the pod's events"
            return PodProblem(reason="ContainerConfigError", message=f"{why}: {detail}", since=created)
        if why == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            restarts = container.get("restartCount", 0)
            reason = "OOMKilled" if last.get("reason") == "OOMKilled" else "CrashLoopBackOff"
            exit_text = f"; last exit: {_terminated_text(last)}" if last else ""
            message = f"container {container.get('name')} restarted {restarts} times{exit_text}"
            return PodProblem(reason=reason, message=message, since=created)
    for container in containers:
        for key in ("state", "lastState"):
            terminated = (container.get(key) or {}).get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                message = f"container {container.get('name')} ran out of memory: {_terminated_text(terminated)}"
                return PodProblem(reason="OOMKilled", message=message, since=created)
    return None


def job_pods_problem(pods: list[dict[str, Any]]) -> PodProblem | None:
    """Why a running Job's attempt is stuck, or how its earlier attempt ended (OOMKilled, say)."""
    newest = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
    live = [p for p in newest if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    for pod in live:
        problem = pod_problem(pod)
        if problem is not None:
            return problem
    for pod in newest:
        if pod in live:
            continue
        problem = pod_problem(pod)
        if problem is not None:
            # A finished attempt: the Job retries (backoffLimit), the next pod may do better.
            return replace(problem, message=f"an earlier attempt ended: {problem.message}")
    return None


def failed_create(events: list[dict[str, Any]], since: str | None) -> PodProblem | None:
    """The Job controller's FailedCreate Event: admission (Pod Security, quota) refused the pod."""

    def stamp(event: dict[str, Any]) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or "")

    for event in sorted(events, key=stamp, reverse=True):
        if event.get("reason") == "FailedCreate":
            message = (event.get("message") or "the pod was refused").strip()
            return PodProblem(reason="FailedCreate", message=message, since=since)
    return None


def node_lost_note(pod: dict[str, Any]) -> str | None:
    """Why a pod whose containers are ready is not: its node stopped reporting; None otherwise.

    When the kubelet stops (restarted, crashed, the node down) the node goes NotReady after the
    controller manager's node-monitor grace period, and the node lifecycle controller sets the pods'
    Ready to False with no reason; ContainersReady, the kubelet's last word, stays True (measured on
    v1.36). Nothing restarts such a pod: it comes back with the kubelet, or is evicted once its
    node.kubernetes.io/unreachable toleration (300 s by default) runs out.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready, containers = conditions.get("Ready") or {}, conditions.get("ContainersReady") or {}
    if ready.get("status") != "False" or containers.get("status") != "True":
        return None
    if ready.get("reason") == "ReadinessGatesNotReady":  # a gate's controller holds it, not the node
        return None
    node = f"node {spec['nodeName']}" if spec.get("nodeName") else "its node"
    since = f" since {ready['lastTransitionTime']}" if ready.get("lastTransitionTime") else ""
    return (
        f"{node} stopped reporting{since} (NotReady: its kubelet or the node is down; "
        "check `kubectl describe node`); the pod comes back with the kubelet, or is evicted after "
        "its node.kubernetes.io/unreachable toleration"
    )


def not_ready_note(pod: dict[str, Any]) -> str:
    """Why a pod that has no problem (pod_problem) is not ready: its node, its last restart, or what it waits for.

    A Triton process that was killed restarts in the same pod (a restart count, the exit, no waiting
    reason until the kubelet backs off); a deleted pod's replacement starts from ContainerCreating.
    """
    lost = node_lost_note(pod)
    if lost is not None:
        return lost
    status = pod.get("status") or {}
    notes = []
    for container in status.get("containerStatuses") or []:
        last = (container.get("lastState") or {}).get("terminated") or {}
        restarts = int(container.get("restartCount") or 0)
        waiting = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        if restarts and last:
            times = "time" if restarts == 1 else "times"
            notes.append(
                f"container {container.get('name')} restarted {restarts} {times}, last exit {_terminated_text(last)}"
            )
        elif waiting:
            notes.append(f"container {container.get('name')} {waiting}")
    return "; ".join(notes) or f"phase {status.get('phase') or 'Pending'}, not ready yet"


def server_pod_state(pod: dict[str, Any]) -> PodState:
    """A Triton pod's version and serving config (from its annotations), readiness, and why not if not ready."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    version = annotations.get(names.MODEL_VERSION)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    problem = None if ready else pod_problem(pod)
    return PodState(
        name=str(meta.get("name", "")),
        version=int(version) if version and version.isdigit() else None,
        serving_config=annotations.get(names.SERVING_CONFIG),
        ready=ready,
        problem=problem,
        note="" if ready or problem is not None else not_ready_note(pod),
    )


def serves_or_will(pod: dict[str, Any]) -> bool:
    """Whether the pod counts for a rollout: not terminating, and not finished.

    An evicted pod stays listed with phase Failed until it is garbage-collected, and must not hold
    a rollout open.
    """
    terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    return not terminating and (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded")


def deployment_state(obj: dict[str, Any]) -> DeploymentState:
    """What the Triton Deployment's template runs, whether its controller caught up, and why it is stuck."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    template_meta = template.get("metadata") or {}
    # The template is what the pods run; the Deployment's own annotation is the fallback.
    template_annotations = template_meta.get("annotations") or {}
    version = template_annotations.get(names.MODEL_VERSION) or (meta.get("annotations") or {}).get(names.MODEL_VERSION)
    stalled = None
    problem = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            stalled = cond.get("message") or "the rollout exceeded its progress deadline"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            # The ReplicaSet cannot create pods (Pod Security admission, quota): no pod to look at.
            message = cond.get("message") or cond.get("reason") or "the ReplicaSet cannot create pods"
            problem = PodProblem(reason="FailedCreate", message=message, since=cond.get("lastTransitionTime"))
    return DeploymentState(
        version=int(version) if version and version.isdigit() else None,
        replicas=int(spec.get("replicas", 1)),
        rolled_out=observed is not None and (generation is None or observed >= generation),
        serving_config=template_annotations.get(names.SERVING_CONFIG),
        pool=(template_meta.get("labels") or {}).get(names.POOL),
        node_selector=dict((template.get("spec") or {}).get("nodeSelector") or {}),
        stalled=stalled,
        problem=problem,
    )


def read_report(store: ArtifactStore, key: str) -> ReportRead:
    """The report at ``key``, or why it cannot be used: unreadable, not a report, another schema (blocking)."""
    uri = store.url(key)
    try:
        text = store.read_text(key)
    except HonedError as exc:
        return ReportRead(uri=uri, error=exc.message)
    except OSError as exc:
        return ReportRead(uri=uri, error=f"cannot read {uri}: {exc}")
    try:
        report = Report.model_validate_json(text)
    except ValidationError as exc:
        return ReportRead(uri=uri, error=f"{uri} is not a honed report: {str(exc).splitlines()[0]}")
    if report.schema_ != SCHEMA:
        return ReportRead(uri=uri, error=f"{uri} has schema {report.schema_!r}, expected {SCHEMA!r}")
    return ReportRead(uri=uri, report=report)


async def check_model_uri(uri: str, settings: HonedSettings, *, timeout_s: float = 10.0) -> str | None:
    """Why the model cannot be read, or None when it can or when the operator cannot tell.

    s3:// and gs:// need the model's credentials, which only the Job has: the Job reports those.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return None if Path(parsed.path).is_file() else f"no file at {parsed.path}"
    if parsed.scheme == "pvc":
        pvc = parse_pvc(uri)
        claim_root = Path(settings.pvc_mount_root) / pvc.claim
        if not claim_root.is_dir():
            return None  # the claim is not mounted in the operator; the Job will see it
        return None if (claim_root / pvc.subpath).is_file() else f"no file {pvc.subpath} in claim {pvc.claim}"
    if parsed.scheme in ("http", "https"):
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.head(uri, allow_redirects=True) as response,
            ):
                if response.status == 405:  # some servers refuse HEAD; the Job will try GET
                    return None
                if response.status >= 400:
                    return f"HTTP {response.status} from {uri}"
                return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"cannot reach {uri}: {exc or type(exc).__name__}"
    return None


def fallback_pools(status: dict[str, Any]) -> list[str]:
    """Pools of the candidates a pending fallback may choose from (their reports are needed)."""
    if not ((status.get("serving") or {}).get("fallback") and (status.get("winner") or {}).get("optimization")):
        return []
    eligible = {c.get("pool") for c in status.get("candidates") or [] if c.get("verdict") in ("eligible", "winner")}
    return sorted(pool for pool in eligible if pool)


def job_state(
    cache: Cache, namespace: str, manifest: dict[str, Any], *, labels: dict[str, str], decided: bool, current: str
) -> JobState:
    """A Job's phase, with its pods' word on why it failed, what it found, or why it does not run."""
    job_meta = manifest["metadata"]
    name = job_meta["name"]
    job_labels = job_meta.get("labels") or {}
    state = JobState(
        name=name,
        pool=job_labels.get(names.POOL, ""),
        optimization=job_labels.get(names.OPTIMIZATION, ""),
        phase="Pending",
        run=(job_meta.get("annotations") or {}).get(names.RUN, ""),
    )
    given_up = (job_meta.get("annotations") or {}).get(names.FAILED)
    if given_up:
        # The operator suspended it (its pod waited too long); the pod and its conditions are gone.
        return replace(state, phase="Failed", message=given_up, reason=given_up.split(":", 1)[0])
    phase, message = job_phase(manifest)
    state = replace(state, phase=phase, message=message)  # type: ignore[arg-type]
    if decided:
        return state  # the status keeps what these Jobs said
    if phase in ("Failed", "Succeeded"):
        # The pod's termination message: why a Job failed, or the engine's summary of a search.
        pods = cache.list(PODS, namespace, {**labels, "job-name": name})
        detail = pod_message(pods)
        if phase == "Succeeded":
            return replace(state, message=detail)
        return replace(
            state,
            message=f"{message}; pod: {detail}" if detail else message,
            reason=job_failure_reason(manifest, pods),
        )
    if state.optimization != current:
        return state  # an older spec's Job, about to be deleted
    # Pending, or Running (which counts a pod waiting for a node or an image too): ask the pods why.
    pods = cache.list(PODS, namespace, {**labels, "job-name": name})
    problem = job_pods_problem(pods)
    if problem is None and not pods:
        # No pod at all: admission (Pod Security, a quota) refused it; only the Job's Events say so.
        problem = failed_create(cache.events_of(namespace, name), since=job_meta.get("creationTimestamp"))
    return replace(state, problem=problem)


async def _current_reports(
    store: ArtifactStore, namespace: str, name: str, optimization: str, jobs: dict[str, JobState]
) -> dict[str, ReportRead]:
    """The reports, by pool, of the current optimization's finished Jobs.

    A Failed Job that left a report searched to the end without an accepted candidate: it is
    replaced in ``jobs`` by a Succeeded one, so reconcile reports how close each candidate came.
    """
    reports: dict[str, ReportRead] = {}
    for job in [job for job in jobs.values() if job.optimization == optimization]:
        if job.phase not in ("Succeeded", "Failed"):
            continue
        # The Job's own record of its run: the status may not have it yet (a lost write).
        run = job.run or optimization
        key = f"{names.optimization_key(namespace, name, run, job.pool)}/{REPORT_FILE}"
        if job.phase == "Failed" and not await asyncio.to_thread(store.exists, key):
            continue
        read = await asyncio.to_thread(read_report, store, key)
        if job.phase == "Failed":
            if read.report is None:
                continue
            # The search ran to the end and found no accepted candidate (the engine exits 1):
            # its report says how close each came, which is what the status should tell.
            jobs[job.name] = replace(job, phase="Succeeded")
        reports[job.pool] = read
    return reports


async def _fallback_reports(
    store: ArtifactStore, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, ReportRead]:
    """The winner's run's reports of the pools a pending fallback may choose from, by pool."""
    run_of_winner = (status.get("winner") or {}).get("optimization", "")
    reports: dict[str, ReportRead] = {}
    for pool in fallback_pools(status):
        key = f"{names.optimization_key(namespace, name, run_of_winner, pool)}/{REPORT_FILE}"
        reports[pool] = await asyncio.to_thread(read_report, store, key)
    return reports


async def observe(cache: Cache, store: ArtifactStore, body: dict[str, Any], settings: HonedSettings) -> Observed:
    """Everything one reconcile pass of ``body`` needs: its children from ``cache``, reports from ``store``.

    With an invalid spec only the resource's own fields are filled in: reconcile reports the spec
    and touches nothing.
    """
    meta = body.get("metadata") or {}
    name, namespace = meta["name"], meta["namespace"]
    annotations = dict(meta.get("annotations") or {})
    status = dict(body.get("status") or {})
    base = Observed(
        name=name,
        namespace=namespace,
        uid=meta.get("uid", ""),
        generation=meta.get("generation"),
        annotations=annotations,
        status=status,
        settings=settings,
        now=utc_timestamp(),
    )
    try:
        spec = parse_spec(body.get("spec"))
    except SpecError:
        return base  # reconcile reports it; nothing else matters until the spec is fixed
    optimization = names.optimization_id(spec, annotations)
    labels = names.owner_labels(name)

    last = status.get("lastOptimization") or {}
    decided = last.get("id") == optimization and bool(last.get("finishedAt"))
    jobs: dict[str, JobState] = {}
    for manifest in cache.list(JOBS, namespace, {**labels, names.COMPONENT: "optimizer"}):
        job = job_state(cache, namespace, manifest, labels=labels, decided=decided, current=optimization)
        jobs[job.name] = job
    configmaps = frozenset(
        cm["metadata"]["name"] for cm in cache.list(CONFIGMAPS, namespace, {**labels, names.COMPONENT: "optimizer"})
    )

    reports: dict[str, ReportRead] = {}
    model_error = None
    if not decided:
        reports = await _current_reports(store, namespace, name, optimization, jobs)
        if not any(job.optimization == optimization for job in jobs.values()):
            model_error = await check_model_uri(spec.model.uri, settings)
    elif fallback_pools(status):
        # A fallback is pending: reconcile builds the runner-up's winner entry from its report.
        reports = await _fallback_reports(store, namespace, name, status)

    deployment = cache.get(DEPLOYMENTS, namespace, names.server_name(name))
    server_pods: tuple[PodState, ...] = ()
    if deployment is not None:
        # Which pods are ready, per version: the Deployment's own counters mix old and new pods.
        listed = cache.list(PODS, namespace, {**labels, names.COMPONENT: "server"})
        server_pods = tuple(server_pod_state(p) for p in listed if serves_or_will(p))
    service = cache.get(SERVICES, namespace, names.server_name(name))
    used, ready = await asyncio.to_thread(repository_state, store, namespace, name)
    return replace(
        base,
        jobs=jobs,
        configmaps=configmaps,
        reports=reports,
        model_error=model_error,
        repository_versions=used,
        repository_ready=ready,
        deployment=None if deployment is None else deployment_state(deployment),
        server_pods=server_pods,
        service=service is not None,
    )
