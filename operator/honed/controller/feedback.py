"""The feedback loop's timer: Triton's metrics in Prometheus -> the pure policy -> status and Events.

For every OptimizedModel with ``spec.feedback.enabled`` a kopf daemon runs ``feedback_pass``
once per ``spec.feedback.interval`` while a winner is served and ``HONED_PROMETHEUS_URL`` is set:

1. ``feedback_inputs`` (pure) reads the SLO, what is deployed, the other accepted candidates
   and the loop's memory (``status.feedback``) from the resource;
2. ``PrometheusClient.window`` observes the last interval (in a worker thread, outside the
   resource's lock) and ``honed.feedback.evaluate`` decides;
3. ``feedback_patch`` (pure) turns the evaluation into the status patch (``status.feedback`` with
   ``lastDecision``, the ``SLOMet`` and ``MetricsUnavailable`` conditions), Events, and, for
   Reoptimize, the ``honed.dev/reoptimize`` annotation: the next reconcile starts an optimization
   with reason SLOViolation or TrafficShift whose request benchmarks the observed batch sizes.

Retune and Fallback are recorded (status, Event) but not applied: writing serving overrides or
serving a runner-up needs reconcile support that does not exist yet, and the Event says so.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf

from honed.api.spec import GROUP, PLURAL, VERSION
from honed.controller import names
from honed.controller.apply import post_event
from honed.controller.conditions import load_status, merge_patch, set_condition
from honed.controller.kube import OPTIMIZED_MODELS
from honed.controller.state import Event, Observed
from honed.errors import InputError
from honed.feedback import (
    Deployment,
    Evaluation,
    FeedbackSLO,
    FeedbackState,
    Option,
    PrometheusClient,
    Reoptimize,
    evaluate,
)
from honed.settings import HonedSettings

if TYPE_CHECKING:
    from honed.controller.handlers import Operator

log = logging.getLogger(__name__)

# The usual Prometheus scrape interval; per-step batch sizes are sampled over a few scrapes.
SCRAPE_INTERVAL_S = 15.0
# Triton series carry the pod's namespace (PodMonitor and the usual kubernetes_sd relabelling).
NAMESPACE_LABEL = "namespace"


@dataclass(frozen=True)
class FeedbackInputs:
    model: str  # the Triton model name
    slo: FeedbackSLO
    deployment: Deployment
    options: list[Option]
    state: FeedbackState


def _time(value: str | None) -> datetime | None:
    try:
        return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def feedback_inputs(body: dict[str, Any], settings: HonedSettings) -> FeedbackInputs | str:
    """What the policy needs from the resource, or why there is nothing to judge yet."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    feedback = spec.get("feedback") or {}
    if not feedback.get("enabled"):
        return "spec.feedback.enabled is false"
    if not settings.prometheus_url:
        return "no Prometheus is configured (HONED_PROMETHEUS_URL)"
    try:
        slo = FeedbackSLO.from_spec(feedback)
    except InputError as exc:
        return str(exc)
    winner, endpoint = status.get("winner"), status.get("endpoint")
    if not winner or not endpoint:
        return "no version is served yet"
    serving = spec.get("serving") or {}
    batching = serving.get("dynamicBatching") or {}
    benchmarked = [int(b) for b in (spec.get("search") or {}).get("batchSizes") or [1, 8]]
    instances = int(serving.get("instances") or 1)
    deployed: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Deployed"), {})
    cache = bool(serving.get("responseCache", True))
    deployment = Deployment(
        candidate=winner["name"],
        pool=winner.get("pool", ""),
        version=str(endpoint.get("version", winner.get("version", ""))),
        # Fields the spec leaves to the benchmark: the largest benchmarked batch, no delay known.
        max_batch_size=int(batching.get("maxBatchSize") or max(benchmarked)),
        max_queue_delay_us=int(batching.get("maxQueueDelayMicroseconds") or 0),
        instance_count=instances,
        max_instances=instances,  # instance retunes are not applied by the operator yet
        response_cache=cache,
        cache_allowed=cache,
        benchmarked_batch_sizes=benchmarked,
        optimizing=status.get("phase") == "Optimizing",
        deployed_at=_time(deployed.get("lastTransitionTime")) if deployed.get("status") == "True" else None,
    )
    options = [
        Option(name=c["name"], pool=c.get("pool", ""), p99_ms_by_batch={1: float(c["p99Ms"])})
        for c in status.get("candidates") or []
        if c.get("verdict") in ("winner", "eligible") and c.get("p99Ms") is not None
    ]
    try:
        state = FeedbackState.model_validate(status.get("feedback") or {})
    except ValueError:
        state = FeedbackState()  # a hand-edited status restarts the loop's memory
    return FeedbackInputs(
        endpoint.get("model", names.triton_model_name(body["metadata"]["name"])), slo, deployment, options, state
    )


def reoptimize_annotation(decision: Reoptimize, now: datetime) -> str:
    """``TRIGGER:TIME batchSizes=1,8 concurrency=N``: a new value starts a new optimization
    (``names.observed_batch_sizes`` reads the batch sizes back into the optimization request)."""
    stamp = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    sizes = ",".join(str(b) for b in decision.batch_sizes)
    return f"{decision.trigger}:{stamp} batchSizes={sizes} concurrency={decision.concurrency}"


@dataclass(frozen=True)
class FeedbackPatch:
    status: dict[str, Any]  # merge patch of the status subresource ({} = nothing changed)
    annotations: dict[str, str]  # metadata annotations to set
    events: list[Event]


def feedback_patch(body: dict[str, Any], evaluation: Evaluation, now: datetime) -> FeedbackPatch:
    old = body.get("status") or {}
    status = load_status(old)
    stamp = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    generation = (body.get("metadata") or {}).get("generation")
    for cond in evaluation.conditions:
        set_condition(status, cond.type, cond.status, cond.reason, cond.message, now=stamp, generation=generation)
    status.feedback = evaluation.state.model_dump(mode="json", by_alias=True, exclude_none=True)
    decision = evaluation.decision
    annotations = {}
    if isinstance(decision, Reoptimize):
        annotations[names.REOPTIMIZE] = reoptimize_annotation(decision, now)
    events = []
    for event in evaluation.events:
        message = event.message
        if event.reason in ("Retune", "Fallback"):
            message = f"{message} (recorded, not applied: the operator does not apply {event.reason} yet)"
        events.append(Event(event.type, event.reason, message))
    return FeedbackPatch(merge_patch(old, status.to_wire()), annotations, events)


async def feedback_pass(operator: Operator, namespace: str, name: str) -> float | None:
    """One evaluation; returns the seconds until the next one (None: the resource is gone)."""
    settings = operator.settings
    async with operator.lock(namespace, name):
        body = await operator.client.get(OPTIMIZED_MODELS, namespace, name)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return None
    inputs = feedback_inputs(body, settings)
    if isinstance(inputs, str):
        log.debug("feedback for %s/%s waits: %s", namespace, name, inputs)
        return settings.reconcile_interval_s
    assert settings.prometheus_url is not None
    client = PrometheusClient(
        settings.prometheus_url, scrape_interval_s=SCRAPE_INTERVAL_S, matchers={NAMESPACE_LABEL: namespace}
    )
    observation = await asyncio.to_thread(client.window, inputs.model, seconds=inputs.slo.interval_s)
    now = datetime.now(UTC)
    evaluation = evaluate(observation, inputs.slo, inputs.deployment, inputs.options, inputs.state, now)
    async with operator.lock(namespace, name):
        # Status may have moved while Prometheus answered: patch against what is there now.
        body = await operator.client.get(OPTIMIZED_MODELS, namespace, name) or body
        patch = feedback_patch(body, evaluation, now)
        if patch.annotations:
            annotate = {"metadata": {"annotations": patch.annotations}}
            await operator.client.patch(OPTIMIZED_MODELS, namespace, name, annotate)
        if patch.status:
            await operator.client.patch(
                OPTIMIZED_MODELS, namespace, name, {"status": patch.status}, subresource="status"
            )
    meta = body.get("metadata") or {}
    obs = Observed(
        name=name,
        namespace=namespace,
        uid=str(meta.get("uid", "")),
        generation=meta.get("generation"),
        annotations=dict(meta.get("annotations") or {}),
        status=dict(body.get("status") or {}),
        settings=settings,
        now=now.isoformat(),
    )
    for event in patch.events:
        await post_event(operator.client, obs, event)
    log.info("feedback for %s/%s: %s", namespace, name, evaluation.decision.summary())
    return inputs.slo.interval_s


def feedback_enabled(spec: Any, **_: Any) -> bool:
    return bool((spec or {}).get("feedback", {}).get("enabled"))


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """The per-resource daemon; kopf starts and stops it as spec.feedback.enabled changes."""
    interval = operator.settings.reconcile_interval_s

    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        when=feedback_enabled,
        initial_delay=interval,
        cancellation_timeout=1.0,
    )
    async def watch_feedback(stopped: kopf.DaemonStopped, name: str, namespace: str | None, **_: Any) -> None:
        while not stopped:
            try:
                delay = await feedback_pass(operator, namespace or "", name)
            except Exception as exc:  # one failed pass must not end the loop
                log.warning("feedback for %s/%s failed: %s", namespace, name, exc)
                delay = interval
            if delay is None:
                return
            await stopped.wait(delay)
