"""The optimizer Job's input: ``honed optimize --request request.json --out STORE_URI``.

The operator builds it from the spec and the pool; ``honed optimize`` reads it with
``load_request``. The fields mirror the CLI options so a request reproduces a local run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from honed.api.spec import Backend, Dtype, Metric, ModelFormat, Precision
from honed.errors import InputError

REQUEST_SCHEMA = "honed.request/v1"


class RequestTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: Dtype = "float32"
    shape: list[int] = Field(default_factory=list, description="-1 marks an axis that varies")


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="file://, s3://, gs://, http(s):// (pvc:// is mounted and given as file://)")
    format: ModelFormat = "onnx"
    inputs: list[RequestTensor] = Field(default_factory=list)


class OptimizeRequest(BaseModel):
    """Everything ``honed optimize`` needs besides ``--out``; keys are a contract with the engine.

    A field left None is left to the engine's default for the device (written without it).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=REQUEST_SCHEMA, alias="schema")
    model: RequestModel
    data_uri: str | None = Field(None, description="validation/calibration npz; None = synthesize")
    metric: Metric | None = Field(None, description="None = the engine's default for the data")
    max_metric_drop: float = 0.01
    # Inside one pool the price is fixed, so the cost objective ranks like throughput there.
    objective: Literal["latency", "throughput"] = "latency"
    latency_budget_ms: float | None = None
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8])
    precisions: list[Precision] | None = Field(None, description="None = all the device supports")
    backends: list[Backend] | None = Field(None, description="None = all the device supports")
    time_budget_s: float = 1200.0
    device: Literal["cpu", "cuda"] = "cpu"
    pool: str | None = Field(None, description="the node pool the Job runs on, for the report")
    threads: int | None = Field(None, description="CPU threads; None = the container's CPUs")

    def write(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    def engine_fields(self) -> dict[str, Any]:
        """The request as ``honed optimize`` option names (its OptimizeOptions fields).

        file:// URIs become paths; other URIs (s3://, http(s)://) are left for the engine to fetch.
        """
        fields: dict[str, Any] = {
            "model": _path_or_uri(self.model.uri),
            "inputs": [tensor.model_dump() for tensor in self.model.inputs],
            "max_metric_drop": self.max_metric_drop,
            "objective": self.objective,
            "batch_sizes": list(self.batch_sizes),
            "time_budget_s": self.time_budget_s,
            "device": self.device,
        }
        optional = {
            "data": None if self.data_uri is None else _path_or_uri(self.data_uri),
            "metric": self.metric,
            "latency_budget_ms": self.latency_budget_ms,
            "precisions": self.precisions,
            "backends": self.backends,
            "threads": self.threads,
        }
        fields.update({key: value for key, value in optional.items() if value is not None})
        return fields

    def to_json(self) -> str:
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
