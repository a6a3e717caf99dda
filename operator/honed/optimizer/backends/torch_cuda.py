"""PyTorch on NVIDIA GPUs: eager fp16/bf16 (channels-last), CUDA graphs, torch.compile, fp8.

Candidates, cheapest first:

- ``eager``: the exported program on the GPU in the precision's dtype (channels-last for
  image inputs); any batch size, no capture.
- ``eager-cudagraphs``: the same forward captured in one CUDA graph per batch bucket, which
  removes per-kernel launch cost (what dominates at batch 1).
- ``compile``: ``torch.compile`` with max-autotune and freezing (constant weights let the
  compiler fold batch norms and concatenate matmuls that share an input), captured in CUDA
  graphs per bucket. Build time is minutes; the artifact carries the compiler's cache
  artifacts so a new process loads in seconds.
- ``fp8`` (compile only, Hopper/Ada): linear layers in float8 with per-row dynamic scaling,
  the rest in bf16; kept only if it passes the accuracy gate like any other candidate.

The baseline is not one of these: it is the user's model as given, eager, strict fp32
(``torch_cuda_baseline``); the ``eager`` fp32 plan here is left to it in a search.

The deployable artifact is the exported fp32 program (.pt2), the saved compiler cache, and a
few sample rows for warm-up. AOTInductor packages are not used: loading one in a new process
crashed with PyTorch 2.11 / CUDA 13 (issue 7); tests/gpu checks the path used instead.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from honed.errors import EnvironmentProblem, InputError
from honed.optimizer.artifact import ArtifactMeta, Runner
from honed.optimizer.backends.base import (
    AS_GIVEN,
    BuildContext,
    CandidatePlan,
    PlanOrSkip,
    SearchContext,
    device_plans,
)
from honed.optimizer.gpu_timing import cuda_unavailable_reason
from honed.optimizer.report import Skipped

NAME = "torch"
DEVICE = "cuda"
DEFAULT_BATCH_SIZES = [1, 8, 32]
HALF_PRECISIONS = ("fp16", "bf16")

INDUCTOR_OPTIONS: dict[str, Any] = {
    "max_autotune": True,
    "max_autotune_gemm_backends": "ATEN,TRITON",
    # cuDNN's own algorithm search is as fast as Triton's conv templates here and costs no compile time.
    "max_autotune_conv_backends": "ATEN",
    "freezing": True,
    # The runner captures its own graph per batch bucket, with static input buffers.
    "triton.cudagraphs": False,
}


def availability() -> str | None:
    """None when torch has a usable CUDA device, else why not."""
    return cuda_unavailable_reason()


def _capability() -> tuple[int, int]:
    import torch

    return torch.cuda.get_device_capability(0)


@device_plans(DEVICE, availability, skipped_as="torch.cuda")
def plans(ctx: SearchContext) -> list[PlanOrSkip]:
    """Sources with a PyTorch program only: eager, eager with CUDA graphs, and torch.compile.

    Each precision runs eager with and without CUDA graphs; half precisions also compile, and fp8
    where the GPU has it. Skipped, with why: bf16 before compute capability 8.0, torch.compile of
    TorchScript, int8.
    """
    if not ctx.has_torch_program:
        return [
            Skipped(
                name="torch.cuda",
                reason="the model has no PyTorch program (ONNX source); "
                "torch candidates need a torch.export or TorchScript source",
            )
        ]
    source = "torchscript" if ctx.source_format == "torchscript" else "torch"
    batches, off_axis = _buckets(ctx)
    image_like = any(len(s.shape) == 4 and s.np_dtype().kind == "f" for s in ctx.inputs)
    major, minor = _capability()
    out: list[PlanOrSkip] = []

    def add(precision: str, variant: str, **extra: Any) -> None:
        options: dict[str, Any] = {
            "channels_last": image_like and precision != "fp32",
            "batch_buckets": batches,
            **extra,
        }
        out.append(
            CandidatePlan(
                backend=NAME,
                precision=precision,
                source=source,
                variant=variant,
                device=DEVICE,
                options=options,
            )
        )

    for precision in ("fp32", *HALF_PRECISIONS):
        if precision not in ctx.precisions and precision != "fp32":
            continue
        if precision == "bf16" and major < 8:
            out.append(Skipped(name=f"{source}-bf16.cuda", reason=f"GPU capability {major}.{minor} lacks bf16"))
            continue
        add(precision, "eager", cuda_graphs=False)
        if off_axis:
            out.extend(_unstacked(source, precision, off_axis))
            continue
        add(precision, "eager-cudagraphs", cuda_graphs=True)
        if source == "torchscript":
            out.append(
                Skipped(
                    name=f"{source}-{precision}.compile",
                    reason="torch.compile needs an exported program (.pt2), not TorchScript",
                )
            )
        elif precision != "fp32":
            add(precision, "compile", cuda_graphs=True, inductor=INDUCTOR_OPTIONS, build_cost="minutes")
    out.extend(_fp8_plans(ctx, source, batches, (major, minor)))
    if "int8" in ctx.precisions:
        out.append(
            Skipped(
                name=f"{source}-int8.compile",
                reason="int8 on the GPU is left to TensorRT; torch has no int8 GPU kernels without torchao",
            )
        )
    return out


def _unstacked(source: str, precision: str, off_axis: list[str]) -> list[Skipped]:
    """Why CUDA graphs and torch.compile are not built for inputs whose batch is off the first axis."""
    why = (
        "its graphs are compiled and captured per batch size with the samples stacked on the first axis; "
        f"{', '.join(off_axis)} {'carries' if len(off_axis) == 1 else 'carry'} the batch on another"
    )
    variants = ["eager-cudagraphs"] + (["compile"] if precision != "fp32" and source != "torchscript" else [])
    return [Skipped(name=f"{source}-{precision}.{variant}", reason=why) for variant in variants]


def _buckets(ctx: SearchContext) -> tuple[list[int], list[str]]:
    """The batch sizes to capture graphs for, and the inputs whose batch is off the first axis.

    Graphs are captured per batch size with the samples stacked on the first axis; with an input
    that carries its batch elsewhere (an RNN state [layers, batch, hidden]) there are none.
    """
    off_axis = [s.name for s in ctx.inputs if s.sample_axis not in (None, 0)]
    batches = sorted(set(getattr(ctx, "batch_sizes", None) or DEFAULT_BATCH_SIZES))
    return ([] if off_axis else batches), off_axis


def _fp8_plans(ctx: SearchContext, source: str, batches: list[int], cap: tuple[int, int]) -> list[PlanOrSkip]:
    name = f"{source}-fp8.compile"
    # fp8 is an 8-bit precision: asked for by name, or by asking for int8 (8-bit behind the gate).
    if "fp8" not in ctx.precisions and "int8" not in ctx.precisions:
        return []
    if cap < (8, 9):
        return [
            Skipped(
                name=name,
                reason=f"fp8 matmuls need compute capability 8.9+ (Ada/Hopper); this GPU is {cap[0]}.{cap[1]}",
            )
        ]
    if source == "torchscript":
        return [Skipped(name=name, reason="fp8 rewrites an exported program's graph; TorchScript is not one")]
    if not batches:  # an input's batch is off the first axis: no compiled candidate (see _unstacked)
        return [Skipped(name=name, reason="its graphs are captured per batch size on the first axis")]
    if not ctx.attention:
        return [
            Skipped(
                name=name,
                reason="fp8 covers linear layers only and this model has no attention "
                "blocks, so its compute is mostly convolution",
            )
        ]
    return [
        CandidatePlan(
            backend=NAME,
            precision="fp8",
            source=source,
            variant="compile",
            device=DEVICE,
            options={
                "channels_last": False,
                "batch_buckets": batches,
                "cuda_graphs": True,
                "inductor": INDUCTOR_OPTIONS,
                "build_cost": "minutes",
            },
        )
    ]


def build(plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
    """Write the artifact and prove it runs: compile candidates compile every bucket here."""
    import torch

    from honed.optimizer.backends.torch_cuda_runner import (
        CACHE_FILE,
        WARMUP_FILE,
        TorchCudaRunner,
        matmul_settings,
    )
    from honed.optimizer.gpu_timing import gpu_info

    reason = availability()
    if reason is not None:
        raise EnvironmentProblem(f"cannot build {plan.name}: {reason}", hint="run GPU candidates on a GPU pool")
    if plan.options.get(AS_GIVEN):
        from honed.optimizer.backends import torch_cuda_baseline

        out_dir.mkdir(parents=True, exist_ok=True)
        return torch_cuda_baseline.build(plan, ctx, out_dir)
    if ctx.torch_path is None or not ctx.torch_path.is_file():
        raise InputError(f"{plan.name} needs the model's PyTorch program", hint="give a torch.export .pt2 source")
    out_dir.mkdir(parents=True, exist_ok=True)
    model_file = "model.pt2" if ctx.torch_path.suffix == ".pt2" else "model.pt"
    shutil.copyfile(ctx.torch_path, out_dir / model_file)
    sample = ctx.calibration(limit=2)
    savez: Any = np.savez  # numpy's stubs reject **arrays
    savez(out_dir / WARMUP_FILE, **sample)

    facts = gpu_info()
    options = dict(plan.options)
    options.pop("build_cost", None)
    options["cuda_matmul_settings"] = matmul_settings()
    options["built_on"] = {k: facts.get(k) for k in ("gpu", "capability", "torch", "triton", "cuda_runtime")}
    meta = ArtifactMeta(
        backend=NAME,
        precision=plan.precision,
        variant=plan.variant,
        device=DEVICE,
        model_file=model_file,
        options=options,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
    )
    if plan.variant == "compile":
        _fresh_compiler_state(len(options.get("batch_buckets", [])))
    started = time.perf_counter()
    runner = TorchCudaRunner(meta, out_dir)
    meta.options["build_seconds_by_batch"] = runner.warmup_seconds
    meta.options["build_seconds"] = round(time.perf_counter() - started, 3)
    if plan.precision == "fp8":
        if runner.fp8_linears == 0:
            raise InputError(
                f"{plan.name}: no linear layer has both dimensions divisible by 16",
                hint="fp8 does not apply to this model; use fp16 or bf16",
            )
        meta.options["fp8_linears"] = runner.fp8_linears
    if plan.variant == "compile":
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            raise EnvironmentProblem(
                f"{plan.name}: the compiler recorded no cache artifacts",
                hint="check that the inductor FX graph cache is enabled",
            )
        (out_dir / CACHE_FILE).write_bytes(saved[0])
    meta.write(out_dir)
    del runner
    torch.cuda.empty_cache()
    return meta


def _fresh_compiler_state(buckets: int) -> None:
    """Forget earlier compilations so the saved cache holds this candidate's artifacts only."""
    import torch

    torch._dynamo.reset()
    try:
        from torch.compiler._cache import CacheArtifactManager

        CacheArtifactManager.clear()
    except ImportError:  # older torch: save_cache_artifacts then also carries earlier candidates
        pass
    _allow_recompiles(buckets)


def _allow_recompiles(buckets: int) -> None:
    """One recompilation per batch bucket (static shapes): keep dynamo from giving up on them."""
    import torch

    limit = max(8, buckets + 2)
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(limit, getattr(torch._dynamo.config, name)))


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> Runner:
    """Load for inference: compiles from the saved cache and captures graphs before returning."""
    reason = availability()
    if reason is not None:
        raise EnvironmentProblem(
            f"cannot load the torch CUDA artifact in {directory}: {reason}", hint="serve it on a GPU node"
        )
    if meta.options.get(AS_GIVEN):
        from honed.optimizer.backends import torch_cuda_baseline

        return torch_cuda_baseline.load(meta, directory)
    from honed.optimizer.backends.torch_cuda_runner import TorchCudaRunner

    if meta.variant == "compile":
        # No dynamo reset here: other models loaded in this process keep their compiled code.
        _allow_recompiles(len(meta.options.get("batch_buckets", [])))
    return TorchCudaRunner(meta, directory)
