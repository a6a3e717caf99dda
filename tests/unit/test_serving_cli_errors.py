"""`honed serve` refuses bad input with one clear message and a non-zero exit, writing nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from honed.serving.cli import main
from honed.serving.install import TRITON_ENV
from tests.fixtures.serving_artifacts import mlp_report


def run_main(*args: str | Path) -> int:
    return main([str(a) for a in ("serve", *args)])


def test_a_report_without_winner_exits_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_main(mlp_report(tmp_path / "r", winner=False), "--repository", tmp_path / "repo")
    err = capsys.readouterr().err
    assert code == 2 and "has no accepted winner" in err and "fix:" in err and "Traceback" not in err


def test_a_missing_artifact_exits_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = mlp_report(tmp_path / "r")
    for item in (report / "artifacts").rglob("*"):
        if item.is_file():
            item.unlink()
    code = run_main(report, "--repository", tmp_path / "repo")
    assert code == 2 and "artifact of 'onnx-fp32.onnxruntime' is missing" in capsys.readouterr().err


def test_a_missing_triton_binary_exits_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRITON_ENV, str(tmp_path / "no-such-tritonserver"))
    code = run_main(mlp_report(tmp_path / "r"), "--repository", tmp_path / "repo")
    assert code == 3 and "not an executable tritonserver" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "mlp").exists()


def test_a_port_in_use_exits_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = run_main(mlp_report(tmp_path / "r"), "--repository", tmp_path / "repo", "--http-port", str(port))
    assert code == 3 and f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "mlp").exists()


def test_out_of_range_numbers_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = mlp_report(tmp_path / "r")
    assert run_main(report, "--repository", tmp_path / "repo", "--grpc-port", "70000") == 2
    assert "--grpc-port 70000 is not a port" in capsys.readouterr().err
    assert run_main(report, "--repository", tmp_path / "repo", "--instances", "0") == 2
    assert "--instances 0 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "mlp").exists()
