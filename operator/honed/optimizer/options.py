"""Typed options of one optimization run, shared by the CLI, ``--request`` files and the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator

from honed.optimizer.machine import default_threads
from honed.optimizer.tensors import TensorSpec

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Within one run the price is fixed, so cost ranks like throughput; only the operator needs it.
EngineObjective = Literal["latency", "throughput"]
OBJECTIVES: tuple[str, ...] = get_args(EngineObjective)


class OptimizeOptions(BaseModel):
    model: str
    data: Path | None = None
    metric: str | None = None
    max_metric_drop: float = Field(default=0.01, ge=0)
    objective: EngineObjective = "latency"
    latency_budget_ms: float | None = Field(default=None, gt=0)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8])
    precisions: list[str] = Field(default_factory=lambda: ["fp32", "bf16", "int8"])
    backends: list[str] = Field(default_factory=list)
    time_budget_s: float = Field(default=600.0, gt=0)
    out: Path = Path("honed-out")
    inputs: list[TensorSpec] = Field(default_factory=list)
    threads: int = Field(default_factory=default_threads, ge=1)
    device: str = "cpu"
    max_samples: int = Field(default=500, ge=1)
    synthetic_samples: int = Field(default=64, ge=1)
    rounds: int = Field(default=3, ge=1)
    measure_seconds: float = Field(default=1.5, gt=0, description="timed seconds per candidate and batch size")

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value: object) -> object:  # before the Literal check: our message, not pydantic's
        if value not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 for b in value):
            raise ValueError("batch sizes must be positive integers, e.g. 1,8")
        return sorted(set(value))

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in PRECISIONS]
        if unknown or not value:
            raise ValueError(f"precisions must be among {', '.join(PRECISIONS)} (got {value})")
        return value
