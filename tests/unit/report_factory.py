"""Reports as an optimizer Job writes them, for tests of what the operator does with them."""

from __future__ import annotations

from honed.optimizer.report import (
    Candidate,
    DataInfo,
    DeviceInfo,
    Latency,
    MetricResult,
    ModelInfo,
    Report,
    SearchSettings,
)
from honed.optimizer.tensors import TensorSpec


def candidate(
    name: str,
    *,
    p50: float,
    p99: float | None = None,
    throughput: float = 100.0,
    drop: float = 0.0,
    status: str = "accepted",
    reason: str = "",
    baseline_p50: float = 10.0,
) -> Candidate:
    source_precision, runtime = name.split(".", 1)
    precision = source_precision.split("-", 1)[1]
    return Candidate(
        name=name,
        backend=runtime if runtime in ("onnxruntime", "openvino", "tensorrt") else "torch",
        precision=precision,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        latency_ms=Latency(p50=p50, p90=(p99 or p50 * 1.2) * 0.95, p99=p99 or p50 * 1.2),
        throughput={"1": 1000.0 / p50, "8": throughput},
        metric=MetricResult(name="top1", value=0.9 - drop, drop=drop, reference=0.9),
        size_bytes=1_000_000,
        speedup=baseline_p50 / p50,
        artifact=f"artifacts/{name}",
    )


def report(candidates: list[Candidate], *, device: str = "cpu", max_drop: float = 0.01) -> Report:
    accepted = [c for c in candidates if c.status == "accepted"]
    winner = min(accepted, key=lambda c: c.latency_ms.p50 if c.latency_ms else 1e9) if accepted else None
    baseline = candidate("onnx-fp32.onnxruntime", p50=10.0)
    return Report(
        honed_version="0.1.0",
        created_at="2026-01-01T00:00:00Z",
        duration_s=60.0,
        model=ModelInfo(
            source="file:///models/tiny.onnx",
            format="onnx",
            inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 4])],
            outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 2])],
        ),
        device=DeviceInfo(cpu="test cpu", threads=2, gpu="test gpu" if device == "cuda" else None),
        data=DataInfo(source="synthesized", samples=16),
        settings=SearchSettings(max_metric_drop=max_drop),
        baseline=baseline,
        candidates=candidates,
        winner=None if winner is None else winner.name,
    )
