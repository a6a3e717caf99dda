"""Writing the winner into the model repository: local and fsspec stores, idempotent, numbered."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

from honed.artifacts import ArtifactStore
from honed.controller.reconcile_data import RepositoryWrite
from honed.controller.settings import HonedSettings, Pool
from honed.controller.stored_repository import repository_state, serving_options, write_repository
from honed.errors import HonedError
from honed.serving.config import parse_config
from honed.serving.repository import CONFIG_FILE, DEPLOYMENT_FILE
from tests.fixtures.reports import candidate, report
from tests.fixtures.serving_artifacts import mlp_artifact

SETTINGS = HonedSettings(pools=[Pool(name="cpu", image="x")], triton_packaging="runtime")


def pool_output(store: ArtifactStore, key: str, tmp: Path) -> str:
    """An optimizer Job's output (report + artifacts) in ``store`` at ``key``; returns the report URI."""
    local = tmp / f"out-{uuid.uuid4().hex[:6]}"
    cands = [candidate("onnx-int8.onnxruntime", p50=2.0), candidate("onnx-fp32.onnxruntime", p50=8.0)]
    for cand in cands:
        mlp_artifact(local / str(cand.artifact))
    report(cands).write(local)
    store.upload(local, key)
    return store.url(f"{key}/report.json")


def write_for(
    store: ArtifactStore, report_uri: str, version: int, name: str = "onnx-int8.onnxruntime"
) -> RepositoryWrite:
    return RepositoryWrite(
        version=version,
        pool="cpu",
        candidate=name,
        report_uri=report_uri,
        repository_uri=store.url("ml/mlp/repository"),
        model_name="mlp",
        serving={"response_cache": True, "dynamic_batching": {"enabled": True, "max_batch_size": 8}},
    )


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    # memory:// runs the same fsspec path as s3:// does in a cluster.
    uri = f"file://{tmp_path}/store" if request.param == "file" else f"memory://honed-{uuid.uuid4().hex}"
    return ArtifactStore(uri)


def test_versions_are_written_once_numbered_and_pruned(store: ArtifactStore, tmp_path: Path) -> None:
    report_uri = pool_output(store, "ml/mlp/optimizations/a/cpu", tmp_path)
    assert repository_state(store, "ml", "mlp") == (frozenset(), frozenset())
    write_repository(store, write_for(store, report_uri, 1), SETTINGS)
    assert repository_state(store, "ml", "mlp") == (frozenset({1}), frozenset({1}))
    assert store.exists(f"ml/mlp/repository/mlp/1/{DEPLOYMENT_FILE}")
    assert "max_batch_size: 8" in store.read_text(f"ml/mlp/repository/mlp/{CONFIG_FILE}")
    assert store.exists("ml/mlp/repository/mlp/1/model.py")  # the runtime packaging
    # Version 1's own config, which a Triton pod pinned with --model-config-name=version-1 loads.
    own = store.read_text("ml/mlp/repository/mlp/configs/version-1.pbtxt")
    assert list(parse_config(own).version_policy.specific.versions) == [1]

    write_repository(store, write_for(store, report_uri, 1), SETTINGS)  # a repeated pass: nothing new
    assert repository_state(store, "ml", "mlp") == (frozenset({1}), frozenset({1}))

    for version in (2, 3):
        write_repository(store, write_for(store, report_uri, version, "onnx-fp32.onnxruntime"), SETTINGS)
    assert repository_state(store, "ml", "mlp") == (frozenset({2, 3}), frozenset({2, 3}))  # the oldest pruned, two kept
    assert store.listdir("ml/mlp/repository/mlp/configs") == ["version-2.pbtxt", "version-3.pbtxt"]
    # The operator has no Triton to try a version on: its pods are the check, so it points config.pbtxt at it.
    served = parse_config(store.read_text(f"ml/mlp/repository/mlp/{CONFIG_FILE}"))
    assert list(served.version_policy.specific.versions) == [3]


def test_a_partial_upload_is_replaced(store: ArtifactStore, tmp_path: Path) -> None:
    report_uri = pool_output(store, "ml/mlp/optimizations/a/cpu", tmp_path)
    store.write_text("ml/mlp/repository/mlp/1/model.py", "half of an upload")
    assert repository_state(store, "ml", "mlp") == (frozenset({1}), frozenset())
    write_repository(store, write_for(store, report_uri, 1), SETTINGS)
    assert repository_state(store, "ml", "mlp") == (frozenset({1}), frozenset({1}))


def test_a_version_number_taken_by_someone_else_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    report_uri = pool_output(store, "ml/mlp/optimizations/a/cpu", tmp_path)
    write_repository(store, write_for(store, report_uri, 1), SETTINGS)
    with pytest.raises(HonedError, match="already uses versions"):
        write_repository(store, write_for(store, report_uri, 5), SETTINGS)


def test_unknown_candidate_is_a_clear_error(store: ArtifactStore, tmp_path: Path) -> None:
    report_uri = pool_output(store, "ml/mlp/optimizations/a/cpu", tmp_path)
    with pytest.raises(HonedError, match=r"no candidate 'onnx-bf16\.openvino'"):
        write_repository(store, write_for(store, report_uri, 1, "onnx-bf16.openvino"), SETTINGS)


def test_serving_options_from_the_spec() -> None:
    options = serving_options(
        {
            "response_cache": False,
            "instances": 2,
            "dynamic_batching": {"enabled": False, "max_queue_delay_microseconds": 300},
        }
    )
    assert (options.response_cache, options.dynamic_batching, options.instances) == (False, False, 2)
    assert options.max_queue_delay_us == 300 and options.max_batch_size is None


def test_pruning_keeps_the_version_still_serving(store: ArtifactStore, tmp_path: Path) -> None:
    """Version 2 serves; 3 stalled in its rollout; writing 4 must not remove what the old pods load."""
    report_uri = pool_output(store, "ml/mlp/optimizations/a/cpu", tmp_path)
    for version in (1, 2, 3):
        write_repository(store, write_for(store, report_uri, version), SETTINGS)
    fourth = write_for(store, report_uri, 4)
    write_repository(store, dataclasses.replace(fourth, serving_version=2), SETTINGS)
    assert repository_state(store, "ml", "mlp") == (frozenset({2, 3, 4}), frozenset({2, 3, 4}))
    assert store.exists("ml/mlp/repository/mlp/configs/version-2.pbtxt")
