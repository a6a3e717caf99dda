"""Keys, pvc:// URIs and report artifact paths stay inside the store, the claim and the report."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from honed.artifacts import ArtifactStore, join_uri, parse_pvc
from honed.controller.jobs import mounted_uri
from honed.controller.stored_repository import write_repository
from honed.errors import HonedError, InputError
from tests.unit.test_controller_stored_repository import SETTINGS, pool_output, write_for


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("pvc://models/../../etc/passwd", "leaves its claim"),
        ("pvc://models/a/../../../etc", "leaves its claim"),
        ("pvc://../etc/passwd", "names no PersistentVolumeClaim"),
        ("pvc:///etc/passwd", "is not a pvc:// URI"),
        ("pvc://Models_X/m.onnx", "names no PersistentVolumeClaim"),
    ],
)
def test_pvc_uris_cannot_leave_their_claim(uri: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as caught:
        parse_pvc(uri)
    assert "pvc://CLAIM/path" in (caught.value.hint or "")


def test_a_pvc_model_uri_maps_inside_the_mount() -> None:
    assert mounted_uri("pvc://models/resnet/..model.onnx", SETTINGS) == "file:///mnt/honed/models/resnet/..model.onnx"
    with pytest.raises(InputError):
        mounted_uri("pvc://models/../../etc/passwd", SETTINGS)


@pytest.mark.parametrize("key", ["../outside", "a/../../outside", "a/b/..", "..", "a\x00b/.."])
def test_keys_with_dotdot_are_refused_everywhere(tmp_path: Path, key: str) -> None:
    for uri in (f"file://{tmp_path}/store", "pvc://claim/prefix", f"memory://honed-{uuid.uuid4().hex}"):
        store = ArtifactStore(uri, pvc_mount_root=str(tmp_path / "mnt"))
        with pytest.raises(InputError, match="leaves its root"):
            store.write_text(key, "x")
        with pytest.raises(InputError, match="leaves its root"):
            store.read_text(key)
        with pytest.raises(InputError, match="leaves its root"):
            store.child(key)
    with pytest.raises(InputError):
        join_uri("s3://bucket/prefix", key)
    assert not (tmp_path / "outside").exists()


def test_leading_slashes_stay_below_the_root(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    store.write_text("/etc/passwd", "mine")
    assert (tmp_path / "store" / "etc" / "passwd").read_text() == "mine"


def test_a_symlink_in_the_store_does_not_lead_out(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not yours")
    store = ArtifactStore("pvc://claim/store", pvc_mount_root=str(tmp_path / "mnt"))
    root = tmp_path / "mnt" / "claim" / "store"
    (root / "run").mkdir(parents=True)
    (root / "run" / "escape").symlink_to(secret.parent)
    (root / "run" / "inside").symlink_to(root / "run")  # a link that stays in the store is fine
    with pytest.raises(InputError, match="leads out of the store through a symlink"):
        store.read_text("run/escape/secret.txt")
    with pytest.raises(InputError, match="leads out of the store"):
        store.write_text("run/escape/planted.txt", "x")
    assert not (secret.parent / "planted.txt").exists()
    assert store.listdir("run/inside") == ["escape", "inside"]
    # Copying a tree follows symlinks: one that leads out fails the whole download.
    with pytest.raises(InputError, match=r"run/escape leads out of the store"):
        store.download("run", tmp_path / "copy")
    assert not (tmp_path / "copy" / "escape" / "secret.txt").exists()


@pytest.mark.parametrize("artifact", ["../../../../../etc", "/etc", "a/../../x"])
def test_a_report_artifact_outside_the_report_is_refused(tmp_path: Path, artifact: str) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")
    report_uri = pool_output(store, "ml/mlp/optimizations/a/cpu", tmp_path)
    report = json.loads(store.read_text("ml/mlp/optimizations/a/cpu/report.json"))
    for cand in report["candidates"]:
        cand["artifact"] = artifact
    store.write_text("ml/mlp/optimizations/a/cpu/report.json", json.dumps(report))
    with pytest.raises(HonedError, match=r"the artifact of candidate 'onnx-int8.onnxruntime' in .*report.json") as e:
        write_repository(store, write_for(store, report_uri, 1), SETTINGS)
    assert repr(artifact) in str(e.value)
    assert store.listdir("ml/mlp/repository/mlp") == []  # nothing written
