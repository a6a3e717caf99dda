"""int8 on a real trained transformer (MiniLM with its weights, on real sentences) through `honed optimize`.

Pins what made every int8 candidate fail the gate on transformers: the gate compared hidden
states at padded positions, which int8 moves far while the real tokens stay within 0.003 cosine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from honed.optimizer.artifact import load_runner
from honed.optimizer.report import load_report
from honed.optimizer.validate import compare, padding_mask
from tests.fixtures.cli import honed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SEQ = 64


def test_int8_of_a_real_transformer_passes_a_gate_that_leaves_padding_out(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from benchmarks.engine.models import token_data

    data = token_data(tmp_path / "sentences.npz", 120, SEQ)
    out = tmp_path / "out"
    result = honed(
        "optimize", "benchmarks.engine.models:minilm_tokens", "--data", data, "--out", out,
        "--input", f"input_ids:int64:batch,{SEQ}", "--input", f"attention_mask:int64:batch,{SEQ}",
        "--metric", "cosine", "--max-metric-drop", "0.01", "--backends", "openvino", "--precisions", "int8",
        "--batch-sizes", "1", "--measure-seconds", "0.2", "--time-budget", "8m", "--quiet", "--no-plot",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = load_report(out)
    int8 = next(c for c in report.candidates if c.name == "onnx-int8.openvino")
    assert int8.status == "accepted", int8.reason
    assert int8.metric is not None and int8.metric.masked_by == "attention_mask" and int8.metric.drop <= 0.01
    assert any("leaves padded positions out" in note for note in report.notes), report.notes

    # The same int8 outputs, judged on the whole tensor, padding included, fail the gate by far:
    # that, not the real tokens, is what int8 moves.
    with np.load(data) as loaded:
        feeds = {name: loaded[name] for name in loaded.files}
    assert int8.artifact is not None and report.baseline.artifact is not None
    names = [o.name for o in report.model.outputs]
    quantized = dict(zip(names, load_runner(out / int8.artifact).run(feeds), strict=True))
    original = dict(zip(names, load_runner(out / report.baseline.artifact).run(feeds), strict=True))
    hidden = "last_hidden_state"
    whole = compare("cosine", [original[hidden]], [quantized[hidden]], None)
    real = compare("cosine", [original[hidden]], [quantized[hidden]], None, padding_mask(feeds))
    assert real.drop <= 0.01 < whole.drop, (real.drop, whole.drop)

    # int8 and int8-bf16 are one calibration: the second reuses the first's IR.
    bf16 = next((c for c in report.candidates if c.name == "onnx-int8-bf16.openvino"), None)
    if bf16 is not None and bf16.artifact is not None:
        assert (out / bf16.artifact / "model.bin").read_bytes() == (out / int8.artifact / "model.bin").read_bytes()
