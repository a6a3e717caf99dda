"""Writing report winners into a versioned Triton model repository (no server needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from honed.errors import InputError
from honed.optimizer.artifact import META_FILE
from honed.serving.config import parse_config
from honed.serving.repository import (
    DEPLOYMENT_FILE,
    discard_version,
    live_versions,
    prune_versions,
    versions,
    write_version,
)
from honed.serving.tuning import ServingOptions
from tests.fixtures.serving_artifacts import ARTIFACT, mlp_report


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp_report(tmp_path_factory.mktemp("report"))


def test_runtime_packaging_ships_model_py_and_the_artifact(report_dir: Path, tmp_path: Path) -> None:
    written = write_version(report_dir, tmp_path)
    assert (written.model, written.version) == ("mlp", 1)
    version = tmp_path / "mlp" / "1"
    assert (version / "model.py").read_text().startswith('"""Triton python-backend model')
    assert (version / "artifact" / META_FILE).is_file() and (version / "artifact" / "model.onnx").is_file()
    record = json.loads((version / DEPLOYMENT_FILE).read_text())
    assert record["candidate"] == "onnx-fp32.onnxruntime" and record["version"] == 1
    config = parse_config((tmp_path / "mlp" / "config.pbtxt").read_text())
    assert config.backend == "python" and config.parameters["artifact"].string_value == "artifact"
    assert config.response_cache.enable and config.max_batch_size == 32


def test_native_packaging_hands_the_onnx_file_to_tritons_onnxruntime(report_dir: Path, tmp_path: Path) -> None:
    written = write_version(report_dir, tmp_path, packaging="native", model="mlp-native")
    config = parse_config(written.config_text)
    assert config.platform == "onnxruntime_onnx" and config.default_model_filename == "model.onnx"
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    assert (written.path / "model.onnx").is_file() and (written.path / META_FILE).is_file()
    assert not (written.path / "model.py").exists()


def test_every_deployment_is_a_new_version_and_failed_numbers_are_never_reused(
    report_dir: Path, tmp_path: Path
) -> None:
    first = write_version(report_dir, tmp_path)
    second = write_version(report_dir, tmp_path, options=ServingOptions(response_cache=False))
    assert (first.version, second.version) == (1, 2)
    assert second.previous_config == first.config_text
    aside = discard_version(second, "Triton said no")
    assert aside.name == "failed-2" and (aside / "failure.txt").read_text() == "Triton said no\n"
    assert (tmp_path / "mlp" / "config.pbtxt").read_text() == first.config_text
    assert live_versions(tmp_path / "mlp") == [1] and versions(tmp_path / "mlp") == [1, 2]
    assert write_version(report_dir, tmp_path).version == 3


def test_discarding_the_first_version_leaves_no_config(report_dir: Path, tmp_path: Path) -> None:
    written = write_version(report_dir, tmp_path)
    discard_version(written, "no")
    assert not (tmp_path / "mlp" / "config.pbtxt").exists()


def test_pruning_keeps_the_newest_versions(report_dir: Path, tmp_path: Path) -> None:
    for _ in range(4):
        write_version(report_dir, tmp_path)
    assert prune_versions(tmp_path / "mlp", keep=2) == [1, 2]
    assert live_versions(tmp_path / "mlp") == [3, 4]


def test_a_report_without_winner_is_refused_with_the_verdicts(tmp_path: Path) -> None:
    report = mlp_report(tmp_path / "report", winner=False)
    with pytest.raises(InputError, match=r"no accepted winner \(onnx-fp32.onnxruntime: rejected \(metric drop"):
        write_version(report, tmp_path / "repo")
    assert not (tmp_path / "repo" / "mlp").exists()


def test_a_missing_artifact_is_named(report_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text((report_dir / "report.json").read_text())
    with pytest.raises(InputError, match=f"artifact of 'onnx-fp32.onnxruntime' is missing: .*{ARTIFACT}"):
        write_version(report, tmp_path / "repo")


def test_missing_report_unknown_candidate_and_bad_names_are_refused(report_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no report at"):
        write_version(tmp_path / "nowhere", tmp_path / "repo")
    with pytest.raises(InputError, match=r"no candidate 'onnx-int8\.openvino'"):
        write_version(report_dir, tmp_path / "repo", candidate="onnx-int8.openvino")
    with pytest.raises(InputError, match="cannot name a Triton model directory"):
        write_version(report_dir, tmp_path / "repo", model="../escape")


def test_native_packaging_refuses_what_no_triton_backend_runs(report_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    shutil.copytree(report_dir, report)
    meta_path = report / ARTIFACT / META_FILE
    meta = json.loads(meta_path.read_text())
    meta.update(backend="torch", model_file="model.pt2")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="not TorchScript"):
        write_version(report, tmp_path / "repo", packaging="native")
    # The runtime packaging serves it with its own runtime.
    assert write_version(report, tmp_path / "repo", packaging="runtime").version == 1
