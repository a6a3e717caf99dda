"""``OptimizedModel.status``: written only by the operator, read by people, dashboards and GitOps tools.

Status models keep unknown keys (``StatusModel``), so fields added by other writers, such as the
feedback loop's ``lastDecision``, survive the operator's read-modify-write.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from honed.api.base import StatusModel

Phase = Literal["Pending", "Optimizing", "Deploying", "Serving", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
PoolPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
Verdict = Literal["winner", "eligible", "over-budget", "rejected", "failed"]

# Condition types the operator owns; others (SLOMet, MetricsUnavailable) belong to the feedback loop.
OPTIMIZED = "Optimized"
DEPLOYED = "Deployed"
READY = "Ready"
OWN_CONDITIONS = (OPTIMIZED, DEPLOYED, READY)


class Condition(StatusModel):
    """Kubernetes-style condition: the latest observation of one aspect of the resource."""

    type: str
    status: ConditionStatus
    reason: str = Field(description="CamelCase cause, stable for automation")
    message: str = Field("", description="what happened and what to do, for people")
    last_transition_time: str = Field(description="RFC 3339 time the status last changed")
    observed_generation: int | None = None


class CandidateSummary(StatusModel):
    """One candidate of one pool's report, as compared across pools."""

    pool: str
    name: str = Field(description="candidate id like onnx-int8.openvino")
    backend: str
    precision: str
    p50_ms: float | None = Field(None, description="median latency at batch 1")
    p99_ms: float | None = Field(None, description="p99 latency at batch 1")
    throughput: float | None = Field(None, description="best items/s over the benchmarked batch sizes")
    metric_drop: float | None = Field(None, description="metric drop against the original model")
    size_bytes: int | None = None
    cost_per_million: float | None = Field(
        None, description="price_per_hour / (3600 x throughput) x 1e6, in the pools' price unit"
    )
    speedup: float | None = Field(None, description="baseline p50 / this p50 on its pool")
    verdict: Verdict
    reason: str = ""


class PoolStatus(StatusModel):
    """The optimization Job of one target pool."""

    pool: str
    job: str = Field(description="Job name")
    phase: PoolPhase
    message: str = Field("", description="the pod's termination message, or why the pool failed or waits")
    reason: str | None = Field(
        None,
        description="why the pool failed or waits, when known: Unschedulable, ImageUnavailable, "
        "ContainerConfigError, FailedCreate, OOMKilled, DeadlineExceeded, InvalidInput, TimeBudgetExhausted",
    )
    report: str | None = Field(None, description="report.json location in the artifact store")


class ServingOverrides(StatusModel):
    """Serving settings the feedback loop changed (Retune); they win over spec.serving."""

    max_queue_delay_microseconds: int | None = Field(None, ge=0, description="dynamic batcher queue delay")
    instances: int | None = Field(None, ge=1, description="model instances per pod")
    response_cache: bool | None = Field(None, description="Triton's response cache for this model")

    def describe(self) -> str:
        """The overrides for people (events, messages), like ``max queue delay 500 us, 2 instances``."""
        parts = []
        if self.max_queue_delay_microseconds is not None:
            parts.append(f"max queue delay {self.max_queue_delay_microseconds} us")
        if self.instances is not None:
            parts.append(f"{self.instances} instance{'s' if self.instances > 1 else ''}")
        if self.response_cache is not None:
            parts.append("response cache " + ("on" if self.response_cache else "off"))
        return ", ".join(parts) or "no overrides"


class ServedConfig(StatusModel):
    """The serving settings derived from the winner's benchmark when it was selected."""

    max_batch_size: int = Field(0, ge=0, description="0: the batch axis is fixed, Triton does not batch")
    max_queue_delay_microseconds: int | None = Field(None, description="None: no dynamic batcher")
    instances: int = Field(1, ge=1)
    response_cache: bool = True


class FallbackRequest(StatusModel):
    """The feedback loop asks to serve another accepted candidate instead of the winner."""

    candidate: str
    pool: str
    replaces: str = Field(description="NAME@POOL of the winner this request is about")
    reason: str = ""
    requested_at: str


class ServingRequests(StatusModel):
    """What the feedback loop asks reconcile to apply; reconcile clears what it has applied."""

    overrides: ServingOverrides | None = Field(None, description="Retune decisions, merged")
    basis: str | None = Field(
        None, description="hash of the spec.serving fields the overrides were made against; a change drops them"
    )
    fallback: FallbackRequest | None = None


class Winner(StatusModel):
    """The selected candidate and the model version it is served as."""

    pool: str
    name: str
    backend: str
    precision: str
    device: str = "cpu"
    optimization: str = Field(
        description="the optimization run that produced it: its reports and artifacts are under optimizations/RUN"
    )
    version: int = Field(ge=1, description="Triton model version serving it")
    speedup: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    metric_drop: float | None = None
    cost_per_million: float | None = None
    report: str = Field(description="report.json location in the artifact store")
    artifact: str = Field(description="artifact directory in the artifact store")
    reason: str = Field("WinnerSelected", description="WinnerSelected | FallbackFromSLO")
    fallback_from: str | None = Field(None, description="NAME on POOL served before a fallback")
    config: ServedConfig | None = Field(None, description="serving settings derived from the benchmark")
    overrides: ServingOverrides | None = Field(None, description="feedback overrides this version was written with")


class Endpoint(StatusModel):
    """Where to send inference requests."""

    http: str
    grpc: str
    metrics: str
    model: str = Field(description="Triton model name")
    version: int


class LastOptimization(StatusModel):
    """The latest optimization run: why it started and when it ended."""

    id: str = Field(description="hash of the spec fields that shape the search")
    run: str | None = Field(
        None,
        description="this run's store key (optimizations/RUN/POOL): the id and its start time, so that "
        "re-applying a spec never overwrites an earlier run's reports; empty for runs of earlier operators",
    )
    reason: str = Field(description="Created | SpecChanged | Requested | SLOViolation | TrafficShift")
    started_at: str
    finished_at: str | None = None
    outcome: Literal["Succeeded", "Failed"] | None = None
    generation: int | None = None
    request: str | None = Field(None, description="the honed.dev/reoptimize annotation that started it")


class OptimizedModelStatus(StatusModel):
    """What the operator observed and did: optimization runs, their candidates, the winner, where it serves."""

    observed_generation: int | None = Field(None, description="metadata.generation this status describes")
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    pools: list[PoolStatus] = Field(default_factory=list)
    candidates: list[CandidateSummary] = Field(default_factory=list, description="best candidates first")
    winner: Winner | None = None
    endpoint: Endpoint | None = None
    last_optimization: LastOptimization | None = None
    serving: ServingRequests | None = Field(
        None, description="the feedback loop's Retune overrides and Fallback request for reconcile to apply"
    )
    feedback: dict[str, Any] | None = Field(
        None,
        description="the feedback loop's memory and its lastDecision with the numbers behind it",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of that type, or None when the status has none yet."""
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None
