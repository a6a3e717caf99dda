"""The torch CUDA backend against fp32: precisions, CUDA graphs, compile, fp8, the gate, a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import Exported, random_feeds, reference

from honed.optimizer.artifact import Runner, read_meta
from honed.optimizer.backends import torch_cuda
from honed.optimizer.backends.base import BuildContext, CandidatePlan, SearchContext
from honed.optimizer.gate import verdict

# torch.compile builds, and a reload in a new process with its own 600 s limit.
pytestmark = pytest.mark.timeout(900)

OPERATOR_DIR = Path(torch_cuda.__file__).resolve().parents[3]


def relative_error(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    """The worst output's ||got - reference|| / ||reference||: how close a precision's numbers are, not a gate."""
    worst = 0.0
    for ref, out in zip(reference, got, strict=True):
        ref64, out64 = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
        worst = max(worst, float(np.linalg.norm(out64 - ref64) / np.linalg.norm(ref64)))
    return worst


def load_runner(directory: Path) -> Runner:
    """Load through the backend module, as the engine's loader does for device=cuda torch artifacts."""
    return torch_cuda.load(read_meta(directory), directory, None)


def _ctx(exported: Exported, kind: str, work: Path) -> BuildContext:
    path, calib, inputs, outputs = exported(kind)
    return BuildContext(
        onnx_path=None,
        torch_path=path,
        inputs=inputs,
        outputs=outputs,
        calibration_path=calib,
        threads=4,
        work_dir=work,
    )


def _plan(precision: str, variant: str, buckets: list[int], **options: Any) -> CandidatePlan:
    opts = {"batch_buckets": buckets, "cuda_graphs": variant != "eager", "channels_last": False, **options}
    if variant == "compile":
        opts["inductor"] = torch_cuda.INDUCTOR_OPTIONS
    return CandidatePlan(
        backend="torch", precision=precision, source="torch", variant=variant, device="cuda", options=opts
    )


def test_plans_cover_precisions_graphs_compile_and_fp8(exported: Exported) -> None:
    _, _, inputs, outputs = exported("encoder")
    ctx = SearchContext(
        inputs=inputs,
        outputs=outputs,
        source_format="pytorch",
        precisions=["fp32", "fp16", "bf16", "int8"],
        cpu_flags=set(),
        device="cuda",
        attention=True,
        has_torch_program=True,
    )
    names = {p.name for p in torch_cuda.plans(ctx) if isinstance(p, CandidatePlan)}
    assert {
        "torch-fp32.eager",
        "torch-fp16.eager-cudagraphs",
        "torch-bf16.compile",
        "torch-fp16.compile",
    } <= names
    import torch

    assert ("torch-fp8.compile" in names) == (torch.cuda.get_device_capability(0) >= (8, 9))


@pytest.mark.parametrize(
    ("kind", "precision", "variant", "channels_last"),
    [
        ("cnn", "fp16", "eager", True),
        ("cnn", "bf16", "eager-cudagraphs", True),
        ("encoder", "fp16", "eager-cudagraphs", False),
        ("encoder", "bf16", "eager", False),
    ],
)
def test_half_precision_matches_fp32(
    exported: Exported, tmp_path: Path, kind: str, precision: str, variant: str, channels_last: bool
) -> None:
    ctx = _ctx(exported, kind, tmp_path)
    torch_cuda.build(_plan(precision, variant, [1, 4], channels_last=channels_last), ctx, tmp_path / "a")
    runner = load_runner(tmp_path / "a")
    # Batch 3 pads to bucket 4; batch 9 splits across buckets; fresh inputs each time.
    for seed, batch in enumerate((1, 3, 9)):
        feeds = random_feeds(ctx.inputs, batch, seed=100 + seed)
        got = runner.run(feeds)
        assert [g.shape[0] for g in got] == [batch] * len(got)
        expected = reference(ctx.torch_path, feeds)
        assert all(np.isfinite(g).all() for g in got)
        assert relative_error(expected, got) < (1e-2 if precision == "fp16" else 4e-2)


def test_gate_rejects_fp16_overflow_and_keeps_bf16(exported: Exported, tmp_path: Path) -> None:
    ctx = _ctx(exported, "overflow", tmp_path)
    feeds = random_feeds(ctx.inputs, 8, seed=7)
    ref = reference(ctx.torch_path, feeds)
    verdicts = {}
    for precision in ("fp16", "bf16"):
        torch_cuda.build(_plan(precision, "eager", [8]), ctx, tmp_path / precision)
        verdicts[precision] = verdict("cosine", ref, load_runner(tmp_path / precision).run(feeds), None, 0.01)
    assert {p: v.accepted for p, v in verdicts.items()} == {"fp16": False, "bf16": True}, verdicts
    assert "NaN or inf" in verdicts["fp16"].reason


def test_compiled_artifact_reloads_in_a_new_process_from_its_cache(exported: Exported, tmp_path: Path) -> None:
    ctx = _ctx(exported, "encoder", tmp_path)
    meta = torch_cuda.build(_plan("fp16", "compile", [1, 8]), ctx, tmp_path / "a")
    assert (tmp_path / "a" / "inductor-cache.bin").stat().st_size > 0
    assert set(meta.options["build_seconds_by_batch"]) == {"1", "8"}
    feeds = random_feeds(ctx.inputs, 5, seed=11)
    np.savez(tmp_path / "feeds.npz", **feeds)  # type: ignore[arg-type]  # numpy's stubs match **arrays to allow_pickle
    here = load_runner(tmp_path / "a").run(feeds)
    assert verdict("cosine", reference(ctx.torch_path, feeds), here, None, 1e-3).accepted

    # Empty compiler caches: only the artifact's saved cache can make this load fast.
    env = dict(
        os.environ,
        TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "ind"),
        TRITON_CACHE_DIR=str(tmp_path / "tri"),
        PYTHONPATH=os.pathsep.join([str(OPERATOR_DIR), os.environ.get("PYTHONPATH", "")]),
    )
    script = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from honed.optimizer.artifact import read_meta\n"
        "from honed.optimizer.backends import torch_cuda\n"
        "d = Path(sys.argv[1])\n"
        "r = torch_cuda.load(read_meta(d), d, None)\n"
        "feeds = dict(np.load(sys.argv[2]))\n"
        "out = r.run(feeds)\n"
        "np.savez(sys.argv[3], *out)\n"
        "print(json.dumps({'cache': r.cache_info, 'load_seconds': r.load_seconds}))\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "a"),
            str(tmp_path / "feeds.npz"),
            str(tmp_path / "out.npz"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cache"]["fxgraph_cache_hit"] >= 2 and report["cache"]["fxgraph_cache_miss"] == 0, report
    with np.load(tmp_path / "out.npz") as data:
        there = [data[f"arr_{i}"] for i in range(len(here))]
    for a, b in zip(here, there, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_fp8_passes_the_gate_on_a_transformer(exported: Exported, tmp_path: Path) -> None:
    import torch

    if torch.cuda.get_device_capability(0) < (8, 9):
        pytest.skip(f"fp8 needs compute capability 8.9+, this GPU is {torch.cuda.get_device_capability(0)}")
    ctx = _ctx(exported, "encoder", tmp_path)
    meta = torch_cuda.build(_plan("fp8", "compile", [4]), ctx, tmp_path / "a")
    assert meta.options["fp8_linears"] == 2 * 6  # q, k, v, o, up, down in each of two blocks
    feeds = random_feeds(ctx.inputs, 4, seed=21)
    result = verdict("cosine", reference(ctx.torch_path, feeds), load_runner(tmp_path / "a").run(feeds), None, 0.01)
    assert result.accepted, result


def test_timing_is_positive_and_peak_memory_is_reported(exported: Exported, tmp_path: Path) -> None:
    ctx = _ctx(exported, "cnn", tmp_path)
    torch_cuda.build(_plan("fp16", "eager-cudagraphs", [4], channels_last=True), ctx, tmp_path / "a")
    runner = load_runner(tmp_path / "a")
    from honed.optimizer.backends.torch_cuda_runner import TorchCudaRunner

    assert isinstance(runner, TorchCudaRunner)
    times = runner.time_batch(random_feeds(ctx.inputs, 4, seed=3), iters=20)
    assert len(times) == 20 and min(times) > 0
    assert runner.peak_gpu_bytes() > 0


def test_baseline_is_the_factory_module_in_strict_fp32_and_leaks_no_setting(exported: Exported, tmp_path: Path) -> None:
    import torch

    from honed.optimizer.backends.base import AS_GIVEN
    from honed.optimizer.backends.torch_cuda_baseline import BaselineRunner

    # torch swaps in a CudnnModule whose conv carries fp32_precision; its types do not declare conv.
    conv: Any = torch.backends.cudnn.conv  # type: ignore[attr-defined]
    ctx = _ctx(exported, "cnn", tmp_path)
    plan = CandidatePlan("torch", "fp32", "torch", "eager", "cuda", {AS_GIVEN: True, "factory": "tiny_models:tiny_cnn"})
    before = (torch.backends.cuda.matmul.fp32_precision, conv.fp32_precision)
    meta = torch_cuda.build(plan, ctx, tmp_path / "base")
    runner = load_runner(tmp_path / "base")
    assert isinstance(runner, BaselineRunner)
    assert type(runner.module).__name__ == "TinyCNN"  # not a rebuilt program
    settings = runner.settings()
    assert settings == meta.options["settings"]
    assert settings["tf32_cudnn"] is False and settings["cudnn_benchmark"] is True
    feeds = random_feeds(ctx.inputs, 4, seed=5)
    times = runner.time_batch(feeds, iters=10)
    assert len(times) == 10 and min(times) > 0
    out = runner.run(feeds)
    assert (torch.backends.cuda.matmul.fp32_precision, conv.fp32_precision) == before
    # Same weights as the exported program (seed 0); strict fp32 on the GPU agrees with fp32 on the CPU.
    assert relative_error(reference(ctx.torch_path, feeds), out) < 1e-4
