"""GPU tests: marked ``gpu`` and skipped, with the reason, wherever torch sees no CUDA device."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from honed.optimizer.gpu_timing import cuda_unavailable_reason

if TYPE_CHECKING:
    from tiny_models import Exported, ExportedModel


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    reason = None
    for item in items:
        if here not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.gpu)
        if reason is None:
            reason = cuda_unavailable_reason() or ""
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"needs an NVIDIA GPU with CUDA: {reason}"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """kind -> (program path, calibration path, inputs, outputs), exported once per session."""
    from tiny_models import export

    cache: dict[str, ExportedModel] = {}

    def get(kind: str) -> ExportedModel:
        if kind not in cache:
            cache[kind] = export(kind, tmp_path_factory.mktemp(kind))
        return cache[kind]

    return get
