"""``OptimizedModel.spec``: what a model owner asks for. The CRD schema is generated from these models."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic.config import JsonDict

from honed.api.base import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, ApiModel, first_error
from honed.api.durations import DURATION_PATTERN, parse_duration
from honed.errors import InputError

GROUP = "honed.dev"
VERSION = "v1alpha1"
KIND = "OptimizedModel"
PLURAL = "optimizedmodels"
SINGULAR = "optimizedmodel"
SHORT_NAMES = ["om"]
API_VERSION = f"{GROUP}/{VERSION}"

URI_PATTERN = r"^(s3|gs|https?|pvc|file)://.+"
MAX_URI = 2048
_CLAIM = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
# A ``..`` segment would let a pvc:// (or file://) URI leave its claim, and names nothing an
# object store needs; a pvc:// URI needs a claim name and a path inside it. The API server
# checks the same with CEL (RE2: no lookahead, so not one pattern), parse_spec with check_uri.
DOTDOT = "must not contain a '..' path segment: name the file itself, below the bucket or claim"
PVC_FORM = "a pvc:// URI is pvc://CLAIM/path/inside/the/claim, CLAIM a PersistentVolumeClaim name"
NOT_POSITIVE = "must be longer than 0s, like 90s or 20m"


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """A CRD ``x-kubernetes-validations`` entry (the API server answers 422 with ``message``)."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: JsonDict) -> JsonDict:
    """``json_schema_extra`` that puts ``rules`` (``cel`` entries) on a field or model of the CRD."""
    return {"x-kubernetes-validations": list(rules)}


URI_RULES = validations(
    cel("!self.matches('(^|/)[.][.](/|$)')", DOTDOT),
    cel(f"!self.startsWith('pvc://') || self.matches('^pvc://{_CLAIM}/[^/].*$')", PVC_FORM),
)
# Durations must be positive: a zero time budget or check interval asks for the impossible.
DURATION_RULES = validations(cel("duration(self) > duration('0s')", NOT_POSITIVE))
# The API server refuses duplicates in these lists (a 422 naming the entry), as parse_spec does.
SET: JsonDict = {"x-kubernetes-list-type": "set"}


def check_uri(uri: str) -> str:
    """The checks of ``URI_RULES``, for parse_spec (a manifest that never met an API server)."""
    if ".." in uri.split("/"):
        raise ValueError(DOTDOT)
    if uri.startswith("pvc://") and not re.fullmatch(rf"pvc://{_CLAIM}/[^/].*", uri):
        raise ValueError(PVC_FORM)
    return uri


def check_positive_duration(text: str | None) -> str | None:
    """The check of ``DURATION_RULES`` for parse_spec; None (left out) passes."""
    if text is not None and parse_duration(text) <= 0:
        raise ValueError(NOT_POSITIVE)
    return text


# Constraints inside the type: Field(pattern=...) on an optional field of an annotated type
# validates but is left out of the JSON schema, and so out of the CRD.
Uri = Annotated[str, StringConstraints(pattern=URI_PATTERN, max_length=MAX_URI), AfterValidator(check_uri)]
Duration = Annotated[
    str, StringConstraints(pattern=DURATION_PATTERN, max_length=32), AfterValidator(check_positive_duration)
]

# numpy dtype names Triton can carry; kept equal to honed.optimizer.tensors.TRITON_DTYPES (a test checks).
Dtype = Literal[
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64",
]  # fmt: skip
ModelFormat = Literal["onnx", "torchscript", "pytorch-export"]
Metric = Literal["top1", "accuracy", "cosine", "max_abs_diff", "rmse"]
Objective = Literal["latency", "throughput", "cost"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Backend = Literal["onnxruntime", "openvino", "torch", "tensorrt"]
Dimension = Annotated[int, Field(ge=-1, description="a positive size, or -1 for an axis that varies")]
BatchSize = Annotated[int, Field(ge=1, le=4096)]

# Defaults shared with the search request and the engine (``honed.api.request``): one value each.
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 8)
DEFAULT_MAX_METRIC_DROP = 0.01


ZERO_DIMENSION = "dimensions are positive or -1 (an axis that varies), never 0"


class TensorDecl(ApiModel):
    """One model input; needed when the model file does not say (TorchScript, dynamic ONNX shapes)."""

    name: str = Field(min_length=1, max_length=256, description="input name as the model knows it")
    dtype: Dtype = Field("float32", description="numpy dtype name")
    shape: list[Dimension] = Field(
        default_factory=list,
        max_length=16,
        description="dimensions, batch axis first; -1 marks an axis that varies",
        json_schema_extra=validations(cel("self.all(d, d != 0)", ZERO_DIMENSION)),
    )

    @field_validator("shape")
    @classmethod
    def _no_zero(cls, shape: list[int]) -> list[int]:
        if 0 in shape:
            raise ValueError(ZERO_DIMENSION)
        return shape


class ModelSource(ApiModel):
    """Where the trained model is and how to read it."""

    uri: Uri = Field(
        description="s3://, gs://, http(s)://, pvc://CLAIM/path or file:// location of the model file",
        json_schema_extra=URI_RULES,
    )
    format: ModelFormat = Field("onnx", description="how the file is serialized")
    credentials_secret: str | None = Field(
        None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="Secret in this namespace whose keys become the optimizer's environment "
        "(AWS_ACCESS_KEY_ID, ... for s3://)",
    )
    inputs: list[TensorDecl] = Field(
        default_factory=list,
        max_length=64,
        description="input names, dtypes and shapes; optional when the file has them",
        # One entry per input name, enforced by the API server as a map-typed list.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("inputs")
    @classmethod
    def _inputs_once(cls, inputs: list[TensorDecl]) -> list[TensorDecl]:
        seen = [t.name for t in inputs]
        for index, name in enumerate(seen):
            if name in seen[:index]:
                raise ValueError(f"input {name!r} is declared twice (entry {index}); declare each input once")
        return inputs


# Drops of these metrics are bounded (top1/accuracy: a fraction, cosine: 1 - similarity in
# [-1, 1]); a larger maximum accepts any candidate, so it is a mistake (a percentage, likely).
DROP_BOUNDS = {"top1": 1.0, "accuracy": 1.0, "cosine": 2.0}
DROP_TOO_LARGE = (
    "top1 and accuracy drops are fractions up to 1 (0.01 is one point), cosine drops are at most 2; "
    "a larger maxMetricDrop accepts anything"
)
_DROP_RULE = " && ".join(
    f"!(has(self.metric) && self.metric == '{metric}' && self.maxMetricDrop > {bound})"
    for metric, bound in DROP_BOUNDS.items()
)


class Validation(ApiModel):
    """The data and metric that decide whether a faster candidate is still the same model."""

    model_config = ConfigDict(json_schema_extra=validations(cel(_DROP_RULE, DROP_TOO_LARGE, ".maxMetricDrop")))

    data_uri: Uri | None = Field(
        None,
        json_schema_extra=URI_RULES,
        description="npz with one array per input (+ labels) for calibration and accuracy; "
        "synthesized from the input shapes when absent",
    )
    metric: Metric | None = Field(
        None, description="how outputs are compared with the original's; the engine's default when absent"
    )
    max_metric_drop: float = Field(
        DEFAULT_MAX_METRIC_DROP, ge=0, description="largest accepted metric drop against the original (larger is worse)"
    )


class Search(ApiModel):
    """What the optimizer tries and how the winner is chosen."""

    objective: Objective = Field(
        "latency",
        description="latency: lowest p50 at batch 1; throughput: most items/s; "
        "cost: lowest price per million inferences across pools",
    )
    latency_budget_ms: float | None = Field(
        None, gt=0, description="candidates whose p99 at batch 1 exceeds this are not eligible"
    )
    batch_sizes: list[BatchSize] = Field(
        default_factory=lambda: list(DEFAULT_BATCH_SIZES),
        min_length=1,
        max_length=16,
        description="batch sizes to benchmark",
        json_schema_extra=SET,
    )
    precisions: list[Precision] = Field(
        default_factory=list,
        description="precisions to try; empty = every one the pool supports",
        json_schema_extra=SET,
    )
    backends: list[Backend] = Field(
        default_factory=list, description="runtimes to try; empty = every one the pool supports", json_schema_extra=SET
    )
    time_budget: Duration = Field(
        "20m",
        description="search time per pool, like 20m or 1h30m",
        json_schema_extra=DURATION_RULES,
    )

    @field_validator("batch_sizes", "precisions", "backends")
    @classmethod
    def _each_once(cls, values: list[Any]) -> list[Any]:
        for index, value in enumerate(values):
            if value in values[:index]:
                raise ValueError(f"{value!r} is listed twice (entry {index}); list each once")
        return values

    def time_budget_seconds(self) -> float:
        """``time_budget`` in seconds."""
        return parse_duration(self.time_budget)


class Target(ApiModel):
    """A node pool (defined by the platform team in the operator's settings) to optimize on."""

    pool: str = Field(pattern=DNS_LABEL_PATTERN, max_length=40, description="pool name from the chart's values")


class DynamicBatching(ApiModel):
    """Triton's dynamic batcher; fields left out are derived from the winner's benchmark."""

    enabled: bool = Field(True, description="let Triton combine concurrent requests into batches")
    max_batch_size: BatchSize | None = Field(
        None,
        description=(
            "largest batch Triton forms, and accepts in one request; left out, the batch size that "
            "measured best (the throughput peak, or the largest within the latency budget), else the largest measured"
        ),
    )
    max_queue_delay_microseconds: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description=(
            "how long a request may wait for a batch to fill; left out, 0: requests that queue while the "
            "instance is busy form the next batch anyway"
        ),
    )


class Serving(ApiModel):
    """How the winner is served on Triton."""

    replicas: int = Field(1, ge=0, le=100, description="Triton pods")
    instances: int | None = Field(
        None, ge=1, le=64, description="model instances per pod; derived from the benchmark when absent"
    )
    dynamic_batching: DynamicBatching = Field(default_factory=DynamicBatching)
    response_cache: bool = Field(True, description="Triton's response cache for repeated requests")
    cache_size_mib: int = Field(256, ge=1, le=65536, description="response cache size per pod")


FEEDBACK_WITHOUT_SLO = (
    "feedback.enabled needs p99LatencyMs, the SLO it holds live traffic to; set it or disable feedback"
)
BUDGET_OVER_SLO = (
    "search.latencyBudgetMs is above feedback.p99LatencyMs: a winner within the budget could break the SLO "
    "at once and re-optimize forever; lower the budget to the SLO or raise the SLO"
)


class Feedback(ApiModel):
    """Live-traffic checks against the SLO (acted on by the feedback loop)."""

    # Without the SLO the loop has no latency to hold traffic to: enabling it needs p99LatencyMs.
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!has(self.enabled) || !self.enabled || has(self.p99LatencyMs)", FEEDBACK_WITHOUT_SLO, ".p99LatencyMs")
        )
    )

    enabled: bool = Field(False, description="watch Triton's metrics and re-optimize or re-tune on SLO breaks")
    p99_latency_ms: float | None = Field(None, gt=0, description="the SLO: p99 request latency")
    interval: Duration = Field(
        "1m",
        description="how often metrics are checked",
        json_schema_extra=DURATION_RULES,
    )
    cooldown: Duration = Field(
        "30m",
        description="least time between two actions",
        json_schema_extra=DURATION_RULES,
    )
    # Tuning of the loop itself: the defaults make the loop safe without being set.
    bad_windows: int = Field(2, ge=1, le=100, description="consecutive bad intervals before acting")
    max_failure_ratio: float = Field(0.01, ge=0, le=1, description="failed / all requests allowed")
    max_reoptimizations_per_day: int = Field(3, ge=0, le=100, description="re-optimizations a day")
    max_retunes: int = Field(2, ge=0, le=100, description="retunes of one version before re-optimizing")
    min_request_rate: float = Field(0.1, ge=0, description="req/s below which nothing is judged")
    cache_min_hit_ratio: float = Field(
        0.1, ge=0, le=1, description="below it, a cache whose lookups cost more than hits save goes off"
    )
    cache_probe_after: Duration = Field(
        "6h",
        description="when a cache the loop turned off is tried again",
        json_schema_extra=DURATION_RULES,
    )
    traffic_shift_factor: float = Field(
        2.0, ge=1, description="observed batch over the largest benchmarked one that re-optimizes"
    )

    @property
    def interval_s(self) -> float:
        """``interval`` in seconds."""
        return parse_duration(self.interval)

    @property
    def cooldown_s(self) -> float:
        """``cooldown`` in seconds."""
        return parse_duration(self.cooldown)

    @property
    def cache_probe_s(self) -> float:
        """``cache_probe_after`` in seconds."""
        return parse_duration(self.cache_probe_after)

    @property
    def p99_budget_us(self) -> float | None:
        """The SLO in microseconds, Triton's latency unit; None when no SLO is set."""
        return None if self.p99_latency_ms is None else self.p99_latency_ms * 1000.0

    @classmethod
    def from_spec(cls, feedback: Mapping[str, Any] | None) -> Feedback:
        """Read ``spec.feedback`` (nulls count as left out); errors name the field, as every bad input must."""
        try:
            return cls.model_validate({k: v for k, v in (feedback or {}).items() if v is not None})
        except ValidationError as exc:
            field, message = first_error(exc, "spec.feedback")
            raise InputError(
                f"{field}: {message}",
                hint="durations are written like 30s, 1m or 1h30m; ratios are between 0 and 1",
            ) from None


class OptimizedModelSpec(ApiModel):
    """A trained model to optimize on the named pools and serve on Triton."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.search) || !has(self.search.latencyBudgetMs) || !has(self.feedback) || "
                "!has(self.feedback.p99LatencyMs) || !self.feedback.enabled || "
                "self.search.latencyBudgetMs <= self.feedback.p99LatencyMs",
                BUDGET_OVER_SLO,
                ".search.latencyBudgetMs",
            )
        )
    )

    model: ModelSource
    validation: Validation = Field(default_factory=Validation)
    search: Search = Field(default_factory=Search)
    targets: list[Target] = Field(
        min_length=1,
        description="node pools to optimize on, each once",
        # The API server enforces one entry per pool with a map-typed list.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["pool"]},
    )
    serving: Serving = Field(default_factory=Serving)
    feedback: Feedback = Field(default_factory=Feedback)

    def pools(self) -> list[str]:
        """The target pool names, in the order of ``targets``."""
        return [t.pool for t in self.targets]


class SpecError(ValueError):
    """An invalid spec: ``field`` is the path in the manifest, ``message`` says what to change.

    ``reason`` becomes the Optimized condition's reason (``UnknownPool``, ``NoBackendForPool``...);
    ``str()`` of the error is ``field: message``.
    """

    def __init__(self, field: str, message: str, *, reason: str = "InvalidSpec") -> None:
        self.field = field
        self.message = message
        self.reason = reason
        super().__init__(f"{field}: {message}")


def parse_spec(raw: object) -> OptimizedModelSpec:
    """Validate a manifest's spec; raise SpecError naming the first bad field."""
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be an object with model and targets")
    try:
        spec = OptimizedModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(*first_error(exc, "spec")) from None
    pools = spec.pools()
    for index, pool in enumerate(pools):
        if pool in pools[:index]:
            raise SpecError(f"spec.targets[{index}].pool", f"pool {pool!r} is listed twice; list each pool once")
    _check_across_fields(spec)
    return spec


def _check_across_fields(spec: OptimizedModelSpec) -> None:
    """The CRD's CEL rules over several fields, for manifests that never met an API server."""
    validation, feedback, budget = spec.validation, spec.feedback, spec.search.latency_budget_ms
    bound = DROP_BOUNDS.get(validation.metric or "")
    if bound is not None and validation.max_metric_drop > bound:
        raise SpecError(
            "spec.validation.maxMetricDrop",
            f"{validation.max_metric_drop:g} is more than a {validation.metric} drop can be ({bound:g}); "
            "write it as a fraction (0.01 is one point)",
        )
    if feedback.enabled and feedback.p99_latency_ms is None:
        raise SpecError("spec.feedback.p99LatencyMs", FEEDBACK_WITHOUT_SLO)
    slo = feedback.p99_latency_ms
    if feedback.enabled and slo is not None and budget is not None and budget > slo:
        raise SpecError("spec.search.latencyBudgetMs", BUDGET_OVER_SLO)
