"""``OptimizedModel.spec``: what a model owner asks for. The CRD schema is generated from these models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator

from honed.api.base import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, ApiModel, first_error
from honed.api.durations import DURATION_PATTERN, parse_duration

GROUP = "honed.dev"
VERSION = "v1alpha1"
KIND = "OptimizedModel"
PLURAL = "optimizedmodels"
SINGULAR = "optimizedmodel"
SHORT_NAMES = ["om"]
API_VERSION = f"{GROUP}/{VERSION}"

URI_PATTERN = r"^(s3|gs|https?|pvc|file)://.+"

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


class TensorDecl(ApiModel):
    """One model input; needed when the model file does not say (TorchScript, dynamic ONNX shapes)."""

    name: str = Field(min_length=1, description="input name as the model knows it")
    dtype: Dtype = Field("float32", description="numpy dtype name")
    shape: list[Dimension] = Field(
        default_factory=list, description="dimensions, batch axis first; -1 marks an axis that varies"
    )

    @field_validator("shape")
    @classmethod
    def _no_zero(cls, shape: list[int]) -> list[int]:
        if 0 in shape:
            raise ValueError("dimensions are positive or -1 (an axis that varies), never 0")
        return shape


class ModelSource(ApiModel):
    """Where the trained model is and how to read it."""

    uri: str = Field(
        pattern=URI_PATTERN,
        description="s3://, gs://, http(s)://, pvc://CLAIM/path or file:// location of the model file",
    )
    format: ModelFormat = Field("onnx", description="how the file is serialized")
    credentials_secret: str | None = Field(
        None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Secret in this namespace whose keys become the optimizer's environment "
        "(AWS_ACCESS_KEY_ID, ... for s3://)",
    )
    inputs: list[TensorDecl] = Field(
        default_factory=list, description="input names, dtypes and shapes; optional when the file has them"
    )


class Validation(ApiModel):
    """The data and metric that decide whether a faster candidate is still the same model."""

    data_uri: str | None = Field(
        None,
        pattern=URI_PATTERN,
        description="npz with one array per input (+ labels) for calibration and accuracy; "
        "synthesized from the input shapes when absent",
    )
    metric: Metric | None = Field(
        None, description="how outputs are compared with the original's; the engine's default when absent"
    )
    max_metric_drop: float = Field(
        0.01, ge=0, description="largest accepted metric drop against the original (larger is worse)"
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
        default_factory=lambda: [1, 8], min_length=1, description="batch sizes to benchmark"
    )
    precisions: list[Precision] = Field(
        default_factory=list, description="precisions to try; empty = every one the pool supports"
    )
    backends: list[Backend] = Field(
        default_factory=list, description="runtimes to try; empty = every one the pool supports"
    )
    time_budget: str = Field("20m", pattern=DURATION_PATTERN, description="search time per pool, like 20m or 1h30m")

    def time_budget_seconds(self) -> float:
        return parse_duration(self.time_budget)


class Target(ApiModel):
    """A node pool (defined by the platform team in the operator's settings) to optimize on."""

    pool: str = Field(pattern=DNS_LABEL_PATTERN, max_length=40, description="pool name from the chart's values")


class DynamicBatching(ApiModel):
    """Triton's dynamic batcher; fields left out are derived from the winner's benchmark."""

    enabled: bool = Field(True, description="let Triton combine concurrent requests into batches")
    max_batch_size: BatchSize | None = Field(None, description="largest batch Triton forms")
    max_queue_delay_microseconds: int | None = Field(
        None, ge=0, le=10_000_000, description="how long a request may wait for a batch to fill"
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


class Feedback(ApiModel):
    """Live-traffic checks against the SLO (acted on by the feedback loop)."""

    enabled: bool = Field(False, description="watch Triton's metrics and re-optimize or re-tune on SLO breaks")
    p99_latency_ms: float | None = Field(None, gt=0, description="the SLO: p99 request latency")
    interval: str = Field("1m", pattern=DURATION_PATTERN, description="how often metrics are checked")
    cooldown: str = Field("30m", pattern=DURATION_PATTERN, description="least time between two actions")
    # Tuning of the loop itself; left out, honed.feedback.slo.FeedbackSLO's defaults apply.
    bad_windows: int | None = Field(None, ge=1, le=100, description="consecutive bad intervals before acting (2)")
    max_failure_ratio: float | None = Field(None, ge=0, le=1, description="failed / all requests allowed (0.01)")
    max_reoptimizations_per_day: int | None = Field(None, ge=0, le=100, description="re-optimizations a day (3)")
    max_retunes: int | None = Field(None, ge=0, le=100, description="retunes of one version first (2)")
    min_request_rate: float | None = Field(None, ge=0, description="req/s below which nothing is judged (0.1)")
    cache_min_hit_ratio: float | None = Field(
        None, ge=0, le=1, description="below it, a cache whose lookups cost more than hits save goes off (0.1)"
    )
    cache_probe_after: str | None = Field(
        None, pattern=DURATION_PATTERN, description="when a cache the loop turned off is tried again (6h)"
    )
    traffic_shift_factor: float | None = Field(
        None, ge=1, description="observed batch over the largest benchmarked one that re-optimizes (2)"
    )


class OptimizedModelSpec(ApiModel):
    """A trained model to optimize on the named pools and serve on Triton."""

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
        return [t.pool for t in self.targets]


class SpecError(ValueError):
    """An invalid spec: ``field`` is the path in the manifest, ``message`` says what to change."""

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
    return spec
