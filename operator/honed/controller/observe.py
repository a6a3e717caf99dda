"""Gather what reconcile needs: the owned Jobs, Deployment and Service, reports, the model URI.

Everything with I/O that reconcile's decisions depend on happens here, before it runs; what is
read depends on the state (reports only until an optimization is decided, the model URI only
before its first Job exists), so steady state costs a few GETs.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from pydantic import ValidationError

from honed.api.spec import SpecError, parse_spec
from honed.artifacts import ArtifactStore, parse_pvc
from honed.controller import names
from honed.controller.deploy import repository_state
from honed.controller.kube import CONFIGMAPS, DEPLOYMENTS, JOBS, PODS, SERVICES, KubeClient
from honed.controller.reconcile import APPLIED
from honed.controller.state import DeploymentState, JobState, Observed, ReportRead
from honed.errors import HonedError
from honed.optimizer.report import REPORT_FILE, SCHEMA, Report
from honed.settings import HonedSettings


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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


def deployment_state(obj: dict[str, Any]) -> DeploymentState:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    status = obj.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    version = annotations.get(names.MODEL_VERSION)
    spec = obj.get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    stalled = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            stalled = cond.get("message") or "the rollout exceeded its progress deadline"
    return DeploymentState(
        version=int(version) if version and version.isdigit() else None,
        applied=annotations.get(APPLIED),
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        total_replicas=int(status.get("replicas") or 0),
        rolled_out=observed is not None and (generation is None or observed >= generation),
        node_selector=dict(template.get("nodeSelector") or {}),
        stalled=stalled,
    )


def read_report(store: ArtifactStore, key: str) -> ReportRead:
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


async def observe(client: KubeClient, store: ArtifactStore, body: dict[str, Any], settings: HonedSettings) -> Observed:
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
        now=utc_now(),
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
    for manifest in await client.list(JOBS, namespace, {**labels, names.COMPONENT: "optimizer"}):
        job_meta = manifest["metadata"]
        job_labels = job_meta.get("labels") or {}
        phase, message = job_phase(manifest)
        # The pod's termination message: why a Job failed, or the engine's summary of a search,
        # read while the optimization is still being decided (then the status keeps it).
        if not decided and phase in ("Failed", "Succeeded"):
            pods = await client.list(PODS, namespace, {"job-name": job_meta["name"]})
            detail = pod_message(pods)
            if phase == "Succeeded":
                message = detail
            elif detail:
                message = f"{message}; pod: {detail}"
        jobs[job_meta["name"]] = JobState(
            name=job_meta["name"],
            pool=job_labels.get(names.POOL, ""),
            optimization=job_labels.get(names.OPTIMIZATION, ""),
            phase=phase,  # type: ignore[arg-type]
            message=message,
        )
    configmaps = frozenset(
        cm["metadata"]["name"]
        for cm in await client.list(CONFIGMAPS, namespace, {**labels, names.COMPONENT: "optimizer"})
    )

    current = [job for job in jobs.values() if job.optimization == optimization]
    reports: dict[str, ReportRead] = {}
    model_error = None
    if not decided:
        for job in current:
            if job.phase not in ("Succeeded", "Failed"):
                continue
            key = f"{names.optimization_key(namespace, name, optimization, job.pool)}/{REPORT_FILE}"
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
        if not current:
            model_error = await check_model_uri(spec.model.uri, settings)

    deployment = await client.get(DEPLOYMENTS, namespace, names.server_name(name))
    service = await client.get(SERVICES, namespace, names.server_name(name))
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
        service=service is not None,
    )
