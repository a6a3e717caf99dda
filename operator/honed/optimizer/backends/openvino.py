"""OpenVINO on CPU: fp32 (explicit f32 hint), bf16, NNCF int8, int8 + bf16, accuracy-aware int8."""

from __future__ import annotations

from collections import OrderedDict
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

NAME = "openvino"
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def availability() -> str | None:
    """None when OpenVINO imports, else why not and the fix."""
    return missing_import("openvino", "pip install 'honed[openvino]'")


@device_plans("cpu")
def plans(ctx: SearchContext) -> list[PlanOrSkip]:
    """fp32; bf16 on CPUs with native bf16; int8 (NNCF), and on those CPUs int8 with its unquantized layers in bf16."""
    out: list[PlanOrSkip] = []
    bf16 = bool(BF16_FLAGS & ctx.cpu_flags)
    if "fp32" in ctx.precisions:
        out.append(CandidatePlan(NAME, "fp32"))
    if "bf16" in ctx.precisions:
        if bf16:
            out.append(CandidatePlan(NAME, "bf16"))
        else:
            out.append(Skipped(name=f"onnx-bf16.{NAME}", reason="this CPU has neither AVX512_BF16 nor AMX"))
    if "int8" in ctx.precisions:
        out.append(CandidatePlan(NAME, "int8"))
        if bf16:
            # Layers NNCF leaves unquantized run in bf16 instead of f32.
            out.append(CandidatePlan(NAME, "int8-bf16"))
    if "fp16" in ctx.precisions:
        out.append(Skipped(name=f"onnx-fp16.{NAME}", reason="OpenVINO's CPU plugin has no fp16 compute on x86"))
    return out


def _inference_precision(precision: str) -> str:
    return "bf16" if precision.endswith("bf16") else "f32"


def build(plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
    """Write the candidate as OpenVINO IR into ``out_dir``, quantized by NNCF for int8, weights kept in fp32."""
    import openvino as ov

    assert ctx.onnx_path is not None
    model = ov.Core().read_model(str(ctx.onnx_path))
    if plan.precision.startswith("int8"):
        model = _quantize(model, plan, ctx)
    target = out_dir / "model.xml"
    # Keep fp32 weights: compress_to_fp16 would change numerics behind the accuracy gate's back.
    ov.save_model(model, str(target), compress_to_fp16=False)
    options = {"inference_precision": _inference_precision(plan.precision), "num_streams": 1}
    return ArtifactMeta(
        backend=NAME,
        precision=plan.precision,
        variant=plan.variant,
        model_file=target.name,
        options=options,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
    )


def _quantize(model: Any, plan: CandidatePlan, ctx: BuildContext) -> Any:
    import nncf

    items = ctx.calibration_calls(limit=300)
    kwargs: dict[str, Any] = {"subset_size": min(300, len(items))}
    if ctx.attention:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        kwargs["preset"] = nncf.QuantizationPreset.MIXED
    if plan.variant != "accuracy-aware":
        return nncf.quantize(model, nncf.Dataset(items), **kwargs)
    return _quantize_with_accuracy_control(model, items, plan, ctx, kwargs)


def _quantize_with_accuracy_control(
    model: Any,
    items: list[dict[str, np.ndarray]],
    plan: CandidatePlan,
    ctx: BuildContext,
    kwargs: dict[str, Any],
) -> Any:
    """NNCF keeps the layers that cost the most accuracy in higher precision until the drop fits."""
    import nncf

    from honed.optimizer.gate import GateData

    gate = GateData.load(plan.options, ctx)
    validation = gate.calls(batch=1)
    n_outputs = len(ctx.outputs)

    def validate(compiled: Any, dataset: Any) -> tuple[float, None]:
        per_call = []
        for item in dataset:
            result = compiled(item)
            per_call.append([np.asarray(result[i]) for i in range(n_outputs)])
        # NNCF maximises the score; with an absolute max_drop its drop then equals ours.
        return 1.0 - gate.drop(per_call), None

    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(items),
        nncf.Dataset(validation),
        validate,
        max_drop=gate.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        **kwargs,
    )


class OpenVinoRunner:
    """Compiles one static-shape model per input-shape signature (static shapes run faster on CPU)."""

    def __init__(self, meta: ArtifactMeta, directory: Path, threads: int | None) -> None:
        """Read the artifact's model; ``threads`` None means the CPUs this process may use."""
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(str(directory / meta.model_file))
        # OpenVINO sizes its pools from the host's cores, blind to the container's CPU quota;
        # more streams than threads would only split the same threads further.
        threads = threads or default_threads()
        self.config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": meta.options.get("inference_precision", "f32"),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": str(min(int(meta.options.get("num_streams", 1)), threads)),
            "INFERENCE_NUM_THREADS": threads,
        }
        self.input_names = [spec.name for spec in meta.inputs]
        self.n_outputs = len(meta.outputs)
        self.compiled: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()

    def _request(self, feeds: dict[str, np.ndarray]) -> Any:
        key = tuple(tuple(feeds[name].shape) for name in self.input_names)
        if key not in self.compiled:
            model = self.model.clone()
            model.reshape({model.input(name): list(feeds[name].shape) for name in self.input_names})
            self.compiled[key] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
            if len(self.compiled) > 8:
                self.compiled.popitem(last=False)
        self.compiled.move_to_end(key)
        return self.compiled[key]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the artifact's output order; a new input shape is compiled first (the last 8 are kept)."""
        request = self._request(feeds)
        request.infer({name: feeds[name] for name in self.input_names}, share_inputs=True)
        return [np.array(request.get_output_tensor(i).data) for i in range(self.n_outputs)]


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> OpenVinoRunner:
    """Load an artifact this backend built."""
    return OpenVinoRunner(meta, directory, threads)
