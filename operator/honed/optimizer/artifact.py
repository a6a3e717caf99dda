"""A candidate's deployable artifact: model files plus ``honed-artifact.json`` saying how to run them.

The same metadata drives the engine's measurement workers and Triton's python-backend
``model.py``, so what was measured is what gets served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field

from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec

ARTIFACT_SCHEMA = "honed.artifact/v1"
META_FILE = "honed-artifact.json"


class ArtifactMeta(BaseModel):
    """``honed-artifact.json``: which runtime runs the artifact's model file, at what precision, with which options."""

    schema_: str = Field(default=ARTIFACT_SCHEMA, alias="schema")
    backend: str
    precision: str
    variant: str = ""
    device: str = "cpu"
    model_file: str = Field(description="main file, relative to the artifact directory")
    options: dict[str, Any] = Field(default_factory=dict)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    model_config = {"populate_by_name": True}

    def write(self, directory: Path) -> None:
        """Write this metadata into ``directory`` as ``honed-artifact.json``."""
        (directory / META_FILE).write_text(self.model_dump_json(by_alias=True, indent=2) + "\n")


def read_meta(directory: Path) -> ArtifactMeta:
    """The metadata of the artifact in ``directory``; InputError when it holds none."""
    path = directory / META_FILE
    if not path.is_file():
        raise InputError(f"{directory} holds no {META_FILE}", hint="point at an artifact written by honed")
    return ArtifactMeta.model_validate_json(path.read_text())


def artifact_size(directory: Path) -> int:
    """Bytes of the artifact's files, its metadata file excluded."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and p.name != META_FILE)


class Runner(Protocol):
    """A loaded model: feeds by input name in, outputs in ``meta.outputs`` order out."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs of one call, in ``meta.outputs`` order."""


def load_runner(directory: Path, *, threads: int | None = None) -> Runner:
    """Load the artifact in ``directory`` with its own runtime (imported only now)."""
    from honed.optimizer.backends import backend_module

    meta = read_meta(directory)
    try:
        module = backend_module(meta.backend, meta.device)
    except (KeyError, ImportError):
        raise InputError(
            f"artifact {directory} needs backend {meta.backend!r} on {meta.device}, "
            "which this installation does not have"
        ) from None
    runner: Runner = module.load(meta, directory, threads)
    return runner
