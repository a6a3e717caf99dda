"""The engine's options for one run: one typed model that the CLI flags and a request both produce.

The search knobs and their defaults are ``honed.api.request.SearchOptions``; this adds what only
a local run has (paths, input shapes, measurement settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from pydantic import Field, field_validator

from honed.api.request import EngineObjective, OptimizeRequest, SearchOptions
from honed.api.spec import Precision
from honed.optimizer.machine import default_threads
from honed.optimizer.tensors import TensorSpec

PRECISIONS: tuple[str, ...] = get_args(Precision)
OBJECTIVES: tuple[str, ...] = get_args(EngineObjective)


class OptimizeOptions(SearchOptions):
    """The engine's options: the search request's knobs plus what a run sets locally.

    Built from the CLI's flags or from an operator Job's request (``from_request``); a field left out
    takes its default, defined here or, for the search knobs, in ``honed.api.request.SearchOptions``.
    """

    model: str
    # A path, or a URI the CLI fetches first: a Path would fold s3://b/k into s3:/b/k.
    data: str | None = None
    out: Path = Path("honed-out")
    inputs: list[TensorSpec] = Field(default_factory=list)
    threads: int = Field(default_factory=default_threads, ge=1)
    max_samples: int = Field(default=500, ge=1)
    synthetic_samples: int = Field(default=64, ge=1)
    rounds: int = Field(default=3, ge=1)
    measure_seconds: float = Field(default=1.5, gt=0, description="timed seconds per candidate and batch size")
    exhaustive: bool = Field(default=False, description="build every candidate, even those measured figures rule out")

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value: object) -> object:  # before the Literal check: our message, not pydantic's
        if value not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
        return value

    @field_validator("precisions", mode="before")
    @classmethod
    def _known_precisions(cls, value: object) -> object:
        if isinstance(value, list) and (not value or any(p not in PRECISIONS for p in value)):
            raise ValueError(f"precisions must be among {', '.join(PRECISIONS)} (got {value})")
        return value

    @classmethod
    def from_request(cls, request: OptimizeRequest, **local: Any) -> OptimizeOptions:
        """The run a request asks for; ``local`` adds what the request does not carry (``out``...).

        Only the request's own fields are taken (defaults included): a request describes the
        whole search, so a flag on the command line cannot half-change it.
        """
        fields: dict[str, Any] = {
            **local,
            **request.search_fields(),
            "model": request.model_path(),
            "inputs": [tensor.model_dump() for tensor in request.model.inputs],
            "data": request.data_path(),
        }
        if request.threads is not None:
            fields["threads"] = request.threads
        return cls.model_validate(fields)
