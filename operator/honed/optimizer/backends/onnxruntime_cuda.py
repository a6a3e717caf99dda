"""ONNX Runtime on NVIDIA GPUs: the CUDA execution provider (fp32, fp16) and the TensorRT one (fp16).

Only the onnxruntime-gpu build has these providers; the plain onnxruntime wheel offers the CPU
(and Azure) providers alone, and then every plan here is reported skipped with that reason.
TensorRT EP engines are cached next to the model, keyed like the TensorRT backend's engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from honed.errors import EnvironmentProblem, InputError
from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.backends.base import (
    BuildContext,
    CandidatePlan,
    PlanOrSkip,
    SearchContext,
    device_plans,
    missing_import,
)
from honed.optimizer.report import Skipped

NAME = "onnxruntime"
DEVICE = "cuda"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"


def _providers() -> tuple[list[str], str]:
    import onnxruntime as ort

    return list(ort.get_available_providers()), ort.__version__


def availability() -> str | None:
    """None when onnxruntime imports with the CUDA provider, else why not (the CPU-only package installed)."""
    missing = missing_import("onnxruntime", "the GPU image needs onnxruntime-gpu", problem="does not import")
    if missing is not None:
        return missing
    providers, version = _providers()
    if CUDA_EP not in providers:
        return (
            f"onnxruntime {version} has no {CUDA_EP} (it offers {', '.join(providers)}); "
            "the GPU image needs onnxruntime-gpu instead of onnxruntime"
        )
    return None


@device_plans(DEVICE, availability, skipped_as="onnx-*.onnxruntime (cuda)")
def plans(ctx: SearchContext) -> list[PlanOrSkip]:
    """fp32 and fp16 on the CUDA provider, and fp16 through the TensorRT provider where this onnxruntime has it."""
    providers, _ = _providers()
    out: list[PlanOrSkip] = [
        CandidatePlan(NAME, precision, variant="cuda", device=DEVICE)
        for precision in ("fp32", "fp16")
        if precision == "fp32" or precision in ctx.precisions
    ]
    if "fp16" in ctx.precisions:
        if TENSORRT_EP in providers:
            out.append(CandidatePlan(NAME, "fp16", variant="tensorrt-ep", device=DEVICE))
        else:
            out.append(Skipped(name="onnx-fp16-te.onnxruntime", reason=f"this onnxruntime has no {TENSORRT_EP}"))
    return out


def build(plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
    """Write the candidate's ONNX into ``out_dir`` and run it once.

    fp16 on the CUDA provider converts the model, keeping fp32 inputs and outputs. The run proves it
    loads and, for ``tensorrt-ep``, fills the artifact's engine cache. InputError when the source
    has no ONNX export.
    """
    import onnx

    from honed.optimizer.backends.onnxruntime import copy_onnx

    if ctx.onnx_path is None:
        raise InputError(f"{plan.name} needs the model as ONNX", hint="the ONNX export of the source failed earlier")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.onnx"
    if plan.precision == "fp16" and plan.variant == "cuda":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Inputs and outputs stay fp32, so callers and the gate see the model's own interface.
        onnx.save_model(convert_float_to_float16(onnx.load(str(ctx.onnx_path)), keep_io_types=True), str(target))
    else:
        copy_onnx(ctx.onnx_path, target)
    meta = ArtifactMeta(
        backend=NAME,
        precision=plan.precision,
        variant=plan.variant,
        device=DEVICE,
        model_file=target.name,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
    )
    runner = OrtCudaRunner(meta, out_dir)  # proves it loads; builds the TensorRT EP engine into the cache
    runner.run(ctx.calibration(limit=1))
    meta.write(out_dir)
    return meta


class OrtCudaRunner:
    """An ONNX Runtime session on the CUDA provider, behind the TensorRT provider for ``tensorrt-ep`` artifacts."""

    def __init__(self, meta: ArtifactMeta, directory: Path) -> None:
        """Open the artifact's model; EnvironmentProblem when this machine has no CUDA provider."""
        import onnxruntime as ort

        reason = availability()
        if reason is not None:
            raise EnvironmentProblem(f"cannot load {directory} on the GPU: {reason}", hint="serve it on a GPU node")
        providers: list[Any] = [CUDA_EP]
        if meta.variant == "tensorrt-ep":
            cache = directory / "trt-ep-cache"
            cache.mkdir(exist_ok=True)
            providers.insert(
                0,
                (
                    TENSORRT_EP,
                    {
                        "trt_fp16_enable": meta.precision == "fp16",
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True,
                    },
                ),
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(directory / meta.model_file), options, providers=providers)
        self.output_names = [o.name for o in meta.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the artifact's output order."""
        result: list[Any] = self.session.run(self.output_names, feeds)
        return [np.asarray(r) for r in result]


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> OrtCudaRunner:
    """Load an artifact this backend built (``threads`` is not used on the GPU)."""
    return OrtCudaRunner(meta, directory)
