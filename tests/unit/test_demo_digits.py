"""The demo reads its cache directory when it needs it, not when it is imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from honed.demo import digits


def test_the_cache_directory_follows_the_environment_after_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HONED_DEMO_DIR", raising=False)
    assert digits.cache_dir() == digits.DEFAULT_CACHE
    monkeypatch.setenv("HONED_DEMO_DIR", str(tmp_path))
    assert digits.cache_dir() == tmp_path
