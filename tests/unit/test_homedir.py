"""Runtimes' cache and settings directories when HOME is read-only (containers)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from honed.optimizer import homedir
from honed.optimizer.homedir import prepare_runtime_environment, use_writable_home, writable
from tests.fixtures.dirs import read_only_dir


@pytest.fixture(autouse=True)
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The private directories go under this test's tmp_path, which pytest cleans up."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))


def test_a_writable_home_changes_nothing(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert use_writable_home(env, cleanup=False) is None
    assert env == {"HOME": str(tmp_path)}


def test_onnx_runtime_telemetry_is_off_unless_the_user_chose(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    prepare_runtime_environment(env, cleanup=False)
    assert env == {"HOME": str(tmp_path), "ORT_DISABLE_TELEMETRY": "1"}
    chosen = {"HOME": str(tmp_path), "ORT_DISABLE_TELEMETRY": "0"}
    prepare_runtime_environment(chosen, cleanup=False)
    assert chosen["ORT_DISABLE_TELEMETRY"] == "0"


def test_a_read_only_home_moves_caches_and_settings_to_one_private_temp_dir(tmp_path: Path) -> None:
    home = read_only_dir(tmp_path)
    env = {"HOME": str(home)}
    private = use_writable_home(env, cleanup=False)
    assert private is not None and writable(private)
    assert env["HOME"] == str(private)
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR"):
        assert Path(env[var]).is_dir() and Path(env[var]).is_relative_to(private), var


def test_a_missing_home_is_not_writable_either(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "missing")}
    assert use_writable_home(env, cleanup=False) is not None
    assert use_writable_home({}, cleanup=False) is not None


def test_writable_directories_the_user_chose_and_credentials_in_the_real_home_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[default]\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    # A HOME that holds files yet takes none (a read-only mount); mode bits cannot make one for root.
    monkeypatch.setattr(homedir, "writable", lambda directory: directory != home)
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(cache)}
    assert homedir.use_writable_home(env, cleanup=False) is not None
    assert env["XDG_CACHE_HOME"] == str(cache)
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == str(home / ".aws" / "credentials")
    assert "AWS_CONFIG_FILE" not in env  # there is none to keep
