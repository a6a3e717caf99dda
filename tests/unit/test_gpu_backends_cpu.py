"""The GPU backends' pure parts, on the CPU: plans and reasons, graph conversion, fp8, keys, timing."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from honed.optimizer.backends import onnxruntime_cuda, tensorrt, torch_cuda
from honed.optimizer.backends.base import CandidatePlan, SearchContext
from honed.optimizer.backends.torch_cuda_convert import (
    _retarget_graph,
    keyword_inputs,
    quantize_linears_fp8,
    to_device_and_dtype,
)
from honed.optimizer.backends.torch_cuda_runner import matmul_settings, pin_matmul_settings
from honed.optimizer.gpu_timing import cuda_unavailable_reason, percentile, slug, summarize_ms
from honed.optimizer.report import Skipped
from honed.optimizer.tensors import TensorSpec

NO_CUDA = cuda_unavailable_reason()


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(256, 512)
        self.down = nn.Linear(512, 256)
        self.head = nn.Linear(256, 10)  # too small for fp8: stays in bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(torch.relu(self.up(x)))
        positions = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)
        out: torch.Tensor = self.head(h + positions[:, None])
        return out


Exported = tuple[torch.fx.GraphModule, torch.Tensor, torch.Tensor]


@pytest.fixture
def exported() -> Exported:
    torch.manual_seed(0)
    model = Mlp().eval()
    x = torch.randn(2, 16, 256)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    with torch.no_grad():
        ref = model(x)
    return program.module(), x, ref


def _ctx(device: str, **kw: Any) -> SearchContext:
    spec = TensorSpec(name="x", dtype="float32", shape=[-1, 16, 256])
    return SearchContext(
        inputs=[spec],
        outputs=[spec],
        source_format="pytorch",
        precisions=["fp32", "fp16", "bf16", "int8"],
        cpu_flags=set(),
        device=device,
        has_torch_program=True,
        **kw,
    )


def test_cpu_contexts_get_no_cuda_plans() -> None:
    assert torch_cuda.plans(_ctx("cpu")) == []
    assert tensorrt.plans(_ctx("cpu")) == []
    assert onnxruntime_cuda.plans(_ctx("cpu")) == []


def test_onnxruntime_without_gpu_providers_says_which_package_is_missing() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the test checks the reason given without it")
    reason = onnxruntime_cuda.availability()
    assert reason is not None and "onnxruntime-gpu" in reason
    plans = onnxruntime_cuda.plans(_ctx("cuda"))
    assert len(plans) == 1 and isinstance(plans[0], Skipped) and plans[0].reason == reason


@pytest.mark.skipif(NO_CUDA is None, reason="this machine has CUDA; the test checks the reason given without it")
def test_without_cuda_every_gpu_plan_is_skipped_with_the_reason() -> None:
    for module in (torch_cuda, tensorrt):
        plans = module.plans(_ctx("cuda"))
        assert plans and all(isinstance(p, Skipped) for p in plans)
        assert all(p.reason for p in plans if isinstance(p, Skipped))
    assert "tensorrt" in (tensorrt.availability() or "")


def test_graph_constants_follow_the_new_device_and_dtype(exported: Exported) -> None:
    module, _, _ = exported
    _retarget_graph(module.graph, torch.device("meta"), torch.bfloat16)
    devices = {str(v) for n in module.graph.nodes for v in n.kwargs.values() if isinstance(v, torch.device)}
    dtypes = {v for n in module.graph.nodes for v in n.kwargs.values() if isinstance(v, torch.dtype)}
    assert devices == {"meta"}
    assert torch.float32 not in dtypes and torch.bfloat16 in dtypes
    assert not [n for n in module.graph.nodes if n.target is torch.ops.aten._assert_tensor_metadata.default]


def test_bf16_conversion_stays_close_to_fp32(exported: Exported) -> None:
    module, x, ref = exported
    assert keyword_inputs(module) == []  # exported positionally: called positionally
    converted = to_device_and_dtype(module, "cpu", "bf16")
    assert {p.dtype for p in converted.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = converted(x.to(torch.bfloat16)).float()
    assert float((out - ref).norm() / ref.norm()) < 2e-2


def test_fp8_rewrites_large_linears_and_keeps_scales_in_float32(exported: Exported) -> None:
    module, x, ref = exported
    assert quantize_linears_fp8(module) == 2  # up and down; head is too small to gain from fp8
    converted = to_device_and_dtype(module, "cpu", "fp8")
    buffers = dict(converted.named_buffers())
    assert buffers["_fp8_0_weight"].dtype == torch.float8_e4m3fn
    assert buffers["_fp8_0_scale"].dtype == torch.float32
    with torch.no_grad():
        out = converted(x.to(torch.bfloat16)).float()
    error = float((out - ref).norm() / ref.norm())
    assert 1e-4 < error < 0.1  # really 8-bit (worse than bf16's rounding), still close


def test_matmul_settings_are_pinned_to_the_build_time_values() -> None:
    before = matmul_settings()
    assert "fp32_precision" in before
    other = "ieee" if before["fp32_precision"] != "ieee" else "tf32"
    try:
        pin_matmul_settings({"fp32_precision": other})
        assert matmul_settings()["fp32_precision"] == other
    finally:
        pin_matmul_settings(before)
    assert matmul_settings() == before


def test_a_state_with_its_batch_off_the_first_axis_runs_eager_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # Measured on an H200: an LSTM's h0 [layers, batch, hidden] tiled on axis 0 for graph capture
    # failed every graph and compile build ("Guard failed: args_1.size()[0] == 2").
    monkeypatch.setattr(torch_cuda, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(torch_cuda, "_capability", lambda: (9, 0))
    x = TensorSpec(name="x", dtype="float32", shape=[-1, 5, 8])
    h0 = TensorSpec(name="h0", dtype="float32", shape=[2, -1, 16], batch_axis=1)
    ctx = _ctx("cuda")
    ctx.inputs = [x, h0]
    plans = torch_cuda.plans(ctx)
    built = {p.name: p for p in plans if isinstance(p, CandidatePlan)}
    skipped = {p.name: p.reason for p in plans if isinstance(p, Skipped)}
    # With the buckets dropped, the compile then recorded no cache artifacts: neither is built, with why.
    assert set(built) == {"torch-fp32.eager", "torch-fp16.eager", "torch-bf16.eager"}
    for name in ("torch-fp32.eager-cudagraphs", "torch-fp16.eager-cudagraphs", "torch-fp16.compile"):
        assert "h0 carries the batch on another" in skipped[name]
    assert "torch-fp8.compile" in skipped
    assert built["torch-fp32.eager"].options["batch_buckets"] == []


def test_torch_cuda_plan_names_follow_the_report_convention() -> None:
    plan = CandidatePlan("torch", "fp16", "torch", "compile", "cuda")
    assert plan.name == "torch-fp16.compile"


def test_tensorrt_engines_are_keyed_and_refused_elsewhere() -> None:
    key = tensorrt.engine_key("NVIDIA H200", "9.0", "10.13.0.35")
    assert key == "nvidia-h200-sm90-trt10-13-0-35"
    built = {"gpu": "NVIDIA H200", "capability": "9.0", "tensorrt": "10.13.0.35"}
    assert tensorrt.mismatch(built, dict(built)) is None
    why = tensorrt.mismatch(built, {**built, "gpu": "NVIDIA H100 80GB HBM3"})
    assert why is not None and "H100" in why
    assert "tensorrt" in (tensorrt.mismatch(built, {**built, "tensorrt": "10.14.1"}) or "")


def test_tensorrt_profile_spans_the_batch_sizes_and_fills_other_axes_from_data() -> None:
    spec = TensorSpec(name="input_ids", dtype="int64", shape=[-1, -1])
    shapes = tensorrt.profile_shapes(spec, [1, 8, 32], (8, 128))
    assert shapes == {"min": [1, 128], "opt": [32, 128], "max": [32, 128]}
    fixed = TensorSpec(name="x", dtype="float32", shape=[4, 3])
    assert tensorrt.profile_shapes(fixed, [1, 32], (4, 3))["max"] == [4, 3]


def test_percentiles_and_slug() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert summarize_ms(values)["p99"] == pytest.approx(99.01)
    assert slug("NVIDIA H100 80GB HBM3-sm90") == "nvidia-h100-80gb-hbm3-sm90"
