"""Run a torch CUDA artifact: eager or compiled, optionally replayed from CUDA graphs.

CUDA graphs need fixed shapes, so graphs are captured for a few batch sizes (buckets) at load
time and a request is padded up to the nearest bucket (larger requests are split). Compiled
artifacts carry the compiler's cache artifacts, loaded before the first compile so a new
process reuses the build's kernels and autotuning choices instead of autotuning again.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from honed.errors import InputError
from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.backends.torch_cuda_convert import (
    DTYPES,
    keyword_inputs,
    load_program,
    quantize_linears_fp8,
    to_device_and_dtype,
)
from honed.optimizer.gpu_timing import event_times_ms
from honed.optimizer.tensors import TensorSpec

log = logging.getLogger(__name__)

CACHE_FILE = "inductor-cache.bin"
WARMUP_FILE = "warmup.npz"


def _torch_dtype(spec: TensorSpec) -> torch.dtype:
    dtype: torch.dtype = getattr(torch, spec.np_dtype().name)
    return dtype


class TorchCudaRunner:
    """One loaded candidate. ``run`` takes host arrays; ``time_batch`` times device-resident work."""

    def __init__(self, meta: ArtifactMeta, directory: Path) -> None:
        """Load the exported program onto the GPU at the artifact's precision.

        Compiled artifacts restore their saved compiler cache first; with batch buckets and a saved
        warm-up sample, every bucket is compiled and captured now, before any request.
        """
        started = time.perf_counter()
        opts = meta.options
        self.meta = meta
        self.inputs = meta.inputs
        self.outputs = meta.outputs
        self.device = torch.device("cuda")
        self.precision = meta.precision
        self.compiled = meta.variant == "compile"
        self.cuda_graphs = bool(opts.get("cuda_graphs", False))
        self.channels_last = bool(opts.get("channels_last", False))
        self.fp8_linears = 0
        self.cache_info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], list[torch.Tensor]]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._peak = 0
        # Plain values for the traced forward: the compiler should not trace pydantic objects.
        self._names = [spec.name for spec in meta.inputs]
        self._dtype = DTYPES[meta.precision]
        self._out_dtypes = [_torch_dtype(spec) for spec in meta.outputs]
        torch.backends.cudnn.benchmark = True  # fixed shapes per bucket: let cuDNN pick its fastest conv

        module = load_program(directory / meta.model_file)
        if self.precision == "fp8":
            self.fp8_linears = quantize_linears_fp8(module)  # type: ignore[arg-type]
        self.module = to_device_and_dtype(module, "cuda", self.precision, self.channels_last)
        self._keywords = bool(keyword_inputs(module))
        self._fn = self._forward
        if self.compiled:
            pin_matmul_settings(opts.get("cuda_matmul_settings"))
            cache = directory / CACHE_FILE
            if cache.is_file():
                info = torch.compiler.load_cache_artifacts(cache.read_bytes())
                self.cache_info["loaded"] = _cache_counts(info)
                log.info("loaded compiler cache artifacts %s", self.cache_info["loaded"])
            self._fn = torch.compile(
                self._forward, dynamic=False, fullgraph=False, options=dict(opts.get("inductor", {}))
            )
        self.buckets: list[int] = (
            sorted(int(b) for b in opts.get("batch_buckets", [])) if (self.cuda_graphs or self.compiled) else []
        )
        self.warmup_seconds: dict[str, float] = {}
        warm = directory / WARMUP_FILE
        if self.buckets and warm.is_file():
            with np.load(warm) as data:
                sample = {spec.name: data[spec.name] for spec in self.inputs}
            self.prepare(sample)
        self.load_seconds = time.perf_counter() - started

    # -- the function every path runs ------------------------------------------------------------
    def _forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        args: list[torch.Tensor] = []
        for x in xs:
            if x.is_floating_point():
                x = x.to(self._dtype)
                if self.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
            args.append(x)
        out = self.module(**dict(zip(self._names, args, strict=True))) if self._keywords else self.module(*args)
        leaves = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if len(leaves) != len(self._out_dtypes):
            raise InputError(
                f"the program gives {len(leaves)} tensors, the artifact has {len(self._out_dtypes)} outputs",
                hint="rebuild the artifact from the same exported program",
            )
        return [t.to(dtype) for t, dtype in zip(leaves, self._out_dtypes, strict=True)]

    # -- compile and capture ---------------------------------------------------------------------
    def prepare(self, sample: dict[str, np.ndarray]) -> None:
        """Compile (or load from cache) and capture a graph for every bucket, before any request."""
        counters = _fx_counters()
        for bucket in self.buckets:
            started = time.perf_counter()
            feeds = [torch.from_numpy(_tile(sample[s.name], bucket)).to(self.device) for s in self.inputs]
            self._capture(bucket, feeds)
            torch.cuda.synchronize()
            self.warmup_seconds[str(bucket)] = round(time.perf_counter() - started, 3)
            log.info("batch %d ready in %.1f s", bucket, self.warmup_seconds[str(bucket)])
        if self.compiled:
            after = _fx_counters()
            self.cache_info.update({k: after[k] - counters.get(k, 0) for k in after})

    def _capture(self, bucket: int, feeds: list[torch.Tensor]) -> None:
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # compiles on the first call; cuBLAS/cuDNN pick kernels on the next
                    self._fn(*feeds)
            torch.cuda.current_stream().wait_stream(side)
            if not self.cuda_graphs:
                self._graphs[bucket] = (None, feeds, [])  # type: ignore[assignment]
                return
            static_in = [f.clone() for f in feeds]
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = self._fn(*static_in)
            self._graphs[bucket] = (graph, static_in, static_out)

    # -- serving -----------------------------------------------------------------------------------
    def _batch(self, feeds: dict[str, np.ndarray]) -> int:
        return int(np.asarray(feeds[self.inputs[0].name]).shape[0]) if self.inputs[0].shape else 1

    def _bucket_for(self, n: int) -> int | None:
        return next((b for b in self.buckets if b >= n), None)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for host arrays, in the artifact's output order.

        With batch buckets, a batch is padded up to its bucket, and one above the largest is split.
        """
        arrays = [np.ascontiguousarray(feeds[spec.name], dtype=spec.np_dtype()) for spec in self.inputs]
        n = arrays[0].shape[0] if arrays[0].ndim else 1
        if not self.buckets or not all(s.batched for s in self.inputs):
            with self._lock, torch.no_grad():
                outs = self._fn(*[torch.from_numpy(a).to(self.device) for a in arrays])
                return [o.cpu().numpy() for o in outs]
        top = self.buckets[-1]
        if n > top:  # split into the largest bucket, the last piece padded
            pieces = [
                self.run({s.name: a[i : i + top] for s, a in zip(self.inputs, arrays, strict=True)})
                for i in range(0, n, top)
            ]
            return [np.concatenate(parts) for parts in zip(*pieces, strict=True)]
        bucket = self._bucket_for(n)
        assert bucket is not None
        with self._lock, torch.no_grad():
            graph, static_in, static_out = self._graphs[bucket]
            for buf, arr in zip(static_in, arrays, strict=True):
                buf[:n].copy_(torch.from_numpy(arr))
            if graph is None:
                static_out = self._fn(*static_in)
            else:
                graph.replay()
            return [o[:n].cpu().numpy() for o in static_out]

    def time_batch(self, feeds: dict[str, np.ndarray], iters: int) -> list[float]:
        """CUDA-event milliseconds per iteration for this batch, inputs already on the GPU.

        Host-to-device copies are left out on purpose: they depend on the serving path
        (Triton can hand over GPU tensors), not on the model's kernels.
        """
        arrays = [np.ascontiguousarray(feeds[s.name], dtype=s.np_dtype()) for s in self.inputs]
        device_in = [torch.from_numpy(a).to(self.device) for a in arrays]
        n = arrays[0].shape[0]
        bucket = self._bucket_for(n) if self.buckets else None

        if bucket is not None and all(s.batched for s in self.inputs):
            graph, static_in, _ = self._graphs[bucket]

            def step() -> None:
                for buf, x in zip(static_in, device_in, strict=True):
                    buf[:n].copy_(x)
                if graph is None:
                    self._fn(*static_in)
                else:
                    graph.replay()
        else:

            def step() -> None:
                self._fn(*device_in)

        with self._lock, torch.no_grad():
            torch.cuda.reset_peak_memory_stats()
            times = event_times_ms(step, iters, warmup=min(10, max(2, iters // 5)))
            self._peak = max(self._peak, int(torch.cuda.max_memory_allocated()))
        return times

    def peak_gpu_bytes(self) -> int:
        """Peak GPU memory held while timing (weights, activations and graph pools)."""
        return self._peak

    def settings(self) -> dict[str, Any]:
        """How this candidate runs, for the report (its process-wide settings as they are now)."""
        record: dict[str, Any] = {
            "module": "the exported program",
            "mode": "torch.compile" if self.compiled else "eager",
            "precision": self.precision,
            "channels_last": self.channels_last,
            "cuda_graphs": self.cuda_graphs,
            "batch_buckets": ",".join(map(str, self.buckets)),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        }
        record.update({f"torch.backends.cuda.matmul.{k}": v for k, v in matmul_settings().items()})
        conv_precision = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
        if conv_precision is not None:  # TF32 convolutions are PyTorch's default for fp32
            record["torch.backends.cudnn.conv.fp32_precision"] = conv_precision
        return record


_MATMUL_SETTINGS = (
    "fp32_precision",
    "allow_fp16_reduced_precision_reduction",
    "allow_bf16_reduced_precision_reduction",
)


def matmul_settings() -> dict[str, Any]:
    """The process-wide matmul settings the compiler keys its cache on (and picks kernels by)."""
    matmul = torch.backends.cuda.matmul
    return {name: getattr(matmul, name) for name in _MATMUL_SETTINGS if hasattr(matmul, name)}


def pin_matmul_settings(saved: dict[str, Any] | None) -> None:
    """Apply the build's matmul settings: under others the saved cache misses and compiling starts over.

    They are process-wide; a serving process runs one model, so this changes nothing else.
    """
    matmul = torch.backends.cuda.matmul
    for name, value in (saved or {}).items():
        if hasattr(matmul, name) and getattr(matmul, name) != value:
            log.info("setting torch.backends.cuda.matmul.%s = %r as at build time", name, value)
            setattr(matmul, name, value)


def _tile(rows: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // rows.shape[0])
    return np.ascontiguousarray(np.concatenate([rows] * reps)[:n])


def _fx_counters() -> dict[str, int]:
    """The compiler's cache and autotuning counters: hits prove the saved cache was used."""
    from torch._dynamo.utils import counters

    names = {"fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass"}
    names |= {k for k in counters["inductor"] if "cache" in k or "autotune" in k}
    return {k: int(counters["inductor"].get(k, 0)) for k in sorted(names)}


def _cache_counts(info: Any) -> dict[str, int]:
    """How many saved artifacts of each kind (inductor, autotune, aot_autograd...) were loaded."""
    artifacts = getattr(info, "artifacts", None) or {}
    return {str(kind): len(keys) for kind, keys in artifacts.items()}
