"""The report every other part reads: ``report.json`` with schema ``honed.report/v1``.

Keys here are a contract with serving, the operator and external tools; add, never rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from honed.api.request import DEFAULT_TIME_BUDGET_S, EngineObjective
from honed.api.spec import DEFAULT_BATCH_SIZES, DEFAULT_MAX_METRIC_DROP
from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec

SCHEMA = "honed.report/v1"
REPORT_FILE = "report.json"

Status = Literal["accepted", "rejected", "failed"]


class Latency(BaseModel):
    """Latency percentiles in milliseconds for one batch size."""

    p50: float
    p90: float
    p99: float


class MetricResult(BaseModel):
    """A candidate's metric on the validation data and its drop against the original.

    ``drop`` is oriented so that larger is worse for every metric (for top1 it is the lost
    accuracy, for cosine ``1 - similarity``, for the distance metrics the distance itself).
    """

    name: str
    value: float
    drop: float
    reference: float | None = None
    # The input whose zeros marked padded positions the comparison left out (per-position outputs only).
    masked_by: str | None = None


class Candidate(BaseModel):
    """One candidate as measured: status and reason, latency and throughput by batch size, metric, size, speedup."""

    name: str = Field(description="backend-neutral id like onnx-int8.openvino")
    backend: str
    precision: str
    variant: str = ""
    device: str = "cpu"
    status: Status
    reason: str = ""
    latency_ms: Latency | None = Field(default=None, description="at batch 1")
    latency_by_batch_ms: dict[str, Latency] = Field(default_factory=dict)
    throughput: dict[str, float] = Field(default_factory=dict, description="batch size -> items/s")
    metric: MetricResult | None = None
    size_bytes: int | None = None
    peak_rss_bytes: int | None = None
    peak_gpu_bytes: int | None = None
    build_seconds: float | None = None
    speedup: float | None = Field(default=None, description="baseline p50 / this p50 at batch 1")
    settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="how it ran where that changes its speed or numerics (module, mode, threads, TF32, "
        "cudnn.benchmark...); for the baseline, the settings every speedup is measured against",
    )
    artifact: str | None = Field(default=None, description="directory relative to the report")
    repro: str = ""

    def best_throughput(self) -> float:
        """Items/s at its fastest batch size (0.0 when none was timed)."""
        return max(self.throughput.values(), default=0.0)


class Skipped(BaseModel):
    """A backend or precision that was not tried, with why (missing runtime, CPU lacks bf16...)."""

    name: str
    reason: str


class DeviceInfo(BaseModel):
    """The machine the search ran on: CPU, relevant flags, CPU limit, GPU, load average."""

    cpu: str
    flags: list[str] = Field(default_factory=list)
    threads: int
    cpus: int | None = Field(default=None, description="CPUs the run may use: affinity mask capped by the cgroup quota")
    cpu_limit: str | None = Field(default=None, description="where that count comes from")
    gpu: str | None = None
    load_average: list[float] = Field(default_factory=list)
    timing_load: list[float] = Field(
        default_factory=list,
        description="1-minute load average just before and just after the candidates were timed",
    )


class ModelInfo(BaseModel):
    """The model as searched: source, format, input and output specs, whether its batch size is fixed."""

    source: str
    format: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batch: Literal["dynamic", "fixed"] = "dynamic"
    fixed_batch_size: int | None = None
    name: str = "model"


class DataInfo(BaseModel):
    """The validation data: from a file or synthesized, sample count, whether it has labels."""

    source: Literal["file", "synthesized"]
    path: str | None = None
    samples: int
    labels: bool = False


class SearchSettings(BaseModel):
    """The search as it ran (batch sizes as timed, the metric as resolved); defaults read old reports."""

    objective: EngineObjective = "latency"
    latency_budget_ms: float | None = None
    batch_sizes: list[int] = Field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    precisions: list[str] = Field(default_factory=list)
    backends: list[str] = Field(default_factory=list)
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    metric: str = "top1"
    max_metric_drop: float = DEFAULT_MAX_METRIC_DROP


class Report(BaseModel):
    """``report.json``: the search's settings, every candidate, what was skipped, the winner and notes."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: str = Field(default=SCHEMA, alias="schema")
    honed_version: str
    created_at: str
    duration_s: float
    model: ModelInfo
    device: DeviceInfo
    data: DataInfo
    settings: SearchSettings
    baseline: Candidate
    candidates: list[Candidate]
    skipped: list[Skipped] = Field(default_factory=list)
    winner: str | None = None
    notes: list[str] = Field(default_factory=list)

    def candidate(self, name: str) -> Candidate:
        """The candidate called ``name``; KeyError when there is none."""
        for cand in self.candidates:
            if cand.name == name:
                return cand
        raise KeyError(name)

    def winner_candidate(self) -> Candidate | None:
        """The winning candidate, or None when no candidate met the constraints."""
        return None if self.winner is None else self.candidate(self.winner)

    def accepted(self) -> list[Candidate]:
        """The candidates that passed the accuracy gate."""
        return [c for c in self.candidates if c.status == "accepted"]

    def write(self, out_dir: Path) -> Path:
        """Write ``report.json`` into ``out_dir``; returns its path."""
        path = out_dir / REPORT_FILE
        path.write_text(self.model_dump_json(by_alias=True, indent=2) + "\n")
        return path


def load_report(path: Path) -> Report:
    """Read a report from a file or a directory holding ``report.json``; errors name the file."""
    if path.is_dir():
        path = path / REPORT_FILE
    if not path.is_file():
        raise InputError(f"no report at {path}", hint="run `honed optimize MODEL --out DIR` first")
    try:
        report = Report.model_validate_json(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path} is not a honed report: {exc}".splitlines()[0]) from None
    if report.schema_ != SCHEMA:
        raise InputError(f"{path} has schema {report.schema_!r}, expected {SCHEMA!r}")
    return report
