"""The baseline on NVIDIA GPUs: the user's own model as given, eager, strict fp32.

Every GPU speedup honed reports is against this, so it is the model the way an expert would
time it before optimizing anything: the factory's ``nn.Module`` (or the TorchScript file)
itself, not a module rebuilt from the exported program; in eval mode under
``torch.inference_mode``; fp32 with TF32 off for matmuls and cuDNN convolutions (TF32 is a
precision change, which is the candidates' business); ``cudnn.benchmark`` on, since the
shapes are fixed per batch size and cuDNN's own algorithm search is free speed at fp32.

These settings are process-wide in PyTorch. They are applied only around the baseline's own
calls (``strict_fp32``) and restored exactly afterwards, so they never leak into a candidate's
timing even when both run in one process; the compiler keys its cache on the matmul settings,
so a leaked value would also make saved compiler caches miss. Candidates set their own.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from honed.errors import InputError
from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.backends.base import AS_GIVEN, BuildContext, CandidatePlan


def _strict_flags() -> list[tuple[Any, str, Any]]:
    """(object, attribute, value) for strict fp32 on CUDA plus ``cudnn.benchmark``.

    PyTorch 2.9+ has per-backend ``fp32_precision`` settings, and reading the legacy
    ``allow_tf32`` flags after one of them was set raises (mixed legacy and new API), so the
    new ones are used wherever they exist.
    """
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    conv: Any = getattr(cudnn, "conv", None)
    flags: list[tuple[Any, str, Any]]
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        flags = [(matmul, "fp32_precision", "ieee"), (conv, "fp32_precision", "ieee")]
        rnn = getattr(cudnn, "rnn", None)
        if hasattr(rnn, "fp32_precision"):
            flags.append((rnn, "fp32_precision", "ieee"))
    else:
        flags = [(matmul, "allow_tf32", False), (cudnn, "allow_tf32", False)]
    return [*flags, (cudnn, "benchmark", True)]


@contextlib.contextmanager
def strict_fp32() -> Iterator[dict[str, Any]]:
    """Strict fp32 (no TF32) and ``cudnn.benchmark`` inside; every setting restored on exit.

    Yields the settings as applied, for the report.
    """
    flags = _strict_flags()
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in flags]
    try:
        for obj, name, value in flags:
            setattr(obj, name, value)
        yield settings_record(flags)
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def settings_record(flags: list[tuple[Any, str, Any]] | None = None) -> dict[str, Any]:
    """The strict settings by their PyTorch names plus the plain summary a reader looks for."""
    import torch

    names = {
        id(torch.backends.cuda.matmul): "torch.backends.cuda.matmul",
        id(torch.backends.cudnn): "torch.backends.cudnn",
    }
    conv = getattr(torch.backends.cudnn, "conv", None)
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if conv is not None:
        names[id(conv)] = "torch.backends.cudnn.conv"
    if rnn is not None:
        names[id(rnn)] = "torch.backends.cudnn.rnn"
    record: dict[str, Any] = {"tf32_matmul": False, "tf32_cudnn": False, "cudnn_benchmark": True}
    for obj, name, value in flags or _strict_flags():
        record[f"{names.get(id(obj), type(obj).__name__)}.{name}"] = value
    return record


def baseline_settings(meta: ArtifactMeta) -> dict[str, Any]:
    """How the baseline runs, as the report records it."""
    source = meta.options.get("factory") or "the TorchScript file"
    return {
        "module": f"as given ({source}), moved to the GPU, eval mode",
        "mode": "eager",
        "precision": "fp32",
        "grad": "torch.inference_mode",
        "timing": "CUDA events around each call, inputs already on the GPU, after warm-up",
        **settings_record(),
    }


def build(plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
    """The baseline's artifact: the factory to call, or the TorchScript file as given."""
    options: dict[str, Any] = {AS_GIVEN: True}
    model_file = ""
    if plan.options.get("factory"):
        options["factory"] = plan.options["factory"]
        options["sys_path"] = plan.options.get("sys_path", [])
    elif ctx.torch_path is not None and ctx.torch_path.suffix != ".pt2":
        model_file = "model.ts"
        shutil.copyfile(ctx.torch_path, out_dir / model_file)
    else:
        raise InputError(
            f"{plan.name}: the GPU baseline needs the model as given (a module:factory or a TorchScript file)",
            hint="give the model as package.module:factory or as a TorchScript file",
        )
    meta = ArtifactMeta(
        backend=plan.backend,
        precision="fp32",
        variant="eager",
        device="cuda",
        model_file=model_file,
        options=options,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
    )
    meta.options["settings"] = baseline_settings(meta)
    from honed.optimizer.torch_export import example_feeds

    BaselineRunner(meta, out_dir).run(example_feeds(ctx.inputs, batch=1))  # fail here, not at timing
    meta.write(out_dir)  # as torch_cuda.build does: the directory is a loadable artifact on return
    return meta


class BaselineRunner:
    """The user's module on the GPU; every call runs under ``strict_fp32``."""

    def __init__(self, meta: ArtifactMeta, directory: Path) -> None:
        """Load the user's module (its factory or the TorchScript file) onto the GPU."""
        import torch

        self.torch = torch
        self.meta = meta
        self.inputs = meta.inputs
        self.device = torch.device("cuda")
        self.module = self._load(meta, directory).to(self.device)
        from honed.optimizer.torch_call import Convention

        # Called as the CPU baseline calls it: by name where forward() names every input.
        self.convention = Convention.for_module(self.module, meta.inputs)
        self._lock = threading.Lock()
        self._peak = 0

    def _load(self, meta: ArtifactMeta, directory: Path) -> Any:
        if meta.options.get("factory"):
            from honed.optimizer.sources import load_factory

            for entry in meta.options.get("sys_path", []):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            return load_factory(meta.options["factory"])
        module = self.torch.jit.load(str(directory / meta.model_file), map_location="cpu")
        module.eval()
        return module

    def settings(self) -> dict[str, Any]:
        """The settings every GPU speedup is measured against (strict fp32), for the report."""
        return dict(self.meta.options.get("settings") or baseline_settings(self.meta))

    def _device_args(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        arrays = [np.ascontiguousarray(feeds[s.name], dtype=s.np_dtype()) for s in self.inputs]
        return [self.torch.from_numpy(a).to(self.device) for a in arrays]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the artifact's output order, computed under strict fp32."""
        from honed.optimizer.torch_call import flatten

        args = self._device_args(feeds)
        with self._lock, strict_fp32(), self.torch.inference_mode():
            named = dict(flatten(self.convention(self.module, args)))
        # The artifact's outputs are the flattened names (honed.optimizer.torch_call), in its order.
        wanted = [spec.name for spec in self.meta.outputs]
        result = [named[name] for name in wanted] if set(wanted) <= set(named) else list(named.values())
        return [r.detach().cpu().numpy() for r in result]

    def time_batch(self, feeds: dict[str, np.ndarray], iters: int) -> list[float]:
        """CUDA-event milliseconds per call, inputs on the GPU, as the candidates are timed."""
        from honed.optimizer.gpu_timing import event_times_ms

        args = self._device_args(feeds)
        torch = self.torch
        with self._lock, strict_fp32(), torch.inference_mode():
            torch.cuda.reset_peak_memory_stats()
            # Settings are applied around the loop, not per call: the timed calls are the module's alone.
            times = event_times_ms(
                lambda: self.convention(self.module, args), iters, warmup=min(10, max(2, iters // 5))
            )
            self._peak = max(self._peak, int(torch.cuda.max_memory_allocated()))
        return times

    def peak_gpu_bytes(self) -> int:
        """The most GPU memory torch allocated while timing, in bytes."""
        return self._peak


def load(meta: ArtifactMeta, directory: Path) -> BaselineRunner:
    """Load the baseline artifact."""
    return BaselineRunner(meta, directory)
