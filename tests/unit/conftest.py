"""Unit tests run with every warning as an error: a new one is fixed where it comes from, or
filtered by message and module in pyproject.toml (those filters still apply here), never ignored
by category. The other suites show warnings in pytest's summary."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # One mark: its filters apply in order, so pyproject's specific ones override "error".
    strict = pytest.mark.filterwarnings("error", *config.getini("filterwarnings"))
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(strict)
