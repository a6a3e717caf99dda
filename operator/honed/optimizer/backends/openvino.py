"""OpenVINO on CPU: fp32 (explicit f32 hint), bf16, NNCF int8, int8 + bf16, accuracy-aware int8."""

from __future__ import annotations

import shutil
import time
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
RANKING_SAMPLES = 100


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
    target = out_dir / "model.xml"
    shared = _shared_int8(plan, ctx)
    if shared is not None and (shared / "model.xml").is_file():
        # int8 and int8-bf16 differ only in the precision the unquantized layers run in: one
        # calibration serves both.
        for name in ("model.xml", "model.bin"):
            shutil.copyfile(shared / name, out_dir / name)
    else:
        model = ov.Core().read_model(str(ctx.onnx_path))
        if plan.precision.startswith("int8"):
            model = _quantize(model, plan, ctx)
        # Keep fp32 weights: compress_to_fp16 would change numerics behind the accuracy gate's back.
        ov.save_model(model, str(target), compress_to_fp16=False)
        if shared is not None and not shared.exists():
            # Whole or not at all: a build killed mid-copy must not leave half an IR to reuse.
            partial = shared.with_name(f"{shared.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            for name in ("model.xml", "model.bin"):
                shutil.copyfile(out_dir / name, partial / name)
            partial.rename(shared)
    precision = _inference_precision(plan.precision)
    if plan.variant == "accuracy-aware":
        # NNCF validated each attempt compiled with the CPU plugin's default precision (bf16 where
        # the CPU has it natively): the layers it kept out of int8 run in the precision it checked.
        precision = _default_precision(ov.Core())
    options = {"inference_precision": precision, "num_streams": 1}
    return ArtifactMeta(
        backend=NAME,
        precision=plan.precision,
        variant=plan.variant,
        model_file=target.name,
        options=options,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
    )


def _default_precision(core: Any) -> str:
    """The CPU plugin's own inference precision here: "bf16" on CPUs with native bf16, else "f32"."""
    hint = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
    return "bf16" if "bf" in hint.lower() else "f32"


def _shared_int8(plan: CandidatePlan, ctx: BuildContext) -> Path | None:
    """Where this search keeps the NNCF int8 IR that plain int8 and int8-bf16 share; None for other plans."""
    if plan.precision not in ("int8", "int8-bf16") or plan.variant:
        return None
    return ctx.work_dir / "openvino-int8"


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

    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    # Ranking every quantized layer on the whole validation set dominates the build (one compile and
    # one pass over the set per layer); the gate's final check still runs on the whole set.
    restorer = AdvancedAccuracyRestorerParameters(ranking_subset_size=min(RANKING_SAMPLES, len(validation)))
    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(items),
        nncf.Dataset(validation),
        validate,
        max_drop=gate.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        advanced_accuracy_restorer_parameters=restorer,
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
        self.input_axes = {spec.name: spec.sample_axis for spec in meta.inputs}
        # Padding needs every output's batch axis to cut it back; without one, batches run as they come.
        axes = [spec.sample_axis for spec in meta.outputs]
        self.output_axes: list[int] = [a for a in axes if a is not None] if None not in axes else []
        self.compiled: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()
        # Seconds one inference takes, per (batch, the other dimensions): a moving average of its own calls.
        self.seconds: dict[tuple[int, Any], float] = {}

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
        """Outputs in the artifact's output order; a new input shape is compiled first (the last 8 are kept).

        A batch whose size is not a power of two runs as power-of-two shapes only: a Triton dynamic
        batcher forms every size from 1 to max_batch_size, and one static compile per size would
        recompile on most batches. It is either padded to the next power of two (the last sample
        repeated, the outputs cut back) or split into powers of two (13 = 8 + 4 + 1), whichever
        this runner's own timings of those shapes say is faster: padding wins where a batch costs
        little more than one sample (GPUs, small models), splitting where time grows with the batch
        (a transformer on a few CPU cores ran a padded 9 as slowly as 16).
        """
        size = self._batch_size(feeds)
        bucket = 1 << (size - 1).bit_length() if size else 0
        if bucket == size or not self.output_axes:
            return self._infer(feeds)
        parts = [1 << bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        rest = self._rest(feeds)
        if sum(self.seconds.get((p, rest), np.inf) for p in parts) < self.seconds.get((bucket, rest), np.inf):
            return self._split(feeds, parts)
        padded = {
            name: _pad(feeds[name], axis, bucket) if axis is not None else feeds[name]
            for name, axis in self.input_axes.items()
        }
        outputs = self._infer(padded)
        return [np.take(out, range(size), axis=axis) for out, axis in zip(outputs, self.output_axes, strict=True)]

    def _split(self, feeds: dict[str, np.ndarray], parts: list[int]) -> list[np.ndarray]:
        pieces, start = [], 0
        for part in parts:
            chunk = {
                name: _rows(feeds[name], axis, start, start + part) if axis is not None else feeds[name]
                for name, axis in self.input_axes.items()
            }
            pieces.append(self._infer(chunk))
            start += part
        return [np.concatenate([piece[i] for piece in pieces], axis=axis) for i, axis in enumerate(self.output_axes)]

    def _rest(self, feeds: dict[str, np.ndarray]) -> tuple[tuple[int, ...], ...]:
        """The input dimensions other than the batch: what a timing of one batch size also depends on."""
        return tuple(
            tuple(d for i, d in enumerate(feeds[name].shape) if i != self.input_axes[name]) for name in self.input_names
        )

    def _batch_size(self, feeds: dict[str, np.ndarray]) -> int:
        """The batch every batched input agrees on; 0 when there is none to pad (no batch axis, or they differ)."""
        sizes = {feeds[name].shape[axis] for name, axis in self.input_axes.items() if axis is not None}
        return sizes.pop() if len(sizes) == 1 else 0

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = self._request(feeds)
        started = time.perf_counter()
        request.infer({name: feeds[name] for name in self.input_names}, share_inputs=True)
        elapsed = time.perf_counter() - started
        key = (self._batch_size(feeds), self._rest(feeds))
        self.seconds[key] = elapsed if key not in self.seconds else 0.7 * self.seconds[key] + 0.3 * elapsed
        return [np.array(request.get_output_tensor(i).data) for i in range(self.n_outputs)]


def _rows(array: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """Samples ``start`` to ``stop`` of ``array`` along ``axis``, contiguous (OpenVINO shares the memory)."""
    return np.ascontiguousarray(np.take(array, range(start, stop), axis=axis))


def _pad(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` grown to ``size`` along ``axis`` by repeating its last entry."""
    index = np.minimum(np.arange(size), array.shape[axis] - 1)
    return np.ascontiguousarray(np.take(array, index, axis=axis))


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> OpenVinoRunner:
    """Load an artifact this backend built."""
    return OpenVinoRunner(meta, directory, threads)
