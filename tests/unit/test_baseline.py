"""The baseline every speedup is against: the user's model as given, eager, strict fp32, settings reported."""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.backends import torch_cuda
from honed.optimizer.backends.base import AS_GIVEN
from honed.optimizer.backends.torch import TorchRunner
from honed.optimizer.backends.torch_cuda_baseline import strict_fp32
from honed.optimizer.data import Dataset
from honed.optimizer.options import OptimizeOptions
from honed.optimizer.planning import Prepared, plan_candidates
from honed.optimizer.report import Candidate, DataInfo, DeviceInfo, ModelInfo, Report, SearchSettings, load_report
from honed.optimizer.sources import SourceModel
from honed.optimizer.table import print_report
from honed.optimizer.tensors import TensorSpec
from honed.optimizer.worker import _settings

FACTORY = f"{__name__}:tiny_model"
INPUTS = [TensorSpec(name="x", dtype="float32", shape=[-1, 4])]
OUTPUTS = [TensorSpec(name="y", dtype="float32", shape=[-1, 2])]


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _prepared(tmp_path: Path, fmt: str = "pytorch") -> Prepared:
    program = tmp_path / ("model.pt2" if fmt == "pytorch" else "model.ts")
    program.write_bytes(b"")  # the planner only needs to know a program exists
    source = SourceModel(
        format=fmt,
        location=FACTORY if fmt == "pytorch" else str(program),
        inputs=INPUTS,
        outputs=OUTPUTS,
        torch_path=program,
        factory=FACTORY if fmt == "pytorch" else None,
    )
    feeds = {"x": np.zeros((4, 4), np.float32)}
    dataset = Dataset(feeds=feeds, labels=None, synthesized=True)
    return Prepared(source, dataset, tmp_path / "data.npz", "cosine", [1, 8], False, [])


def _options(tmp_path: Path, device: str) -> OptimizeOptions:
    return OptimizeOptions(model=FACTORY, out=tmp_path / "out", device=device, precisions=["fp32", "fp16", "bf16"])


def test_cpu_baseline_is_the_factory_module_as_given(tmp_path: Path) -> None:
    baseline, plans, _ = plan_candidates(_options(tmp_path, "cpu"), _prepared(tmp_path))
    assert baseline.name == "torch-fp32.eager"
    assert baseline.options[AS_GIVEN] is True and baseline.options["factory"] == FACTORY
    assert all(p.name != baseline.name for p in plans)


def test_cuda_baseline_is_the_module_as_given_not_the_exported_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plan as on an H200: the backend plans its own fp32 eager candidate from the exported program.
    monkeypatch.setattr(torch_cuda, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(torch_cuda, "_capability", lambda: (9, 0))
    monkeypatch.setattr("honed.optimizer.planning.backend_module", _only_torch_cuda)
    baseline, plans, _ = plan_candidates(_options(tmp_path, "cuda"), _prepared(tmp_path))
    assert (baseline.name, baseline.device) == ("torch-fp32.eager", "cuda")
    assert baseline.options[AS_GIVEN] is True and baseline.options["factory"] == FACTORY
    assert "inductor" not in baseline.options and "batch_buckets" not in baseline.options
    names = [p.name for p in plans]
    assert baseline.name not in names  # the rebuilt fp32 eager program is not timed a second time
    assert {"torch-fp32.eager-cudagraphs", "torch-fp16.compile"} <= set(names)


def test_cuda_baseline_of_a_torchscript_file_is_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_cuda, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(torch_cuda, "_capability", lambda: (9, 0))
    monkeypatch.setattr("honed.optimizer.planning.backend_module", _only_torch_cuda)
    baseline, _, _ = plan_candidates(_options(tmp_path, "cuda"), _prepared(tmp_path, "torchscript"))
    assert baseline.name == "torchscript-fp32.eager"
    assert baseline.options == {AS_GIVEN: True}


def _only_torch_cuda(name: str, device: str = "cpu") -> ModuleType:
    if name != "torch":
        raise ImportError(f"{name} is left out of this test")
    return torch_cuda


def _flags() -> tuple[str, str, str, bool]:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    # On import torch swaps in a CudnnModule whose conv and rnn carry fp32_precision; torch's
    # types describe the plain module (no conv; rnn is the cudnn.rnn submodule).
    conv: Any = cudnn.conv  # type: ignore[attr-defined]
    rnn: Any = cudnn.rnn
    return (matmul.fp32_precision, conv.fp32_precision, rnn.fp32_precision, cudnn.benchmark)


def test_strict_fp32_applies_no_tf32_and_benchmark_then_restores_exactly() -> None:
    before = _flags()
    with strict_fp32() as applied:
        assert _flags() == ("ieee", "ieee", "ieee", True)
    assert _flags() == before  # nothing leaks into a candidate timed next in the same process
    assert applied["tf32_matmul"] is False and applied["tf32_cudnn"] is False
    assert applied["cudnn_benchmark"] is True
    assert applied["torch.backends.cuda.matmul.fp32_precision"] == "ieee"
    assert applied["torch.backends.cudnn.conv.fp32_precision"] == "ieee"
    with pytest.raises(RuntimeError), strict_fp32():
        raise RuntimeError("a failing baseline call")
    assert _flags() == before


def test_cpu_baseline_runner_reports_the_module_and_the_search_threads(tmp_path: Path) -> None:
    meta = ArtifactMeta(
        backend="torch",
        precision="fp32",
        variant="eager",
        model_file="",
        options={"factory": FACTORY, "sys_path": [], "autocast": None},
        inputs=INPUTS,
        outputs=OUTPUTS,
    )
    before = torch.get_num_threads()
    try:
        runner = TorchRunner(meta, tmp_path, threads=1)
        settings = _settings({"runner": runner}, 1)
    finally:
        torch.set_num_threads(before)
    assert settings["module"] == f"as given ({FACTORY}), eval mode"
    assert settings["mode"] == "eager" and settings["precision"] == "fp32" and settings["threads"] == 1
    assert settings["float32_matmul_precision"] == "highest"
    assert _settings({}, 1) == {}  # runtimes that say nothing give nothing


def _report(settings: dict[str, Any]) -> Report:
    base = Candidate(
        name="torch-fp32.eager",
        backend="torch",
        precision="fp32",
        variant="eager",
        device="cuda",
        status="accepted",
        settings=settings,
    )
    return Report(
        honed_version="0",
        created_at="2026-01-01T00:00:00+00:00",
        duration_s=1.0,
        model=ModelInfo(source=FACTORY, format="pytorch", inputs=INPUTS, outputs=OUTPUTS),
        device=DeviceInfo(cpu="cpu", threads=2, gpu="NVIDIA H200"),
        data=DataInfo(source="synthesized", samples=4),
        settings=SearchSettings(),
        baseline=base,
        candidates=[base],
        winner=base.name,
    )


def test_report_records_the_baseline_settings_and_reads_reports_without_them(tmp_path: Path) -> None:
    with strict_fp32() as applied:
        pass
    settings = {"module": f"as given ({FACTORY})", "mode": "eager", "precision": "fp32", **applied}
    _report(settings).write(tmp_path)
    assert load_report(tmp_path).baseline.settings == settings
    console = Console(record=True, width=400, file=io.StringIO())
    print_report(load_report(tmp_path), console)
    text = console.export_text()
    assert "baseline torch-fp32.eager ran as: module=as given" in text and "tf32_cudnn=False" in text
    old = _report({}).model_dump(by_alias=True)
    for cand in (old["baseline"], *old["candidates"]):
        del cand["settings"]
    assert Report.model_validate(old).baseline.settings == {}
