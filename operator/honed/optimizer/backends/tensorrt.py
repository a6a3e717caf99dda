"""TensorRT engines built from the model's ONNX with the TensorRT Python API.

fp32, fp16, bf16, and int8 calibrated on the validation data; one optimization profile spans
the requested batch sizes (min = smallest, opt and max = largest); a timing cache shared by
builds on the same GPU model and TensorRT version makes later builds faster. An engine is only
valid for the GPU model and TensorRT version that built it, so the artifact is keyed by both
and loading it anywhere else is refused with the reason (never silently reused).

Enabled when ``tensorrt`` imports; otherwise every plan is reported skipped with the reason.
"""

from __future__ import annotations

import time
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
from honed.optimizer.gpu_timing import cuda_unavailable_reason, event_times_ms, slug
from honed.optimizer.report import Skipped
from honed.optimizer.tensors import TensorSpec

NAME = "tensorrt"
DEVICE = "cuda"
DEFAULT_BATCH_SIZES = [1, 8, 32]
WORKSPACE_BYTES = 8 << 30
CALIBRATION_BATCH = 8


def availability() -> str | None:
    """None when TensorRT imports and a CUDA device is usable, else why not."""
    missing = missing_import("tensorrt", "it ships in the GPU optimizer image only", problem="does not import")
    return missing if missing is not None else cuda_unavailable_reason()  # buffers are torch CUDA tensors


def engine_key(gpu: str, capability: str, trt_version: str) -> str:
    """The identity an engine is valid for: GPU model, compute capability, TensorRT version."""
    return slug(f"{gpu}-sm{capability.replace('.', '')}-trt{trt_version}")


def mismatch(built: dict[str, Any], here: dict[str, Any]) -> str | None:
    """Why an engine built under ``built`` cannot run ``here`` (None when it can)."""
    for field in ("gpu", "capability", "tensorrt"):
        if built.get(field) != here.get(field):
            return f"the engine was built for {field} {built.get(field)!r}; this node has {here.get(field)!r}"
    return None


def profile_shapes(spec: TensorSpec, batches: list[int], sample_shape: tuple[int, ...]) -> dict[str, list[int]]:
    """min/opt/max shapes of one input: the batch axis spans ``batches``, other axes as in the data.

    opt is the largest batch: that is where throughput is won; small batches are latency-bound.
    """
    if not spec.shape:
        return {"min": [], "opt": [], "max": []}
    rest = [d if d != -1 else int(sample_shape[i + 1]) for i, d in enumerate(spec.shape[1:])]
    if spec.shape[0] != -1:
        fixed = [spec.shape[0], *rest]
        return {"min": fixed, "opt": fixed, "max": fixed}
    return {"min": [min(batches), *rest], "opt": [max(batches), *rest], "max": [max(batches), *rest]}


def _device_facts() -> dict[str, Any]:
    import tensorrt as trt
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "tensorrt": trt.__version__}


def _capability(facts: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in str(facts["capability"]).split("."))


@device_plans(DEVICE, availability, skipped_as="onnx-*.tensorrt")
def plans(ctx: SearchContext) -> list[PlanOrSkip]:
    """fp32, and fp16, bf16 and int8 where TensorRT and the GPU have them, for the search's batch sizes; no fp8."""
    import tensorrt as trt

    batches = sorted(set(getattr(ctx, "batch_sizes", None) or DEFAULT_BATCH_SIZES))
    facts = _device_facts()
    out: list[PlanOrSkip] = []
    for precision in ("fp32", "fp16", "bf16", "int8", "fp8"):
        if precision != "fp32" and precision not in ctx.precisions:
            continue
        name = f"onnx-{precision}.tensorrt"
        if precision == "bf16" and (not hasattr(trt.BuilderFlag, "BF16") or _capability(facts) < (8, 0)):
            out.append(Skipped(name=name, reason=f"TensorRT {trt.__version__} on sm {facts['capability']} has no bf16"))
        elif precision == "int8" and not hasattr(trt, "IInt8EntropyCalibrator2"):
            out.append(Skipped(name=name, reason=f"TensorRT {trt.__version__} has no implicit int8 calibration"))
        elif precision == "fp8":
            out.append(
                Skipped(
                    name=name,
                    reason="fp8 in TensorRT needs a Q/DQ-quantized ONNX; honed tries fp8 through torch on Hopper",
                )
            )
        else:
            out.append(
                CandidatePlan(
                    backend=NAME,
                    precision=precision,
                    source="onnx",
                    device=DEVICE,
                    options={"batch_sizes": batches},
                )
            )
    return out


def build(plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
    """Build a TensorRT engine from the ONNX into ``out_dir``, with one optimization profile over the batch sizes.

    The engine is only valid on the GPU model, compute capability and TensorRT version it was
    built with (``engine_key``); a timing cache per such key is shared across builds.

    Raises:
        EnvironmentProblem: no TensorRT or CUDA here, or TensorRT failed to build the engine.
        InputError: the source has no ONNX export, or TensorRT cannot parse it.
    """
    reason = availability()
    if reason is not None:
        raise EnvironmentProblem(f"cannot build {plan.name}: {reason}", hint="run TensorRT candidates on a GPU pool")
    if ctx.onnx_path is None or not ctx.onnx_path.is_file():
        raise InputError(f"{plan.name} needs the model as ONNX", hint="the ONNX export of the source failed earlier")
    import tensorrt as trt

    started = time.perf_counter()
    facts = _device_facts()
    key = engine_key(facts["gpu"], facts["capability"], facts["tensorrt"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(ctx.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(
            f"TensorRT cannot parse {ctx.onnx_path.name}: {errors[:800]}",
            hint="export the model with a supported opset or leave tensorrt out of search.backends",
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    calibration = ctx.calibration()
    batches = list(plan.options.get("batch_sizes", DEFAULT_BATCH_SIZES))
    shapes = {s.name: profile_shapes(s, batches, calibration[s.name].shape) for s in ctx.inputs}
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, shape["min"], shape["opt"], shape["max"])
    config.add_optimization_profile(profile)

    if plan.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32, where int8 is slower
    if plan.precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    calibrator = None
    if plan.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        calib_profile, calibrator = _calibration(trt, builder, ctx, calibration, out_dir)
        config.set_calibration_profile(calib_profile)
        config.int8_calibrator = calibrator

    # One timing cache per GPU model and TensorRT version, shared by every build on them.
    cache_path = ctx.work_dir / f"tensorrt-timing-{key}.cache"
    timing = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EnvironmentProblem(
            f"TensorRT could not build {plan.name} (see the TensorRT log above)",
            hint="try another precision or leave tensorrt out of search.backends",
        )
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    out_dir.mkdir(parents=True, exist_ok=True)
    model_file = f"model.{key}.plan"
    (out_dir / model_file).write_bytes(bytes(serialized))
    meta = ArtifactMeta(
        backend=NAME,
        precision=plan.precision,
        variant=plan.variant,
        device=DEVICE,
        model_file=model_file,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
        options={
            **facts,
            "engine_key": key,
            "profile": shapes,
            "batch_sizes": batches,
            "calibration_batches": getattr(calibrator, "batches_used", None),
            "build_seconds": round(time.perf_counter() - started, 2),
        },
    )
    meta.write(out_dir)
    return meta


def _calibration(
    trt: Any, builder: Any, ctx: BuildContext, data: dict[str, np.ndarray], out_dir: Path
) -> tuple[Any, Any]:
    """A fixed-shape calibration profile and an entropy calibrator over the calibration rows."""
    rows = min(len(v) for v in data.values())
    batch = min(CALIBRATION_BATCH, rows)
    if batch < 1:
        raise InputError(
            "int8 calibration needs at least one row of calibration data",
            hint="give validation data with the model (spec.validation.dataUri)",
        )
    profile = builder.create_optimization_profile()
    for spec in ctx.inputs:
        shape = [batch, *data[spec.name].shape[1:]]
        profile.set_shape(spec.name, shape, shape, shape)
    feeds = [
        {k: np.ascontiguousarray(v[i : i + batch]) for k, v in data.items()} for i in range(0, rows - batch + 1, batch)
    ]

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]  # TensorRT is untyped here (GPU image only): the base is Any
        def __init__(self) -> None:
            super().__init__()
            self.batches_used = 0
            self._pending = iter(feeds)
            self._alive: list[Any] = []  # device copies must outlive the calibrator's use of them
            self._cache = out_dir / "int8-calibration.cache"

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            import torch

            feed = next(self._pending, None)
            if feed is None:
                return None
            self._alive = [torch.from_numpy(feed[n]).cuda().contiguous() for n in names]
            self.batches_used += 1
            return [int(t.data_ptr()) for t in self._alive]

        def read_calibration_cache(self) -> bytes | None:
            return self._cache.read_bytes() if self._cache.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            self._cache.write_bytes(bytes(cache))

    return profile, Calibrator()


class TensorRTRunner:
    """A deserialized engine with one execution context; buffers are torch CUDA tensors."""

    def __init__(self, meta: ArtifactMeta, directory: Path) -> None:
        """Deserialize the artifact's engine; EnvironmentProblem when built for another GPU, capability or TensorRT."""
        import tensorrt as trt
        import torch

        here = _device_facts()
        why = mismatch(meta.options, here)
        if why is not None:
            raise EnvironmentProblem(
                f"cannot load the TensorRT engine in {directory}: {why}",
                hint="rebuild the candidate on this GPU model and TensorRT version",
            )
        self._torch = torch
        self.meta = meta
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine((directory / meta.model_file).read_bytes())
        if self.engine is None:
            raise EnvironmentProblem(
                f"TensorRT could not deserialize {meta.model_file}", hint="rebuild the candidate on this node"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [s.name for s in meta.outputs]
        self._dtypes = {n: _torch_dtype(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}
        self._peak = 0

    def _bind(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        torch = self._torch
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda().to(self._dtypes[name])
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, int(tensor.data_ptr()))
            setattr(self, f"_in_{name}", tensor)  # keep alive while the engine reads it
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            self.context.set_tensor_address(name, int(tensor.data_ptr()))
            outputs.append(tensor)
        return outputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the artifact's output order and dtypes; EnvironmentProblem when the engine fails to run."""
        torch = self._torch
        outputs = self._bind(feeds)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EnvironmentProblem("TensorRT failed to run the engine", hint="see the TensorRT log above")
        stream.synchronize()
        return [
            o.cpu().numpy().astype(s.np_dtype(), copy=False) for o, s in zip(outputs, self.meta.outputs, strict=True)
        ]

    def time_batch(self, feeds: dict[str, np.ndarray], iters: int) -> list[float]:
        """CUDA-event milliseconds of ``iters`` engine runs on ``feeds``, copied to the GPU once beforehand."""
        torch = self._torch
        self._bind(feeds)
        stream = torch.cuda.current_stream()
        free_before, total = torch.cuda.mem_get_info()
        times = event_times_ms(lambda: self.context.execute_async_v3(stream.cuda_stream), iters, warmup=min(10, iters))
        free_after, _ = torch.cuda.mem_get_info()
        # TensorRT allocates outside torch's allocator: count what the device as a whole holds.
        self._peak = max(self._peak, total - min(free_before, free_after))
        return times

    def peak_gpu_bytes(self) -> int:
        """Device memory in use while timing (whole device: TensorRT bypasses torch's allocator)."""
        return self._peak


def _torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, value in (("int64", torch.int64), ("bfloat16", torch.bfloat16)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = value
    if dtype not in table:
        raise InputError(f"TensorRT tensor type {dtype} has no torch equivalent here")
    return table[dtype]


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> TensorRTRunner:
    """Load an artifact this backend built; EnvironmentProblem without TensorRT or CUDA here."""
    reason = availability()
    if reason is not None:
        raise EnvironmentProblem(
            f"cannot load the TensorRT engine in {directory}: {reason}",
            hint="serve it on a GPU node whose image has TensorRT",
        )
    return TensorRTRunner(meta, directory)
