"""Issue 17 item 4: can fp8 matmuls beat fp16 on BERT-base's linear layers on this GPU?

BERT-base's four matmul shapes per encoder layer (QKV 768->2304, attention output 768->768,
FFN 768->3072 and 3072->768) at batch 1 and 32 with sequence 128 (M = 128 and 4096 rows), timed
as fp16 ``F.linear`` (cuBLAS, what torch.compile calls or templates at these sizes) and as
``torch._scaled_mm`` in float8_e4m3fn with per-tensor scales (fp16 out) and per-row scales
(bf16 out, what honed's fp8 candidate uses). The operands are already quantized, so the fp8
figures are an upper bound: a real fp8 layer also pays for quantizing its activations.
CUDA-event time per call over 200 calls replayed from one CUDA graph per contender,
contenders interleaved over rounds, medians.

    python benchmarks/gpu/fp8_gemm.py --out OUT      # on a machine with an fp8 GPU (sm 8.9+)
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

HIDDEN, FFN, SEQUENCE = 768, 3072, 128
SHAPES = {
    "qkv": (HIDDEN, 3 * HIDDEN),
    "attention-out": (HIDDEN, HIDDEN),
    "ffn-up": (HIDDEN, FFN),
    "ffn-down": (FFN, HIDDEN),
}


def _contenders(torch: Any, *t: Any) -> dict[str, Callable[[], Any]]:
    a, w, a8, w8t, one, per_row, per_col = t

    def fp16() -> Any:
        return torch.nn.functional.linear(a, w)

    def fp8_tensorwise() -> Any:
        return torch._scaled_mm(a8, w8t, scale_a=one, scale_b=one, out_dtype=torch.float16)

    def fp8_rowwise() -> Any:
        return torch._scaled_mm(a8, w8t, scale_a=per_row, scale_b=per_col, out_dtype=torch.bfloat16)

    return {"fp16": fp16, "fp8-tensorwise": fp8_tensorwise, "fp8-rowwise": fp8_rowwise}


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    calls: int = args.calls

    def timed(fn: Callable[[], Any]) -> float:
        # Replayed from a CUDA graph, as honed's compiled candidates run: at these sizes a launch
        # from Python (about 13 us) would hide the kernels' own time.
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end)) / calls * 1000  # microseconds

    rows: list[dict[str, Any]] = []
    for batch in (1, 32):
        m = batch * SEQUENCE
        for name, (k, n) in SHAPES.items():
            a = torch.randn(m, k, device="cuda", dtype=torch.float16)
            w = torch.randn(n, k, device="cuda", dtype=torch.float16)
            a8, w8t = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn).t()
            one = torch.tensor(1.0, device="cuda")
            per_row, per_col = torch.ones(m, 1, device="cuda"), torch.ones(1, n, device="cuda")
            contenders = _contenders(torch, a, w, a8, w8t, one, per_row, per_col)
            times: dict[str, list[float]] = {key: [] for key in contenders}
            for round_ in range(args.rounds):
                order = list(contenders)[round_ % 3 :] + list(contenders)[: round_ % 3]
                for key in order:
                    times[key].append(timed(contenders[key]))
            us = {key: statistics.median(values) for key, values in times.items()}
            tflops = {key: 2 * m * k * n / (value * 1e-6) / 1e12 for key, value in us.items()}
            rows.append({"batch": batch, "layer": name, "m": m, "k": k, "n": n, "us": us, "tflops": tflops})
    totals = {
        batch: {key: sum(r["us"][key] for r in rows if r["batch"] == batch) for key in rows[0]["us"]}
        for batch in (1, 32)
    }
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "calls": args.calls,
        "rows": rows,
        "per_layer_us": totals,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fp8-gemm.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# fp8 vs fp16 matmuls at BERT-base's shapes",
        "",
        f"{result['gpu']}, torch {result['torch']}; CUDA-event time per call, {args.calls} calls in a CUDA graph, "
        f"{args.rounds} interleaved rounds, medians. fp8 operands already quantized (an upper bound for fp8).",
        "",
        "| batch | layer | M x K x N | fp16 us (TFLOP/s) | fp8 per-tensor us | ratio | fp8 per-row us | ratio |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        us, tf = r["us"], r["tflops"]
        lines.append(
            f"| {r['batch']} | {r['layer']} | {r['m']}x{r['k']}x{r['n']} | {us['fp16']:.1f} ({tf['fp16']:.0f}) | "
            f"{us['fp8-tensorwise']:.1f} | {us['fp16'] / us['fp8-tensorwise']:.2f}x | {us['fp8-rowwise']:.1f} | "
            f"{us['fp16'] / us['fp8-rowwise']:.2f}x |"
        )
    lines.append("")
    for batch, total in totals.items():
        lines.append(
            f"- batch {batch}: the four matmuls of one layer take {total['fp16']:.1f} us in fp16, "
            f"{total['fp8-tensorwise']:.1f} us in fp8 per-tensor ({total['fp16'] / total['fp8-tensorwise']:.2f}x), "
            f"{total['fp8-rowwise']:.1f} us per-row ({total['fp16'] / total['fp8-rowwise']:.2f}x)."
        )
    (args.out / "fp8-gemm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
