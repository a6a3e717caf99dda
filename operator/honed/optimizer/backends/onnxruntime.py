"""ONNX Runtime on CPU: tuned fp32, int8 static QDQ (per-channel, calibrated) and int8 dynamic."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.backends.base import (
    BuildContext,
    CandidatePlan,
    PlanOrSkip,
    SearchContext,
    device_plans,
    missing_import,
)
from honed.optimizer.machine import default_threads
from honed.optimizer.report import Skipped
from honed.optimizer.tensors import TensorSpec

NAME = "onnxruntime"


def availability() -> str | None:
    """None when ONNX Runtime imports, else why not and the fix."""
    return missing_import("onnxruntime", "pip install 'honed[onnxruntime]'")


@functools.cache
def max_ir_version() -> int | None:
    """The newest ONNX IR version this ONNX Runtime loads, or None when it is not installed.

    ONNX Runtime does not export the number; it names it when refusing a newer model, so ask
    it with a one-node model stamped with an IR version no runtime reads.
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    def loads(ir_version: int) -> tuple[bool, str]:
        probe.ir_version = ir_version
        try:
            ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as exc:
            return False, str(exc)
        return True, ""

    ok, message = loads(1000)
    if ok:
        return None  # no limit to speak of
    named = re.search(r"max supported IR version:\s*(\d+)", message)
    if named and loads(int(named.group(1)))[0]:
        return int(named.group(1))
    # The message changed: walk down from the newest IR version onnx knows.
    return next((v for v in range(onnx.IR_VERSION, 6, -1) if loads(v)[0]), None)


@device_plans("cpu")
def plans(ctx: SearchContext) -> list[PlanOrSkip]:
    """fp32; static int8 (not on attention graphs); dynamic int8 on attention or MatMul-heavy graphs; no fp16, bf16."""
    out: list[PlanOrSkip] = []
    if "fp32" in ctx.precisions:
        out.append(CandidatePlan(NAME, "fp32"))
    if "int8" in ctx.precisions:
        # Static QDQ suits convolutional graphs; on attention graphs it is slow to calibrate and
        # loses to dynamic quantization, which pays off wherever MatMul/Gemm dominate.
        if not ctx.attention:
            out.append(CandidatePlan(NAME, "int8"))
        if ctx.matmul_heavy or ctx.attention:
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
    """Write the candidate's ONNX into ``out_dir``: the original, or int8 (static, dynamic or accuracy-aware)."""
    assert ctx.onnx_path is not None
    target = out_dir / "model.onnx"
    if plan.precision == "fp32":
        copy_onnx(ctx.onnx_path, target)
    elif plan.precision == "int8" and plan.variant == "accuracy-aware":
        _quantize_accuracy_aware(plan, ctx, target)
    elif plan.precision == "int8":
        _quantize_static(_prepare(ctx), ctx, target, excluded=[])
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


def copy_onnx(source: Path, target: Path) -> None:
    """Copy a model; one stored with external data is re-saved so the artifact is self-contained."""
    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    external = any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    if not external:
        shutil.copyfile(source, target)
        return
    proto = onnx.load(str(source))
    big = proto.ByteSize() > 1_900_000_000
    onnx.save_model(proto, str(target), save_as_external_data=big, location=f"{target.name}.data")


def _prepare(ctx: BuildContext) -> Path:
    """Pre-process for quantization (shape inference, fusions) and name every node for exclusion lists."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from honed.optimizer.backends.ort_sensitivity import name_nodes

    assert ctx.onnx_path is not None
    prepared = ctx.work_dir / "ort-preprocessed.onnx"
    try:
        quant_pre_process(str(ctx.onnx_path), str(prepared), skip_symbolic_shape=False)
    except Exception:
        # Symbolic shape inference fails on some graphs; the plain ONNX one is enough for QDQ.
        quant_pre_process(str(ctx.onnx_path), str(prepared), skip_symbolic_shape=True)
    name_nodes(prepared, prepared)
    return prepared


def _quantize_static(prepared: Path, ctx: BuildContext, target: Path, excluded: list[str], limit: int = 128) -> Path:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    calls = ctx.calibration_calls(limit=limit)

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types: the base is Any
        def __init__(self) -> None:
            self.items = iter(calls)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

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
    return target


def _quantize_accuracy_aware(plan: CandidatePlan, ctx: BuildContext, target: Path) -> None:
    """Rank nodes by quantization damage, then keep the worst in fp32 until the gate passes."""
    import onnx

    from honed.optimizer.backends import ort_sensitivity as sens
    from honed.optimizer.gate import GateData

    gate = GateData.load(plan.options, ctx)
    prepared = _prepare(ctx)
    nodes = [(n.name, n.op_type, list(n.input), list(n.output)) for n in onnx.load(str(prepared)).graph.node]
    full = _quantize_static(prepared, ctx, ctx.work_dir / "ort-int8-full.onnx", excluded=[], limit=64)
    ranked = sens.rank_nodes(prepared, full, gate.calls()[:8], ctx.work_dir, nodes)
    attempt = ctx.work_dir / "ort-int8-attempt.onnx"

    def quantize(excluded: list[str]) -> Path:
        return _quantize_static(prepared, ctx, attempt, excluded, limit=64)

    def drop_of(model: Path) -> float:
        runner = OrtRunner.from_path(model, ctx.outputs, ctx.threads)
        return gate.drop([runner.run(call) for call in gate.calls(batch=8)])

    excluded = sens.search_exclusions(ranked, quantize, drop_of, gate.max_drop)
    _quantize_static(prepared, ctx, target, excluded, limit=64)


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
    """An ONNX Runtime CPU session: all graph optimizations, ``threads`` intra-op threads, sequential execution."""

    def __init__(self, meta: ArtifactMeta, directory: Path, threads: int | None) -> None:
        """Open the artifact's model; ``threads`` None means the CPUs this process may use."""
        self._open(directory / meta.model_file, [o.name for o in meta.outputs], threads)

    @classmethod
    def from_path(cls, path: Path, outputs: list[TensorSpec], threads: int | None) -> OrtRunner:
        """A runner for a bare ONNX file, as accuracy-aware quantization runs its attempts."""
        runner = cls.__new__(cls)
        runner._open(path, [o.name for o in outputs], threads)
        return runner

    def _open(self, path: Path, output_names: list[str], threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's default is one thread per host core, blind to the container's CPU quota.
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the artifact's output order."""
        result: list[Any] = self.session.run(self.output_names, feeds)
        return [np.asarray(r) for r in result]


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> OrtRunner:
    """Load an artifact this backend built."""
    return OrtRunner(meta, directory, threads)
