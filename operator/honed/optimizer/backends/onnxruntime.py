"""ONNX Runtime on CPU: tuned fp32, int8 static QDQ (per-channel, calibrated) and int8 dynamic."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.backends.base import BuildContext, CandidatePlan, PlanOrSkip, SearchContext
from honed.optimizer.report import Skipped

NAME = "onnxruntime"


def availability() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc}); pip install 'honed[onnxruntime]'"
    return None


def plans(ctx: SearchContext) -> list[PlanOrSkip]:
    out: list[PlanOrSkip] = []
    if ctx.device != "cpu":
        return out
    if "fp32" in ctx.precisions:
        out.append(CandidatePlan(NAME, "fp32"))
    if "int8" in ctx.precisions:
        out.append(CandidatePlan(NAME, "int8"))
        # Dynamic quantization only pays off where MatMul/Gemm dominate (transformers, MLPs).
        out.append(CandidatePlan(NAME, "int8-dynamic"))
    for precision in ("fp16", "bf16"):
        if precision in ctx.precisions:
            out.append(
                Skipped(
                    name=f"onnx-{precision}.{NAME}",
                    reason=f"ONNX Runtime's CPU provider has no fast {precision} kernels",
                )
            )
    return out


def build(plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
    assert ctx.onnx_path is not None
    target = out_dir / "model.onnx"
    if plan.precision == "fp32":
        shutil.copyfile(ctx.onnx_path, target)
    elif plan.precision == "int8":
        _quantize_static(ctx, target, excluded=list(plan.options.get("exclude_nodes", [])))
    elif plan.precision == "int8-dynamic":
        _quantize_dynamic(ctx.onnx_path, target)
    else:
        raise ValueError(f"onnxruntime has no {plan.precision} build")
    return ArtifactMeta(
        backend=NAME,
        precision=plan.precision,
        variant=plan.variant,
        model_file=target.name,
        options={"graph_optimization": "all"},
        inputs=ctx.inputs,
        outputs=ctx.outputs,
    )


def _quantize_static(ctx: BuildContext, target: Path, excluded: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    assert ctx.onnx_path is not None
    prepared = ctx.work_dir / "ort-preprocessed.onnx"
    try:
        quant_pre_process(str(ctx.onnx_path), str(prepared), skip_symbolic_shape=False)
    except Exception:
        # Symbolic shape inference fails on some graphs; the plain ONNX one is enough for QDQ.
        quant_pre_process(str(ctx.onnx_path), str(prepared), skip_symbolic_shape=True)
    calibration = ctx.calibration(limit=128)
    n = len(next(iter(calibration.values())))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.index = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.index >= n:
                return None
            feeds = {name: array[self.index : self.index + 1] for name, array in calibration.items()}
            self.index += 1
            return feeds

    quantize_static(
        str(prepared),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _quantize_dynamic(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-tensor dynamic quantization loses accuracy on small transformers; per-channel keeps it.
    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


class OrtRunner:
    def __init__(self, meta: ArtifactMeta, directory: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if meta.options.get("graph_optimization") == "default":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            str(directory / meta.model_file), options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [o.name for o in meta.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result: list[Any] = self.session.run(self.output_names, feeds)
        return [np.asarray(r) for r in result]


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> OrtRunner:
    return OrtRunner(meta, directory, threads)
