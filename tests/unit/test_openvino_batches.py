"""OpenVINO's static-shape runner under the batch sizes a Triton dynamic batcher forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.tensors import TensorSpec
from tests.fixtures.models import token_classifier_onnx

SEQ = 12


def _runner(tmp_path: Path) -> Any:
    pytest.importorskip("openvino")
    from honed.optimizer.backends.openvino import OpenVinoRunner

    path = token_classifier_onnx(tmp_path / "tokens.onnx", seq=SEQ)
    meta = ArtifactMeta(
        backend="openvino",
        precision="fp32",
        model_file=path.name,
        inputs=[TensorSpec(name=n, dtype="int64", shape=[-1, SEQ]) for n in ("input_ids", "attention_mask")],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 3])],
    )
    return OpenVinoRunner(meta, tmp_path, threads=1)


def _feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, SEQ), np.int64)
    mask[:, SEQ // 2 :] = rng.integers(0, 2, (batch, SEQ - SEQ // 2))
    return {"input_ids": rng.integers(0, 50, (batch, SEQ)), "attention_mask": mask}


def test_odd_batches_run_as_powers_of_two_with_each_sample_answered_as_alone(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    for batch in range(1, 18):
        feeds = _feeds(batch, seed=batch)
        (logits,) = runner.run(feeds)
        assert logits.shape == (batch, 3)
        alone = [runner.run({k: v[i : i + 1] for k, v in feeds.items()})[0][0] for i in range(batch)]
        np.testing.assert_allclose(logits, np.stack(alone), rtol=1e-5, atol=1e-5)
    # 17 batch sizes, only powers of two compiled (the runner keeps the last 8).
    compiled = sorted(key[0][0] for key in runner.compiled)
    assert set(compiled) <= {1, 2, 4, 8, 16, 32} and len(compiled) <= 6


@pytest.mark.parametrize(("padded_s", "split_s", "shapes"), [(1.0, 0.1, {8, 4, 1}), (0.1, 1.0, {16})])
def test_a_batch_is_split_or_padded_by_what_this_runner_timed(
    tmp_path: Path, padded_s: float, split_s: float, shapes: set[int]
) -> None:
    runner = _runner(tmp_path)
    feeds = _feeds(13, seed=0)
    rest = runner._rest(feeds)
    # What its own calls measured: 16 at padded_s; 8, 4 and 1 at split_s / 3 each.
    runner.seconds = {(16, rest): padded_s, **{(b, rest): split_s / 3 for b in (8, 4, 1)}}
    (logits,) = runner.run(feeds)
    assert {key[0][0] for key in runner.compiled} == shapes
    alone = [runner.run({k: v[i : i + 1] for k, v in feeds.items()})[0][0] for i in range(13)]
    np.testing.assert_allclose(logits, np.stack(alone), rtol=1e-5, atol=1e-5)
    assert all(seconds > 0 for seconds in runner.seconds.values())
