"""HONED_* settings and the artifact store the operator and its Jobs share."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from honed.artifacts import ArtifactStore, join_uri, parse_pvc
from honed.controller.settings import HonedSettings, load_settings
from honed.errors import EnvironmentProblem, InputError

POOLS = [
    {
        "name": "cpu",
        "nodeSelector": {"pool": "cpu"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "resources": {"limits": {"cpu": "8", "memory": "16Gi"}},
        "image": "honed/optimizer-cpu:0.1",
        "device": "cpu",
        "pricePerHour": 0.68,
    },
    {"name": "gpu", "image": "honed/optimizer-gpu:0.1", "device": "cuda", "pricePerHour": 2.5},
]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONED_POOLS", json.dumps(POOLS))
    monkeypatch.setenv("HONED_ARTIFACT_STORE", "s3://honed-artifacts/prod")
    monkeypatch.setenv("HONED_ARTIFACT_SECRET", "honed-store")
    monkeypatch.setenv("HONED_WATCH_NAMESPACES", "vision, nlp,")
    monkeypatch.setenv("HONED_METRICS_PORT", "9090")
    monkeypatch.setenv("HONED_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.pool_names() == ["cpu", "gpu"]
    cpu = settings.pool("cpu")
    assert cpu is not None and cpu.node_selector == {"pool": "cpu"} and cpu.price_per_hour == 0.68
    assert cpu.tolerations[0].effect == "NoSchedule"
    assert settings.pool("gpu").device == "cuda"  # type: ignore[union-attr]
    assert settings.watch_namespaces == ["vision", "nlp"]
    assert settings.metrics_port == 9090 and settings.health_port == 8081
    assert settings.log_level == "DEBUG"
    assert settings.artifact_secret == "honed-store"


def test_every_field_is_documented() -> None:
    for name, field in HonedSettings.model_fields.items():
        assert field.description and f"HONED_{name.upper()}" in field.description, name


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"HONED_POOLS": "[{"}, "HONED_POOLS is a JSON list"),
        ({"HONED_POOLS": '[{"name": "cpu"}]'}, "HONED_POOLS at 0.image"),
        ({"HONED_POOLS": json.dumps([POOLS[1], POOLS[1]])}, "repeated: gpu"),
        ({"HONED_METRICS_PORT": "http"}, "HONED_METRICS_PORT"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, Any], words: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InputError) as caught:
        load_settings()
    assert words in str(caught.value)


def test_local_store_round_trip(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    assert store.is_local
    store.write_text("a/b/report.json", "{}")
    assert store.exists("a/b/report.json") and store.read_text("a/b/report.json") == "{}"
    assert store.listdir("a/b") == ["report.json"]
    assert store.listdir("nothing") == []
    source = tmp_path / "artifact"
    (source / "sub").mkdir(parents=True)
    (source / "model.onnx").write_bytes(b"onnx")
    (source / "sub" / "x.bin").write_bytes(b"x")
    store.upload(source, "a/artifact")
    copied = store.download("a/artifact", tmp_path / "back")
    assert (copied / "sub" / "x.bin").read_bytes() == b"x"
    store.delete("a")
    assert not store.exists("a/b/report.json")
    with pytest.raises(InputError, match="nothing at"):
        store.read_text("a/b/report.json")


def test_pvc_store_resolves_below_the_mount_root(tmp_path: Path) -> None:
    store = ArtifactStore("pvc://honed-data/store", pvc_mount_root=str(tmp_path))
    store.write_text("x.txt", "hi")
    assert (tmp_path / "honed-data" / "store" / "x.txt").read_text() == "hi"
    assert parse_pvc("pvc://claim/a/b").subpath == "a/b"
    with pytest.raises(InputError, match="pvc://CLAIM"):
        parse_pvc("s3://bucket/x")


def test_fsspec_store_round_trip(tmp_path: Path) -> None:
    # memory:// goes through the same fsspec calls as s3:// and gs:// do in clusters.
    store = ArtifactStore("memory://honed-test/store")
    assert not store.is_local and store.local_path("x") is None
    store.write_text("r/report.json", '{"a": 1}')
    assert store.exists("r/report.json") and store.read_text("r/report.json") == '{"a": 1}'
    assert store.listdir("r") == ["report.json"]
    source = tmp_path / "artifact"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "w.bin").write_bytes(b"w")
    store.upload(source, "r/artifact")
    back = store.download("r/artifact", tmp_path / "back")
    assert (back / "sub" / "w.bin").read_bytes() == b"w"
    store.delete("r")
    assert not store.exists("r/report.json")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_missing_fsspec_implementation_says_what_to_install() -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        ArtifactStore("s3://bucket/prefix").exists("x")
    assert "s3fs" in str(caught.value)


def test_join_uri() -> None:
    assert join_uri("s3://b/p/", "/ns/x/", "report.json") == "s3://b/p/ns/x/report.json"
    assert join_uri("file:///tmp/s") == "file:///tmp/s"
