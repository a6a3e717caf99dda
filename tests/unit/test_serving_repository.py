"""Writing report winners into a versioned Triton model repository (no server needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from honed.errors import InputError
from honed.optimizer.artifact import META_FILE
from honed.serving.config import parse_config, warmup_batch_sizes
from honed.serving.repository import (
    DEPLOYMENT_FILE,
    discard_version,
    live_versions,
    promote_version,
    prune_versions,
    served_version,
    version_config_name,
    version_config_path,
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
    # Every padded batch shape is compiled while the version loads, not by the first request of its size.
    assert [w.batch_size for w in config.model_warmup] == [1, 2, 4, 8, 16, 32]


def test_the_warmup_ladder_ends_at_the_max_batch() -> None:
    assert warmup_batch_sizes(0) == warmup_batch_sizes(1) == [1]
    assert warmup_batch_sizes(2) == [1, 2]
    assert warmup_batch_sizes(24) == [1, 2, 4, 8, 16, 24]


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
    model_dir = tmp_path / "mlp"
    first = write_version(report_dir, tmp_path)
    second = write_version(report_dir, tmp_path, options=ServingOptions(response_cache=False))
    assert (first.version, second.version) == (1, 2)
    assert not second.promoted and second.previous_config is None
    aside = discard_version(second, "Triton said no")
    assert aside.name == "failed-2" and (aside / "failure.txt").read_text() == "Triton said no\n"
    # The refused version's config went with it: no server can be pinned to version 2 any more.
    assert (aside / "config.pbtxt").read_text() == second.config_text
    assert not version_config_path(model_dir, 2).exists()
    assert (model_dir / "config.pbtxt").read_text() == first.config_text
    assert live_versions(model_dir) == [1] and versions(model_dir) == [1, 2]
    assert write_version(report_dir, tmp_path).version == 3


def test_each_version_has_its_own_config_and_config_pbtxt_names_only_the_one_known_to_load(
    report_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "mlp"
    first = write_version(report_dir, tmp_path)
    assert first.promoted, "the first version is all there is to serve"
    retuned = write_version(report_dir, tmp_path, options=ServingOptions(response_cache=False, max_batch_size=8))
    # config.pbtxt still serves version 1 with version 1's settings ...
    served = parse_config((model_dir / "config.pbtxt").read_text())
    assert list(served.version_policy.specific.versions) == [1] and served.response_cache.enable
    assert served_version(model_dir) == 1
    # ... and version 2 has its own, which names version 2 only, under the name Triton selects it by.
    own = parse_config(version_config_path(model_dir, 2).read_text())
    assert list(own.version_policy.specific.versions) == [2]
    assert not own.response_cache.enable and own.max_batch_size == 8
    assert version_config_path(model_dir, 2).name == f"{version_config_name(2)}.pbtxt" == "version-2.pbtxt"
    assert version_config_path(model_dir, 1).read_text() == first.config_text
    promote_version(retuned)
    assert served_version(model_dir) == 2
    assert (model_dir / "config.pbtxt").read_text() == retuned.config_text


def test_a_promoted_write_replaces_config_pbtxt_and_its_discard_restores_it(report_dir: Path, tmp_path: Path) -> None:
    first = write_version(report_dir, tmp_path)
    second = write_version(report_dir, tmp_path, promote=True)
    assert second.promoted and second.previous_config == first.config_text
    assert served_version(tmp_path / "mlp") == 2
    discard_version(second, "no")
    assert served_version(tmp_path / "mlp") == 1


def test_discarding_the_first_version_leaves_no_config(report_dir: Path, tmp_path: Path) -> None:
    written = write_version(report_dir, tmp_path)
    discard_version(written, "no")
    assert not (tmp_path / "mlp" / "config.pbtxt").exists()
    assert served_version(tmp_path / "mlp") is None


def test_pruning_keeps_the_newest_versions_and_the_served_one(report_dir: Path, tmp_path: Path) -> None:
    for _ in range(4):
        write_version(report_dir, tmp_path)
    model_dir = tmp_path / "mlp"
    # Versions 2-4 were written but never loaded: version 1 is what config.pbtxt serves.
    assert prune_versions(model_dir, keep=2) == [2]
    assert live_versions(model_dir) == [1, 3, 4]
    assert not version_config_path(model_dir, 2).exists() and version_config_path(model_dir, 3).exists()
    assert prune_versions(model_dir, keep=1, protect=[3]) == []


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
