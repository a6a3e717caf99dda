"""The developer tooling agrees with itself."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTEST = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]


def test_no_warning_filter_ignores_a_whole_category() -> None:
    for entry in PYTEST.get("filterwarnings", []):
        action, message, _category, module = [*entry.split(":"), "", "", ""][:4]
        assert action != "ignore" or message or module, f"{entry!r} ignores a whole category"


def test_every_test_has_a_timeout() -> None:
    assert PYTEST["timeout"] > 0, "pytest-timeout's limit per test (a module may set a larger one)"
