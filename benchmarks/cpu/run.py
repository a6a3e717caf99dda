"""CPU benchmark: PyTorch eager fp32 vs honed's pick, ResNet-50, BERT-base (seq 128) and the digits CNN.

Each model is one `honed optimize` run, so the baseline and every candidate are timed interleaved
in the same rounds; speedups are ratios from that one run. Writes results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

MODELS: dict[str, dict[str, list[str] | str]] = {
    "digits-cnn": {"model": "honed.demo.digits:trained_cnn", "args": ["--metric", "top1"], "data": "digits"},
    "resnet50": {
        "model": "benchmarks.cpu.models:resnet50",
        "args": ["--input", "pixel_values:float32:-1,3,224,224", "--metric", "top1"],
    },
    "bert-base": {
        "model": "benchmarks.cpu.models:bert_base",
        "args": [
            "--input",
            "input_ids:int64:-1,128",
            "--input",
            "attention_mask:int64:-1,128",
            "--metric",
            "top1",
        ],
    },
}


def run_model(name: str, spec: dict[str, list[str] | str], work: Path, max_drop: float) -> dict[str, object]:
    out = work / name
    args = [
        sys.executable,
        "-m",
        "honed",
        "optimize",
        str(spec["model"]),
        "--out",
        str(out),
        "--max-metric-drop",
        str(max_drop),
        "--batch-sizes",
        "1,8",
        "--time-budget",
        "15m",
        "--no-plot",
        *list(spec["args"]),
    ]
    if spec.get("data") == "digits":
        from honed.demo.digits import cache_dir, write_validation

        args += ["--data", str(write_validation(cache_dir() / "digits_val.npz"))]
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"model": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    report = json.loads((out / "report.json").read_text())
    base = report["baseline"]
    winner = next(c for c in report["candidates"] if c["name"] == report["winner"])
    return {
        "model": name,
        "search_seconds": round(elapsed, 1),
        "baseline": base["name"],
        "winner": winner["name"],
        "metric": winner["metric"],
        "baseline_p50_ms_b1": base["latency_ms"]["p50"],
        "winner_p50_ms_b1": winner["latency_ms"]["p50"],
        "speedup_b1": round(base["latency_ms"]["p50"] / winner["latency_ms"]["p50"], 2),
        "baseline_items_s_b8": base["throughput"].get("8"),
        "winner_items_s_b8": winner["throughput"].get("8"),
        "speedup_b8": round(winner["throughput"]["8"] / base["throughput"]["8"], 2),
        "device": report["device"],
        "candidates": [
            {k: c.get(k) for k in ("name", "status", "latency_ms", "throughput", "metric", "reason")}
            for c in report["candidates"]
        ],
    }


def markdown(results: list[dict[str, Any]], device: dict[str, Any]) -> str:
    lines = [
        f"CPU: {device.get('cpu')} — {device.get('threads')} threads — flags: {', '.join(device.get('flags', []))}"
        f" — load average at end: {device.get('load_average')}",
        "",
        "| model | baseline p50 b1 (ms) | honed pick | pick p50 b1 (ms) | speedup b1 | baseline items/s b8 | "
        "pick items/s b8 | speedup b8 | metric drop | search (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} |")
            continue
        metric = r["metric"] or {}
        lines.append(
            f"| {r['model']} | {r['baseline_p50_ms_b1']:.3f} | {r['winner']} | {r['winner_p50_ms_b1']:.3f} | "
            f"**{r['speedup_b1']}x** | {r['baseline_items_s_b8']:.1f} | {r['winner_items_s_b8']:.1f} | "
            f"**{r['speedup_b8']}x** | {metric.get('drop', 0):.4f} ({metric.get('name')}) | {r['search_seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--max-metric-drop", type=float, default=0.005, help="0.5 point")
    args = parser.parse_args()
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        print(f"benchmarking {name} ...", flush=True)
        results.append(run_model(name, MODELS[name], work, args.max_metric_drop))
        print(
            json.dumps({k: v for k, v in results[-1].items() if k not in ("candidates", "device")}),
            flush=True,
        )
    # A run of some models keeps the others' latest results, so the table always covers all three.
    previous = args.out / "results.json"
    if previous.is_file():
        ran = {r["model"] for r in results}
        kept = [r for r in json.loads(previous.read_text())["results"] if r["model"] not in ran]
        results = sorted(kept + results, key=lambda r: list(MODELS).index(str(r["model"])))
    device = next((r["device"] for r in reversed(results) if "device" in r), {})
    (args.out / "results.json").write_text(json.dumps({"device": device, "results": results}, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results, device))  # type: ignore[arg-type]
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
