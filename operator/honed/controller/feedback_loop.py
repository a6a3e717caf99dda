"""The feedback loop's steps: Triton's metrics in Prometheus -> the pure policy -> status and Events.

One loop per operator (``Operator.feedback_rounds`` in ``honed.controller.handlers``) judges every
OptimizedModel with ``spec.feedback.enabled`` once per ``spec.feedback.interval`` while a winner is
served and ``HONED_PROMETHEUS_URL`` is set. Evaluations fall on multiples of the interval
(``next_round``), so every model with the same interval is judged in the same round:

1. ``feedback_inputs`` (pure) reads the SLO, what is deployed, the other accepted candidates
   and the loop's memory (``status.feedback``) from the resource;
2. ``observe_and_evaluate`` observes the last interval of every model of the round in one set of
   queries (``PrometheusClient.windows``: the number of queries does not grow with the models), in
   a worker thread outside the resources' locks, and ``honed.feedback.evaluate`` decides;
3. ``feedback_patch`` (pure) turns the evaluation into the status patch (``status.feedback`` with
   ``lastDecision``, the ``SLOMet`` and ``MetricsUnavailable`` conditions), Events, and the action:
   Reoptimize sets the ``honed.dev/reoptimize`` annotation (the next reconcile starts an
   optimization with reason SLOViolation or TrafficShift whose request benchmarks the observed
   batch sizes); Retune merges its settings into ``status.serving.overrides`` and Fallback writes
   ``status.serving.fallback``, which reconcile applies as a new model version (see
   ``honed.controller.winner``); the operator writes it under the resource's lock, posts the Events,
   and runs its reconcile pass at once when ``status.serving`` changed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from honed.api.spec import DEFAULT_BATCH_SIZES, Feedback, Serving
from honed.api.status import FallbackRequest, OptimizedModelStatus, ServingOverrides, ServingRequests
from honed.api.timestamps import parse_timestamp, utc_timestamp
from honed.controller import names
from honed.controller.conditions import load_status, merge_patch, set_condition
from honed.controller.reconcile_data import Event, ObjectRef
from honed.controller.settings import HonedSettings, Pool
from honed.controller.winner import overrides_basis
from honed.errors import InputError
from honed.feedback import (
    Deployment,
    Evaluation,
    Fallback,
    FeedbackState,
    ModelKey,
    Option,
    PrometheusClient,
    Reoptimize,
    Retune,
    evaluate,
)

log = logging.getLogger(__name__)

# The usual Prometheus scrape interval; per-step batch sizes are sampled over a few scrapes.
SCRAPE_INTERVAL_S = 15.0


@dataclass(frozen=True)
class FeedbackInputs:
    """What ``evaluate`` needs for one served model besides its metrics (see ``feedback_inputs``)."""

    model: str  # the Triton model name
    slo: Feedback
    deployment: Deployment
    options: list[Option]
    state: FeedbackState


def _first(*sources: dict[str, Any], key: str, default: Any = None) -> Any:
    return next((source[key] for source in sources if source.get(key) is not None), default)


def instance_room(pool: Pool | None) -> int:
    """Model instances a Triton pod of the pool has room for: one per whole CPU core it gets.

    GPU pools keep what they have: instances on one GPU compete for it, which the loop cannot
    judge from Triton's metrics.
    """
    if pool is None or pool.device != "cpu":
        return 1
    resources = pool.pod_resources(serving=True)
    cpu = (resources.get("limits") or {}).get("cpu") or (resources.get("requests") or {}).get("cpu")
    try:
        text = str(cpu)
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return 1
    return max(1, int(cores))


def feedback_inputs(body: dict[str, Any], settings: HonedSettings) -> FeedbackInputs | str:
    """What the policy needs from the resource, or why there is nothing to judge yet."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    try:
        slo = Feedback.from_spec(spec.get("feedback"))
    except InputError as exc:
        return str(exc)
    if not slo.enabled:
        return "spec.feedback.enabled is false"
    if not settings.prometheus_url:
        return "no Prometheus is configured (HONED_PROMETHEUS_URL)"
    winner, endpoint = status.get("winner"), status.get("endpoint")
    if not winner or not endpoint:
        return "no version is served yet"
    serving = spec.get("serving") or {}
    batching = serving.get("dynamicBatching") or {}
    benchmarked = [int(b) for b in (spec.get("search") or {}).get("batchSizes") or DEFAULT_BATCH_SIZES]
    # What the served version runs: the loop's overrides over spec.serving over what honed derived
    # from the benchmark (status.winner.config).
    overrides = winner.get("overrides") or {}
    config = winner.get("config") or {}
    instances = int(_first(overrides, serving, config, key="instances") or 1)
    deployed: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Deployed"), {})
    deployment = Deployment(
        candidate=winner["name"],
        pool=winner.get("pool", ""),
        # Retunes write new versions of one selection; the policy's per-deployment counters (how
        # many retunes, the streaks) must survive them, so the selection names the deployment.
        version=str(winner.get("optimization") or endpoint.get("version", "")),
        # Fields the spec leaves to the benchmark: the largest benchmarked batch, no delay known.
        max_batch_size=int(batching.get("maxBatchSize") or config.get("maxBatchSize") or max(benchmarked)),
        max_queue_delay_us=int(_first(overrides, batching, config, key="maxQueueDelayMicroseconds") or 0),
        instance_count=instances,
        max_instances=max(instances, instance_room(settings.pool(winner.get("pool", "")))),
        response_cache=bool(_first(overrides, serving, config, key="responseCache", default=True)),
        cache_allowed=bool(serving.get("responseCache", True)),
        benchmarked_batch_sizes=benchmarked,
        optimizing=status.get("phase") == "Optimizing",
        deployed_at=parse_timestamp(deployed.get("lastTransitionTime")) if deployed.get("status") == "True" else None,
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
    """The honed.dev/reoptimize value of a Reoptimize: ``TRIGGER:TIME batchSizes=1,8 concurrency=N``.

    A new value starts a new optimization; ``names.observed_batch_sizes`` reads the batch sizes back
    into the optimization request.
    """
    stamp = utc_timestamp(now)
    sizes = ",".join(str(b) for b in decision.batch_sizes)
    return f"{decision.trigger}:{stamp} batchSizes={sizes} concurrency={decision.concurrency}"


@dataclass(frozen=True)
class FeedbackPatch:
    """The writes one evaluation asks for; the status and annotations go in separate patches."""

    status: dict[str, Any]  # merge patch of the status subresource ({} = nothing changed)
    annotations: dict[str, str]  # metadata annotations to set
    events: list[Event]


def feedback_patch(body: dict[str, Any], evaluation: Evaluation, now: datetime) -> FeedbackPatch:
    """Turn an evaluation into writes: conditions and memory in status, a Retune or Fallback in status.serving.

    A Reoptimize becomes the honed.dev/reoptimize annotation, which the next pass acts on; a Retune
    or Fallback without a winner in ``body``'s status is dropped.
    """
    old = body.get("status") or {}
    status = load_status(old)
    stamp = utc_timestamp(now)
    generation = (body.get("metadata") or {}).get("generation")
    for cond in evaluation.conditions:
        set_condition(status, cond.type, cond.status, cond.reason, cond.message, now=stamp, generation=generation)
    status.feedback = evaluation.state.model_dump(mode="json", by_alias=True, exclude_none=True)
    decision = evaluation.decision
    annotations = {}
    if isinstance(decision, Reoptimize):
        annotations[names.REOPTIMIZE] = reoptimize_annotation(decision, now)
    elif isinstance(decision, Retune | Fallback) and status.winner is not None:
        status.serving = serving_requests(status, decision, (body.get("spec") or {}).get("serving"), stamp)
    events = [Event(event.type, event.reason, event.message) for event in evaluation.events]
    return FeedbackPatch(merge_patch(old, status.to_wire()), annotations, events)


def serving_requests(
    status: OptimizedModelStatus, decision: Retune | Fallback, spec_serving: Any, stamp: str
) -> ServingRequests:
    """``status.serving`` with the decision added, for reconcile to apply."""
    winner = status.winner
    assert winner is not None
    requests = (status.serving or ServingRequests()).model_copy(deep=True)
    if isinstance(decision, Fallback):
        requests.fallback = FallbackRequest(
            candidate=decision.candidate,
            pool=decision.pool,
            replaces=f"{winner.name}@{winner.pool}",
            reason=decision.reason,
            requested_at=stamp,
        )
        return requests
    try:
        serving = Serving.model_validate(spec_serving or {})
    except ValueError:
        serving = Serving()  # reconcile reports the invalid spec; the basis then never matches
    # Retunes build on each other (halve the delay, then add an instance): merge, newest wins.
    changes = {
        "max_queue_delay_microseconds": decision.max_queue_delay_us,
        "instances": decision.instance_count,
        "response_cache": decision.response_cache,
    }
    current = requests.overrides or ServingOverrides()
    requests.overrides = current.model_copy(update={k: v for k, v in changes.items() if v is not None})
    requests.basis = overrides_basis(serving)
    return requests


def object_ref(body: dict[str, Any]) -> ObjectRef:
    """The OptimizedModel's name, namespace and uid, which its Events refer to."""
    meta = body.get("metadata") or {}
    return ObjectRef(str(meta.get("name", "")), str(meta.get("namespace", "")), str(meta.get("uid", "")))


def next_round(now_s: float, interval_s: float) -> float:
    """The next multiple of the interval after ``now_s`` (epoch seconds).

    Models with the same interval share their rounds, and so their queries, whenever they started.
    """
    return (math.floor(now_s / interval_s) + 1) * interval_s


Key = tuple[str, str]  # (namespace, name) of an OptimizedModel


async def observe_and_evaluate(
    settings: HonedSettings, due: dict[Key, FeedbackInputs]
) -> dict[Key, tuple[Evaluation, datetime]]:
    """Prometheus' view of each model's last interval, judged by the policy.

    One ``windows`` call (a fixed set of queries) per distinct interval, in a worker thread: it
    blocks. Prometheus failures come back as MetricsUnavailable evaluations, not exceptions.
    """
    assert settings.prometheus_url is not None  # feedback_inputs said so
    client = PrometheusClient(settings.prometheus_url, scrape_interval_s=SCRAPE_INTERVAL_S)
    by_interval: dict[float, dict[Key, FeedbackInputs]] = defaultdict(dict)
    for key, inputs in due.items():
        by_interval[inputs.slo.interval_s][key] = inputs
    judged: dict[Key, tuple[Evaluation, datetime]] = {}
    for interval_s, group in by_interval.items():
        served = {key: ModelKey(key[0], inputs.model) for key, inputs in group.items()}
        observations = await asyncio.to_thread(client.windows, served.values(), seconds=interval_s)
        at = datetime.now(UTC)
        for key, inputs in group.items():
            evaluation = evaluate(
                observations[served[key]], inputs.slo, inputs.deployment, inputs.options, inputs.state, at
            )
            judged[key] = (evaluation, at)
    return judged


def feedback_interval(spec: Any) -> float | None:
    """How often the loop judges the resource, in seconds.

    None when spec.feedback is off, or invalid (which reconcile reports).
    """
    try:
        slo = Feedback.from_spec((spec or {}).get("feedback"))
    except InputError:
        return None
    return slo.interval_s if slo.enabled else None
