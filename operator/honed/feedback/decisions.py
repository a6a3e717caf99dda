"""What the policy can decide, each with the reason and the numbers that drove it.

The controller applies a decision: Retune writes a new config version of the same artifact,
Reoptimize starts an optimization whose benchmark uses ``batch_sizes`` and ``concurrency``,
Fallback deploys the named runner-up. Keep changes nothing. Serialized (camelCase) into
``status.feedback.lastDecision`` and summarized in the Kubernetes Event.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Number = float | int | str | bool | None


class _Decision(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    reason: str = Field(description="one sentence a person can act on")
    numbers: dict[str, Number] = Field(default_factory=dict, description="the values that drove it")

    def summary(self) -> str:
        """One line for the Event and ``lastDecision.message``: the action, its settings, the reason."""
        return self.reason


class Keep(_Decision):
    """Change nothing; ``reason`` says why (healthy, too little traffic, cooling down...)."""

    action: Literal["Keep"] = "Keep"


class Retune(_Decision):
    """Change serving settings of the current artifact; None leaves a setting as it is."""

    action: Literal["Retune"] = "Retune"
    max_queue_delay_us: int | None = None
    instance_count: int | None = None
    response_cache: bool | None = None

    def summary(self) -> str:
        """``retune (max queue delay 500 us, 2 instances): REASON``; only the settings it changes."""
        changes = []
        if self.max_queue_delay_us is not None:
            changes.append(f"max queue delay {self.max_queue_delay_us} us")
        if self.instance_count is not None:
            changes.append(f"{self.instance_count} instances")
        if self.response_cache is not None:
            changes.append("response cache " + ("on" if self.response_cache else "off"))
        return f"retune ({', '.join(changes)}): {self.reason}"


class Reoptimize(_Decision):
    """Search again, benchmarking what live traffic looks like instead of the defaults."""

    action: Literal["Reoptimize"] = "Reoptimize"
    trigger: Literal["SLOViolation", "TrafficShift"]
    batch_sizes: list[int] = Field(description="observed batch-size profile to benchmark")
    concurrency: int = Field(ge=1, description="observed requests in flight to benchmark under")

    def summary(self) -> str:
        """The trigger and the traffic profile the new search benchmarks, then the reason."""
        return (
            f"re-optimize ({self.trigger}, batch sizes {self.batch_sizes}, concurrency "
            f"{self.concurrency}): {self.reason}"
        )


class Fallback(_Decision):
    """Serve the runner-up (possibly from another pool) instead of the winner."""

    action: Literal["Fallback"] = "Fallback"
    candidate: str
    pool: str

    def summary(self) -> str:
        """The candidate and pool served next, then the reason."""
        return f"fall back to {self.candidate} on {self.pool or 'the same pool'}: {self.reason}"


Decision = Annotated[Keep | Retune | Reoptimize | Fallback, Field(discriminator="action")]
