"""Issue 17 item 4: does fp8 with static per-tensor scales lift BERT-base past a hand-tuned compile?

benchmarks/gpu/fp8_gemm.py shows per-tensor fp8 matmuls 1.4x faster than fp16 at BERT-base's
batch-32 shapes (per-row, what honed's fp8 candidate uses, 1.2x). This puts that into the whole
model: every large ``nn.Linear`` of BERT-base (random weights, benchmarks/gpu/models.py) becomes
an fp8 matmul with one weight scale and one activation scale calibrated on 4 batches of 8 (the
largest |x| seen), fp16 out; everything else runs in fp16. Contenders, both
``torch.compile(mode="max-autotune")`` with their CUDA graphs:

- ``hand``: ``torch.compile(model.half())``, the expert's configuration of the issue;
- ``fp8-static``: the same with the fp8 linears.

Timed in 5 interleaved rounds (CUDA events, 200 calls at batch 1, 50 at batch 32), ratios paired per
round, medians; the gate figure is the smallest per-sample cosine similarity to the fp32 model.
Writes fp8-static.json and fp8-static.md to --out.

    PYTHONPATH=operator:benchmarks/gpu python benchmarks/gpu/fp8_static.py --out OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from models import make
from torch import nn

FP8_MAX = 448.0
MIN_WEIGHT = 1 << 16


class StaticFp8Linear(nn.Module):
    """``x @ W.T + b`` in float8_e4m3fn with one scale for W and a calibrated one for x."""

    w8t: torch.Tensor
    w_scale: torch.Tensor
    x_scale: torch.Tensor
    x_inverse: torch.Tensor

    def __init__(self, linear: nn.Linear, amax: float) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        w_scale = w.abs().amax().clamp(min=1e-12) / FP8_MAX
        self.register_buffer("w8t", (w / w_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).t())
        self.register_buffer("w_scale", w_scale.reshape(()))
        x_scale = torch.tensor(max(amax, 1e-12) / FP8_MAX, device=w.device)
        self.register_buffer("x_scale", x_scale)
        self.register_buffer("x_inverse", 1.0 / x_scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().half(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        x8 = (rows.float() * self.x_inverse).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(
            x8, self.w8t, scale_a=self.x_scale, scale_b=self.w_scale, bias=self.bias, out_dtype=torch.float16
        )
        return out.reshape(*x.shape[:-1], out.shape[-1])


def input_amax(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    seen: dict[str, float] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):

            def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], _out: Any, name: str = name) -> None:
                seen[name] = max(seen.get(name, 0.0), float(args[0].abs().max()))

            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for handle in hooks:
        handle.remove()
    return seen


def to_fp8(model: nn.Module, amax: dict[str, float]) -> int:
    swapped = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if (
                isinstance(child, nn.Linear)
                and full in amax
                and child.weight.numel() >= MIN_WEIGHT
                and child.in_features % 16 == 0
                and child.out_features % 16 == 0
            ):
                setattr(parent, name, StaticFp8Linear(child, amax[full]))
                swapped += 1
    return swapped


def timed(fn: Any, feeds: dict[str, torch.Tensor], calls: int) -> float:
    for _ in range(5):
        fn(**feeds)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(calls):
        fn(**feeds)
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / calls


def min_cosine(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    return min(
        float(torch.nn.functional.cosine_similarity(g.float().flatten(1), w.flatten(1)).min())
        for g, w in zip(got, want, strict=True)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench = make("bert-base")
    reference = bench.module.cuda().eval()

    def on_gpu(feeds: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}

    calibration = [on_gpu(bench.feeds(8, seed=100 + i)) for i in range(4)]
    test = {b: on_gpu(bench.feeds(b, seed=7)) for b in (1, 32)}
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rounds": args.rounds}
    with torch.no_grad():
        want = {b: [t.float() for t in reference(**test[b])] for b in (1, 32)}
        fp8_model = copy.deepcopy(reference).half()
        result["fp8_linears"] = to_fp8(fp8_model, input_amax(reference, calibration))
        contenders = {}
        for name, module in (("hand", copy.deepcopy(reference).half()), ("fp8-static", fp8_model)):
            started = time.perf_counter()
            contenders[name] = torch.compile(module, mode="max-autotune", dynamic=False)
            for b in (1, 32):
                contenders[name](**test[b])
                contenders[name](**test[b])
            result[f"{name}_build_s"] = round(time.perf_counter() - started, 1)
            result[f"{name}_min_cosine"] = {
                str(b): min_cosine(list(contenders[name](**test[b])), want[b]) for b in (1, 32)
            }
        for b, calls in ((1, 200), (32, 50)):
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for round_ in range(args.rounds):
                for name in list(contenders)[round_ % 2 :] + list(contenders)[: round_ % 2]:
                    times[name].append(timed(contenders[name], test[b], calls))
            result[f"b{b}"] = {
                "p50_ms": {name: statistics.median(values) for name, values in times.items()},
                "hand_over_fp8": statistics.median(
                    h / f for h, f in zip(times["hand"], times["fp8-static"], strict=True)
                ),
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fp8-static.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# BERT-base: static per-tensor fp8 linears vs a hand-tuned fp16 compile",
        "",
        f"{result['gpu']}, torch {result['torch']}; {result['fp8_linears']} linears in fp8; both compiled with "
        f"mode=max-autotune; {args.rounds} interleaved rounds, medians.",
        "",
        "| batch | hand p50 ms | fp8-static p50 ms | hand / fp8 (paired) | fp8 min cosine | hand min cosine |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for b in (1, 32):
        entry = result[f"b{b}"]
        lines.append(
            f"| {b} | {entry['p50_ms']['hand']:.3f} | {entry['p50_ms']['fp8-static']:.3f} | "
            f"{entry['hand_over_fp8']:.3f}x | {result['fp8-static_min_cosine'][str(b)]:.5f} | "
            f"{result['hand_min_cosine'][str(b)]:.5f} |"
        )
    (args.out / "fp8-static.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
