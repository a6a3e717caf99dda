"""The search request: what to search and how, with every default defined once.

``SearchOptions`` holds the knobs of a search (objective, budget, batch sizes, precisions...)
and their defaults. Two things extend it: ``OptimizeRequest``, the optimizer Job's input
(``honed optimize --request request.json --out STORE_URI``, wire schema ``honed.request/v1``,
built by the operator from the spec and the pool), and the engine's
``honed.optimizer.options.OptimizeOptions``, which the CLI flags and a request both produce.
The CRD's defaults for the same knobs (``honed.api.spec``) are the constants below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from honed.api.spec import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MAX_METRIC_DROP,
    Backend,
    Dtype,
    Metric,
    ModelFormat,
    Precision,
)
from honed.errors import InputError

REQUEST_SCHEMA = "honed.request/v1"

# Inside one pool the price is fixed, so the cost objective ranks like throughput there: the
# engine knows these two, the operator's spec adds cost.
EngineObjective = Literal["latency", "throughput"]
DEFAULT_PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
DEFAULT_TIME_BUDGET_S = 600.0


class SearchOptions(BaseModel):
    """The knobs of one search and their defaults; a request and the engine's options extend it."""

    metric: Metric | None = Field(None, description="None = the engine's default for the data")
    max_metric_drop: float = Field(DEFAULT_MAX_METRIC_DROP, ge=0)
    objective: EngineObjective = "latency"
    latency_budget_ms: float | None = Field(None, gt=0)
    batch_sizes: list[int] = Field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    precisions: list[Precision] = Field(default_factory=lambda: list(DEFAULT_PRECISIONS))
    backends: list[Backend] = Field(default_factory=list, description="empty = all the device supports")
    time_budget_s: float = Field(DEFAULT_TIME_BUDGET_S, gt=0)
    device: Literal["cpu", "cuda"] = "cpu"

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 for b in value):
            raise ValueError("batch sizes must be positive integers, e.g. 1,8")
        return sorted(set(value))

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one precision")
        return value

    def search_fields(self) -> dict[str, Any]:
        """The knobs alone, as keyword arguments for another ``SearchOptions``."""
        return {name: getattr(self, name) for name in SearchOptions.model_fields}


class RequestTensor(BaseModel):
    """One input as ``spec.model.inputs`` declares it, for models whose file does not say."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: Dtype = "float32"
    shape: list[int] = Field(default_factory=list, description="-1 marks an axis that varies")


class RequestModel(BaseModel):
    """The model to optimize: its URI, format and declared inputs."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="file://, s3://, gs://, http(s):// (pvc:// is mounted and given as file://)")
    format: ModelFormat = "onnx"
    inputs: list[RequestTensor] = Field(default_factory=list)


class OptimizeRequest(SearchOptions):
    """Everything ``honed optimize`` needs besides ``--out``; keys are a contract with the engine.

    A field left out of the JSON takes the ``SearchOptions`` default.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=REQUEST_SCHEMA, alias="schema")
    model: RequestModel
    data_uri: str | None = Field(None, description="validation/calibration npz; None = synthesize")
    pool: str | None = Field(None, description="the node pool the Job runs on, for the report")
    threads: int | None = Field(None, ge=1, description="CPU threads; None = the container's CPUs")

    def write(self, path: Path) -> None:
        """Write the request as the JSON ``load_request`` reads back."""
        path.write_text(self.to_json() + "\n")

    def model_path(self) -> str:
        """file:// URIs become paths; other URIs (s3://, http(s)://) are left for the engine to fetch."""
        return _path_or_uri(self.model.uri)

    def data_path(self) -> str | None:
        """Like ``model_path`` for the data; None when the engine is to synthesize it."""
        return None if self.data_uri is None else _path_or_uri(self.data_uri)

    def to_json(self) -> str:
        """The wire form: aliases (``schema``), no nulls, so unset fields take the engine's defaults."""
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)


def _path_or_uri(uri: str) -> str:
    return uri.removeprefix("file://") if uri.startswith("file:///") else uri


def load_request(path: Path) -> OptimizeRequest:
    """Read a request file; errors name the file and the bad field."""
    if not path.is_file():
        raise InputError(f"no request file at {path}", hint="pass the JSON the operator mounted, or a path")
    try:
        request = OptimizeRequest.model_validate_json(path.read_text())
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        raise InputError(
            f"{path}: {where}: {error['msg']}", hint="write it as honed.api.request.OptimizeRequest"
        ) from None
    if request.schema_ != REQUEST_SCHEMA:
        raise InputError(f"{path} has schema {request.schema_!r}, expected {REQUEST_SCHEMA!r}")
    return request
