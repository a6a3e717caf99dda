"""GPU benchmark: honed's automatic pick against eager fp32, ResNet-50 and BERT-base, batch 1 and 32.

For each model: export it (random weights) as the engine does, ask the torch CUDA backend for
its plans, build and gate the cheap candidates (eager, eager + CUDA graphs) at fp32/fp16/bf16,
compile the fastest half precision that passed the gate (and fp8 where the backend plans it),
time everything interleaved with CUDA events, pick the fastest candidate inside the gate per
batch size, then reload the picked artifacts in a new process with empty compiler caches and
time them again. Writes results.json (with GPU, driver and library versions) and results.md.

    PYTHONPATH=operator:benchmarks/gpu python benchmarks/gpu/run.py --out benchmarks/gpu
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

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import BenchModel, export, make  # noqa: E402
from report_md import _drop, gate_drop, gate_entry, write_markdown  # noqa: E402

from honed.optimizer.artifact import artifact_size, read_meta  # noqa: E402
from honed.optimizer.backends import torch_cuda  # noqa: E402
from honed.optimizer.backends.base import BuildContext, CandidatePlan, SearchContext  # noqa: E402
from honed.optimizer.backends.torch_cuda_baseline import strict_fp32  # noqa: E402
from honed.optimizer.backends.torch_cuda_runner import TorchCudaRunner  # noqa: E402
from honed.optimizer.gate import verdict  # noqa: E402
from honed.optimizer.gpu_timing import event_times_ms, gpu_info, summarize_ms  # noqa: E402

TARGETS = {"resnet50": {"1": 5.0, "32": 2.5}, "bert-base": {"1": 5.0, "32": 6.0}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def reference_outputs(model: BenchModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """True fp32 on the GPU: the engine's strict fp32 (TF32 off), every setting restored after
    (the compiler keys its cache on them, so a changed setting would make the build's saved
    cache miss in every other process)."""
    with strict_fp32(), torch.inference_mode():
        module = model.module.cuda()
        out = module(*[torch.from_numpy(v).cuda() for v in feeds.values()])
        leaves = out if isinstance(out, tuple) else (out,)
        return [t.float().cpu().numpy() for t in leaves]


class Baseline:
    """The model as an expert times it, as the engine's baseline does: the nn.Module as given,
    eager, strict fp32 (TF32 off), cudnn.benchmark on, under inference_mode."""

    name = "eager-fp32 (nn.Module)"

    def __init__(self, model: BenchModel) -> None:
        self.module = model.module.cuda()
        self.inputs = model.inputs

    def time_batch(self, feeds: dict[str, np.ndarray], iters: int) -> list[float]:
        xs = [torch.from_numpy(feeds[s.name]).cuda() for s in self.inputs]
        with strict_fp32(), torch.inference_mode():
            return event_times_ms(lambda: self.module(*xs), iters, warmup=min(10, iters))


def build_and_gate(
    plan: CandidatePlan,
    bctx: BuildContext,
    work: Path,
    val: dict[str, np.ndarray],
    ref: list[np.ndarray],
    max_drop: float,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": plan.name, "precision": plan.precision, "variant": plan.variant}
    out_dir = work / plan.name
    started = time.perf_counter()
    try:
        meta = torch_cuda.build(plan, bctx, out_dir)
        entry["build_seconds"] = round(time.perf_counter() - started, 2)
        entry["compile_seconds_by_batch"] = meta.options.get("build_seconds_by_batch")
        entry["fp8_linears"] = meta.options.get("fp8_linears")
        runner = torch_cuda.load(read_meta(out_dir), out_dir, None)
        assert isinstance(runner, TorchCudaRunner), "a built candidate, not the as-given baseline"
        entry["load_seconds"] = round(runner.load_seconds, 2)
        entry["cache"] = runner.cache_info
        gate = verdict("cosine", ref, runner.run(val), None, max_drop)
    except Exception as exc:  # a failing candidate is reported, never fatal to the search
        entry.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:400]}")
        log(f"  {plan.name}: FAILED {entry['reason']}")
        return entry
    entry["gate"] = gate_entry(gate)
    entry["artifact_bytes"] = artifact_size(out_dir)
    entry["artifact"] = str(out_dir)
    entry["status"] = "accepted" if gate.accepted else "rejected"
    if not gate.accepted:
        entry["reason"] = gate.reason
    entry["_runner"] = runner
    log(f"  {plan.name}: {entry['status']} in {entry['build_seconds']} s, drop {_drop(gate_drop(entry['gate']))}")
    return entry


def measure(
    contenders: list[tuple[str, Any]],
    feeds_by_batch: dict[int, dict[str, np.ndarray]],
    iters: dict[int, int],
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """Interleaved rounds: every contender once per round, so drift hits all of them alike."""
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in feeds_by_batch} for name, _ in contenders}
    peaks: dict[str, int] = {}
    for _ in range(rounds):
        for batch, feeds in feeds_by_batch.items():
            for name, runner in contenders:
                samples[name][batch] += runner.time_batch(feeds, iters[batch])
    for name, runner in contenders:
        if hasattr(runner, "peak_gpu_bytes"):
            peaks[name] = runner.peak_gpu_bytes()
    out: dict[str, dict[str, Any]] = {}
    for name, by_batch in samples.items():
        out[name] = {"latency_ms": {str(b): summarize_ms(t) for b, t in by_batch.items()}}
        out[name]["throughput"] = {
            str(b): round(b * 1000.0 / out[name]["latency_ms"][str(b)]["p50"], 1) for b in by_batch
        }
        if name in peaks:
            out[name]["peak_gpu_bytes"] = peaks[name]
    return out


def fresh_process(artifact: Path, feeds_path: Path, work: Path, iters: int, timeout: int) -> dict[str, Any]:
    env = dict(
        os.environ,
        TORCHINDUCTOR_CACHE_DIR=str(work / "fresh-inductor"),
        TRITON_CACHE_DIR=str(work / "fresh-triton"),
    )
    started = time.perf_counter()
    command = [
        sys.executable,
        str(HERE / "load_check.py"),
        str(artifact),
        str(feeds_path),
        "--iters",
        str(iters),
    ]
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return {"ok": False, "timed_out_after_s": timeout, "stderr_tail": _progress(tail)}
    if proc.returncode != 0:
        return {"ok": False, "returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(ok=True, process_seconds=round(time.perf_counter() - started, 2), progress=_progress(proc.stderr))
    return result


def _progress(stderr: str) -> str:
    """load_check's own progress lines (the compiler's log is left out)."""
    return "\n".join(line for line in stderr.splitlines() if line.startswith("[load_check]"))[-2000:]


def bench_model(
    name: str, batches: list[int], precisions: list[str], work: Path, max_drop: float, rounds: int, save: Any
) -> dict[str, Any]:
    log(f"{name}: export")
    model = make(name)
    path, calib = export(model, work / "source")
    val = model.feeds(16, seed=3)
    ref = reference_outputs(model, val)
    bctx = BuildContext(
        onnx_path=None,
        torch_path=path,
        inputs=model.inputs,
        outputs=model.outputs,
        calibration_path=calib,
        threads=os.cpu_count() or 1,
        attention=model.attention,
        work_dir=work,
    )
    sctx = SearchContext(
        inputs=model.inputs,
        outputs=model.outputs,
        source_format="pytorch",
        precisions=precisions,
        cpu_flags=set(),
        device="cuda",
        attention=model.attention,
        has_torch_program=True,
    )
    sctx.batch_sizes = batches
    plans = torch_cuda.plans(sctx)
    skipped = [{"name": p.name, "reason": p.reason} for p in plans if not isinstance(p, CandidatePlan)]
    real = [p for p in plans if isinstance(p, CandidatePlan)]

    log(f"{name}: stage 1, eager candidates")
    entries = [build_and_gate(p, bctx, work, val, ref, max_drop) for p in real if p.variant != "compile"]
    timing_feeds = {b: model.feeds(b, seed=10 + b) for b in batches}
    iters = {b: (200 if b == 1 else 40) for b in batches}
    quick = measure(
        [(e["name"], e["_runner"]) for e in entries if e.get("status") == "accepted"],
        {1: timing_feeds[min(batches)]},
        {1: 50},
        rounds=1,
    )

    # Compile only the half precision whose eager form passed the gate and ran fastest (ties: fp16,
    # the more precise): compiling costs minutes, and on one GPU both halves use the same tensor cores.
    def eager_best(precision: str) -> float:
        times = [
            quick[e["name"]]["latency_ms"]["1"]["p50"]
            for e in entries
            if e["precision"] == precision and e["name"] in quick
        ]
        return min(times, default=float("inf"))

    halves = sorted(
        (p for p in ("fp16", "bf16") if eager_best(p) < float("inf")),
        key=lambda p: eager_best(p) / (1.03 if p == "fp16" else 1.0),
    )
    compile_plans = [p for p in real if p.variant == "compile" and (p.precision == "fp8" or p.precision in halves[:1])]
    for p in real:
        if p.variant == "compile" and p not in compile_plans:
            skipped.append(
                {
                    "name": p.name,
                    "reason": "not compiled: "
                    + (f"{halves[0]} ran faster in eager mode" if halves else "no half precision passed the gate"),
                }
            )
    log(f"{name}: stage 2, compile {[p.name for p in compile_plans]}")
    entries += [build_and_gate(p, bctx, work, val, ref, max_drop) for p in compile_plans]

    log(f"{name}: stage 3, timing")
    contenders: list[tuple[str, Any]] = [(Baseline.name, Baseline(model))]
    contenders += [(e["name"], e["_runner"]) for e in entries if e.get("status") == "accepted"]
    timed = measure(contenders, timing_feeds, iters, rounds)
    base = timed.pop(Baseline.name)
    picks: dict[str, Any] = {}
    for b in map(str, batches):
        best = min(timed, key=lambda n: timed[n]["latency_ms"][b]["p50"])
        p50 = timed[best]["latency_ms"][b]["p50"]
        picks[b] = {
            "candidate": best,
            "p50_ms": p50,
            "throughput": timed[best]["throughput"][b],
            "baseline_p50_ms": base["latency_ms"][b]["p50"],
            "speedup": round(base["latency_ms"][b]["p50"] / p50, 2),
            "target": TARGETS.get(name, {}).get(b),
        }
    for e in entries:
        e.update(timed.get(e["name"], {}))

    result: dict[str, Any] = {
        "baseline": base,
        "candidates": entries,
        "skipped": skipped,
        "picks": picks,
        "fresh_process": {},
        "gate": {"metric": "cosine", "max_drop": max_drop, "validation_samples": 16},
    }
    save(result)
    log(f"{name}: stage 4, picked artifacts in a new process")
    np_feeds: dict[str, np.ndarray] = {}
    fresh: dict[str, Any] = {}
    for batch, feeds in timing_feeds.items():
        for k, v in feeds.items():
            np_feeds[f"feeds_{batch}_{k}"] = v
    for cand in sorted({p["candidate"] for p in picks.values()}):
        runner = next(e["_runner"] for e in entries if e["name"] == cand)
        feeds_path = work / f"fresh-{cand}.npz"
        expected = {f"expected_{b}_{i}": o for b, f in timing_feeds.items() for i, o in enumerate(runner.run(f))}
        np.savez(feeds_path, **np_feeds, **expected)  # type: ignore[arg-type]  # numpy's stubs match **arrays to allow_pickle
        fresh[cand] = fresh_process(
            Path(next(e["artifact"] for e in entries if e["name"] == cand)),
            feeds_path,
            work / f"fresh-{cand}",
            iters=100,
            timeout=240,
        )
        log(f"  {cand}: {json.dumps(fresh[cand])[:1500]}")
        result["fresh_process"] = fresh
        save(result)
    for e in entries:
        e.pop("_runner", None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,bert-base")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--work", type=Path, default=Path("/tmp/honed-gpu-bench"))
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--precisions", default="fp32,fp16,bf16,int8", help="int8 also lets fp8 be tried")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--merge", action="store_true", help="keep other models already in OUT/results.json")
    args = parser.parse_args(argv)
    batches = sorted(int(b) for b in args.batches.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results: dict[str, Any] = {"models": {}}
    if args.merge and results_path.is_file():
        results = json.loads(results_path.read_text())
    import transformers

    results["environment"] = {
        **gpu_info(),
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    results["method"] = (
        "CUDA-event time per iteration with inputs already on the GPU, after warm-up; "
        f"{args.rounds} interleaved rounds, p50 reported; speedup = eager strict-fp32 nn.Module p50 "
        "(TF32 off, cudnn.benchmark on, as the engine's baseline) over the pick's p50 at the same batch"
    )

    def saver(name: str) -> Any:
        def save(model_result: dict[str, Any]) -> None:
            results["models"][name] = {
                k: ([{f: v for f, v in e.items() if not f.startswith("_")} for e in val] if k == "candidates" else val)
                for k, val in model_result.items()
            }
            results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
            write_markdown(results, args.out / "results.md")

        return save

    for name in args.models.split(","):
        saver(name)(
            bench_model(
                name,
                batches,
                args.precisions.split(","),
                args.work / name,
                args.max_drop,
                args.rounds,
                saver(name),
            )
        )
    log(f"wrote {results_path}")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
