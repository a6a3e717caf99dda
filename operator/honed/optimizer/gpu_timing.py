"""CUDA-synchronized timing and GPU facts for the GPU backends and benchmarks.

GPU work is asynchronous, so host clocks around a call measure the launch, not the work:
every figure here comes from CUDA events recorded on the stream around each iteration,
after a warm-up that keeps module loading, compilation and allocator growth out of the
numbers. torch is imported inside the functions (it is an optional runtime).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
from collections.abc import Callable
from typing import Any


def cuda_unavailable_reason() -> str | None:
    """None when torch sees a CUDA device, else why not (for availability() and test skips)."""
    try:
        import torch
    except ImportError as exc:  # the GPU image always has torch; a CPU image may not
        return f"torch does not import: {exc}"
    if not torch.cuda.is_available():
        build = torch.version.cuda
        if build is None:
            return f"torch {torch.__version__} is a CPU-only build (no CUDA)"
        return f"torch {torch.__version__} (CUDA {build}) sees no CUDA device"
    return None


def event_times_ms(step: Callable[[], Any], iters: int, warmup: int = 10) -> list[float]:
    """Milliseconds per call of ``step``, each timed by its own pair of CUDA events.

    ``step`` must only enqueue work on the current stream (no host sync inside), which is
    what a CUDA graph replay or a compiled/eager forward on device-resident inputs does.
    """
    import torch

    if iters < 1:
        raise ValueError("iters must be at least 1")
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in pairs:
        start.record()
        step()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in pairs]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, like numpy's default."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize_ms(values: list[float]) -> dict[str, float]:
    """p50/p90/p99 plus the mean, rounded to the microsecond."""
    return {
        "p50": round(percentile(values, 50), 4),
        "p90": round(percentile(values, 90), 4),
        "p99": round(percentile(values, 99), 4),
        "mean": round(statistics.fmean(values), 4),
    }


def peak_gpu_bytes_during(step: Callable[[], Any]) -> int:
    """Peak bytes the caching allocator held while ``step`` ran (weights and graphs included)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def gpu_info() -> dict[str, Any]:
    """The facts a GPU result is only valid for: GPU model, capability, driver, library versions."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda}
    if not torch.cuda.is_available():
        return info
    props = torch.cuda.get_device_properties(0)
    info.update(
        gpu=props.name,
        capability=f"{props.major}.{props.minor}",
        multiprocessors=props.multi_processor_count,
        memory_bytes=int(props.total_memory),
        cudnn=torch.backends.cudnn.version(),
    )
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    info["driver"] = _driver_version()
    return info


def _driver_version() -> str | None:
    """The NVIDIA driver version (580.x), which torch does not expose; nvidia-smi or NVML has it."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout.strip()
            if out:
                return out.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass  # no usable nvidia-smi: ask NVML below instead
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML missing or refused: the driver stays unknown, which the JSON says
        return None


def gpu_key() -> str:
    """A file-name-safe id of this GPU model and capability, for artifacts valid on it alone."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return slug(f"{props.name}-sm{props.major}{props.minor}")


def slug(text: str) -> str:
    """``text`` lower-cased, other characters as single hyphens: ``NVIDIA H100 80GB`` -> ``nvidia-h100-80gb``."""
    keep = [c.lower() if c.isalnum() else "-" for c in text]
    return "-".join(part for part in "".join(keep).split("-") if part)
