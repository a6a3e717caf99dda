"""Serving benchmark: Triton with vs without dynamic batching, Triton vs the runtime alone, cache hits.

    python benchmarks/serving/run.py --out benchmarks/serving                # optimizes ResNet-50 first
    python benchmarks/serving/run.py --out benchmarks/serving --report DIR   # a `honed optimize` DIR

The winner is served exactly as `honed serve` would (runtime packaging, config derived from its
benchmark), with the response cache off for the throughput runs so every request computes. The
"without dynamic batching" model is the same config without the dynamic_batching block. Load
comes from tritonclient gRPC callers (batch-1 requests, `concurrency` in flight) on the same
machine, so client CPU is part of the picture, as it is for any co-located client.
Writes results.json and results.md to --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from honed.optimizer.artifact import load_runner
from honed.optimizer.report import load_report
from honed.optimizer.tensors import TRITON_DTYPES
from honed.serving.deploy import roll_out
from honed.serving.load import LoadResult, drive, sample_feeds
from honed.serving.metrics import model_traffic
from honed.serving.repository import select_candidate, write_version
from honed.serving.server import TritonServer
from honed.serving.tuning import ServingOptions

MODELS = {
    "resnet50": ("benchmarks.cpu.models:resnet50", ["pixel_values:float32:-1,3,224,224"]),
    "bert-base": (
        "benchmarks.cpu.models:bert_base",
        ["input_ids:int64:-1,128", "attention_mask:int64:-1,128"],
    ),
}
ROOT = Path(__file__).resolve().parents[2]


def optimize(model: str, out: Path) -> Path:
    factory, inputs = MODELS[model]
    command = [
        sys.executable,
        "-m",
        "honed",
        "optimize",
        factory,
        "--out",
        str(out),
        "--batch-sizes",
        "1,8,32",
        "--quiet",
        "--no-plot",
    ]
    for spec in inputs:
        command += ["--input", spec]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return out


def runtime_alone(
    artifact: Path, feeds: list[dict[str, np.ndarray]], threads: int, seconds: float
) -> dict[str, float]:
    runner = load_runner(artifact, threads=threads)
    for feed in feeds[:5]:
        runner.run(feed)
    times = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        runner.run(feeds[i % len(feeds)])
        times.append((time.perf_counter() - t0) * 1000)
        i += 1
    del runner
    gc.collect()
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "runs": len(times),
    }


def measure_model(
    server: TritonServer,
    model: str,
    feeds: list[dict[str, np.ndarray]],
    concurrencies: list[int],
    seconds: float,
) -> list[dict[str, object]]:
    rows = []
    drive(server.endpoints.grpc, model, feeds, concurrency=max(concurrencies), seconds=1.0, warmup_s=1.0)
    for concurrency in concurrencies:
        before = model_traffic(server.metrics_text(), model)
        result: LoadResult = drive(
            server.endpoints.grpc,
            model,
            feeds,
            concurrency=concurrency,
            seconds=seconds,
            warmup_s=min(2.0, seconds / 3),
        )
        time.sleep(0.2)
        after = model_traffic(server.metrics_text(), model)
        runs = after.executions - before.executions
        batch = (after.inferences - before.inferences) / runs if runs else 0.0
        rows.append({**asdict(result), "average_batch": batch, "load_average": os.getloadavg()[0]})
        print(
            f"  {model} c={concurrency}: {result.items_per_s:.1f}/s p50 {result.p50_ms:.2f} ms "
            f"p99 {result.p99_ms:.2f} ms batch {batch:.1f} errors {result.errors}",
            flush=True,
        )
    return rows


def cache_latency(
    server: TritonServer, model: str, feeds: list[dict[str, np.ndarray]], repeats: int
) -> dict[str, float]:
    """Misses: each distinct request once. Hits: the first request again, ``repeats`` times."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    prepared = []
    for feed in feeds:
        tensors = []
        for name, array in feed.items():
            tensor = grpcclient.InferInput(name, list(array.shape), TRITON_DTYPES[array.dtype.name][5:])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        prepared.append(tensors)

    def timed(tensors: list[grpcclient.InferInput]) -> float:
        t0 = time.perf_counter()
        client.infer(model, tensors)
        return (time.perf_counter() - t0) * 1000

    before = model_traffic(server.metrics_text(), model)
    misses = [timed(tensors) for tensors in prepared]
    hits = [timed(prepared[0]) for _ in range(repeats)]
    time.sleep(0.2)
    after = model_traffic(server.metrics_text(), model)
    return {
        "miss_p50_ms": float(np.percentile(misses, 50)),
        "hit_p50_ms": float(np.percentile(hits, 50)),
        "hit_p99_ms": float(np.percentile(hits, 99)),
        "hits_counted": after.cache_hits - before.cache_hits,
        "misses_counted": after.cache_misses - before.cache_misses,
        "repeats": repeats,
    }


def markdown(results: dict) -> str:  # type: ignore[type-arg]
    lines = [
        f"# Serving benchmark: {results['model']} ({results['candidate']})",
        "",
        f"CPU: {results['cpu']}, {results['threads']} threads; Triton {results['triton']}; "
        f"{results['seconds']:g} s per point; load average {results['load_average_start']:.1f} at start.",
        "",
        "| concurrency | no batching items/s | dynamic batching items/s | speedup | avg batch | "
        "p50 ms (batched) | p99 ms (batched) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for plain, batched in zip(results["unbatched"], results["batched"], strict=True):
        speedup = batched["items_per_s"] / plain["items_per_s"] if plain["items_per_s"] else float("nan")
        lines.append(
            f"| {batched['concurrency']} | {plain['items_per_s']:.1f} | {batched['items_per_s']:.1f} | "
            f"{speedup:.2f}x | {batched['average_batch']:.1f} | {batched['p50_ms']:.2f} | "
            f"{batched['p99_ms']:.2f} |"
        )
    alone, triton = results["runtime_alone"], results["batched"][0]
    cache = results["cache"]
    lines += [
        "",
        f"Batch-1 p50: runtime alone {alone['p50_ms']:.2f} ms, through Triton {triton['p50_ms']:.2f} ms "
        f"({triton['p50_ms'] / alone['p50_ms']:.2f}x; target <= 1.3x).",
        f"Cache: a hit answers in {cache['hit_p50_ms']:.2f} ms p50 ({cache['hit_p99_ms']:.2f} ms p99) vs "
        f"{cache['miss_p50_ms']:.2f} ms p50 for misses; Triton counted {cache['hits_counted']:.0f} hits of "
        f"{cache['repeats']} repeats.",
        f"Throughput gain at concurrency {results['batched'][-1]['concurrency']}: "
        f"{results['batched'][-1]['items_per_s'] / results['unbatched'][-1]['items_per_s']:.2f}x "
        "(target >= 3x).",
        "",
        "Served config (derived from the winner's benchmark):",
        "",
        "```",
        *results["config_notes"],
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--report", type=Path, help="an existing `honed optimize` output directory")
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    report_dir = args.report or optimize(args.model, args.out / "work" / args.model)
    report = load_report(report_dir)
    candidate, artifact = select_candidate(report, report_dir)
    reported = candidate.latency_ms.p50 if candidate.latency_ms else float("nan")
    print(f"winner {candidate.name}: p50 {reported:.2f} ms at batch 1 in the report", flush=True)
    feeds = sample_feeds(report.model.inputs, 32, seed=0)
    threads = report.device.threads
    load_start = os.getloadavg()[0]
    alone = runtime_alone(artifact, feeds, threads, seconds=args.seconds)
    print(f"runtime alone: p50 {alone['p50_ms']:.2f} ms", flush=True)

    with tempfile.TemporaryDirectory(prefix="honed-bench-serving-") as tmp:
        repository = Path(tmp)
        no_cache = ServingOptions(response_cache=False)
        batched = write_version(report_dir, repository, model="batched", options=no_cache)
        unbatched = write_version(
            report_dir,
            repository,
            model="unbatched",
            options=ServingOptions(response_cache=False, dynamic_batching=False),
        )
        cached = write_version(report_dir, repository, model="cached")
        results: dict[str, object] = {}
        with TritonServer(repository, http_port=0, grpc_port=0, metrics_port=0) as server:
            for written in (unbatched, batched):
                roll_out(server, written)
                results[written.model] = measure_model(
                    server, written.model, feeds, concurrencies, args.seconds
                )
                server.unload_model(written.model)
            roll_out(server, cached)
            results["cache"] = cache_latency(server, "cached", feeds[:16], repeats=50)
            version = json.loads(server_metadata(server))["version"]
    results.update(
        {
            "model": report.model.name,
            "candidate": candidate.name,
            "report": str(report_dir),
            "cpu": report.device.cpu or platform.processor(),
            "threads": threads,
            "triton": version,
            "seconds": args.seconds,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
            "runtime_alone": alone,
            "config_notes": list(batched.notes),
        }
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def server_metadata(server: TritonServer) -> str:
    import urllib.request

    with urllib.request.urlopen(server.endpoints.http_url + "/v2", timeout=5) as response:
        return str(response.read().decode())


if __name__ == "__main__":
    sys.exit(main())
