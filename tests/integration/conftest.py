from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.models import digits_onnx


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return digits_onnx(tmp_path_factory.mktemp("digits"))
