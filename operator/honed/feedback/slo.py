"""The feedback settings of one OptimizedModel (``spec.feedback``) as typed values.

Keys are the manifest's camelCase names (``honed.api.spec.Feedback``); durations are seconds or
manifest durations (``30s``, ``1m``, ``1h30m``). Fields the manifest leaves out (or sets to
null) get the defaults here, which make the loop safe without being set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from honed.api.durations import Seconds
from honed.errors import InputError


class FeedbackSLO(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    enabled: bool = True
    p99_latency_ms: float | None = Field(default=None, gt=0, description="end-to-end p99 inside Triton")
    max_failure_ratio: float = Field(default=0.01, ge=0, le=1, description="failed / all requests")
    interval_s: Seconds = Field(default=60.0, alias="interval", description="one evaluation per interval")
    cooldown_s: Seconds = Field(default=1800.0, alias="cooldown", description="no new action before")
    bad_windows: int = Field(default=2, ge=1, description="consecutive bad windows before acting")
    max_reoptimizations_per_day: int = Field(default=3, ge=0)
    max_retunes: int = Field(default=2, ge=0, description="retunes of one deployment before re-optimizing")
    min_request_rate: float = Field(default=0.1, ge=0, description="req/s below which a window is idle")
    cache_min_hit_ratio: float = Field(default=0.1, ge=0, le=1)
    cache_probe_s: Seconds = Field(
        default=6 * 3600.0, alias="cacheProbeAfter", description="turn a cache the loop disabled back on"
    )
    traffic_shift_factor: float = Field(
        default=2.0, ge=1, description="observed p90 batch over the largest benchmarked one"
    )

    @property
    def p99_budget_us(self) -> float | None:
        return None if self.p99_latency_ms is None else self.p99_latency_ms * 1000.0

    @classmethod
    def from_spec(cls, feedback: Mapping[str, Any] | None) -> FeedbackSLO:
        """Read ``spec.feedback``; errors name the field, as every bad input must."""
        try:
            return cls.model_validate({k: v for k, v in (feedback or {}).items() if v is not None})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "feedback"
            raise InputError(
                f"spec.feedback.{field}: {first['msg']}",
                hint="durations are written like 30s, 1m or 1h30m; ratios are between 0 and 1",
            ) from None
