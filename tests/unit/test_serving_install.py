"""Finding the Triton binary, preparing its python backend, and refusing busy ports."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pytest

from honed.errors import EnvironmentProblem
from honed.serving.install import STUB, TRITON_ENV, TritonInstall, find_triton, prepare_backends
from honed.serving.server import TritonServer


def test_the_wheel_server_is_found_and_gets_a_stub_for_this_python(tmp_path: Path) -> None:
    found = find_triton()
    assert found.binary.name == "tritonserver" and found.binary.is_file()
    backends = prepare_backends(found, tmp_path)
    assert (backends / "python" / STUB).is_file()
    assert (backends / "python" / "libtriton_python.so").is_file()
    if not found.has_python_stub:  # the wheel's own directory stays untouched
        assert not (found.backends_dir / "python" / STUB).exists()


def test_a_bad_override_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(TRITON_ENV, str(tmp_path / "nothing"))
    with pytest.raises(EnvironmentProblem, match=f"{TRITON_ENV} points at .*not an executable tritonserver"):
        find_triton()


def test_no_triton_anywhere_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRITON_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentProblem, match="no tritonserver binary found") as info:
        find_triton()
    assert "make setup" in str(info.value)


def test_a_python_without_stub_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "server"
    (root / "backends" / "python").mkdir(parents=True)
    (root / "stubs" / "2.7").mkdir(parents=True)
    fake = TritonInstall(
        binary=Path(sys.executable),
        backends_dir=root / "backends",
        caches_dir=root / "caches",
        stubs_dir=root / "stubs",
    )
    with pytest.raises(EnvironmentProblem, match=r"no stub for Python 3\.\d+ \(stubs for: 2\.7\)"):
        prepare_backends(fake, tmp_path / "work")


def test_a_port_in_use_is_refused_before_the_server_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = TritonServer(tmp_path, http_port=port, grpc_port=0, metrics_port=0)
        with pytest.raises(EnvironmentProblem, match=f"port {port} on 127.0.0.1 is in use"):
            server.start()
    assert not server.running()


def test_the_server_environment_matches_this_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sysconfig

    from honed.serving.server import _server_environment

    monkeypatch.chdir(tmp_path)
    found = find_triton()
    env = _server_environment(found)
    paths = env["PYTHONPATH"].split(":")
    assert Path(paths[0], "honed", "serving", "server.py").is_file() and paths[1] == str(tmp_path)
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    libraries = env["LD_LIBRARY_PATH"].split(":")
    assert all(str(lib) in libraries for lib in found.lib_dirs)
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert libraries[0] == sysconfig.get_config_var("LIBDIR")
