"""Serving benchmark: Triton with vs without dynamic batching, Triton vs the runtime alone, cache hits.

    python benchmarks/serving/run.py --out benchmarks/serving                # optimizes ResNet-50 first
    python benchmarks/serving/run.py --out benchmarks/serving --report DIR   # a `honed optimize` DIR

The winner is served exactly as `honed serve` would (runtime packaging, config derived from its
benchmark), with the response cache off for the throughput runs so every request computes. The
"without dynamic batching" model is the same config without the dynamic_batching block. Load
comes from tritonclient gRPC callers (batch-1 requests, `concurrency` in flight) on the same
machine, so client CPU is part of the picture, as it is for any co-located client.

Everything compared is measured interleaved: batched and unbatched alternate in rounds, and each
figure is the median over rounds; batch-1 latency through Triton alternates with the runtime alone
in short slices (``batch1_paired``). Load from other processes hits both sides of a ratio alike. Writes results.json and
results.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from honed.optimizer.artifact import Runner, load_runner
from honed.optimizer.report import load_report
from honed.serving.load import Feeds, drive, grpc_inputs, sample_feeds
from honed.serving.local_rollout import roll_out
from honed.serving.repository import select_candidate, write_version
from honed.serving.server import TritonServer
from honed.serving.triton_metrics import model_traffic
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


def time_runtime(runner: Runner, feeds: list[Feeds], seconds: float) -> list[float]:
    times = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        runner.run(feeds[i % len(feeds)])
        times.append((time.perf_counter() - t0) * 1000)
        i += 1
    return times


def batch1_paired(
    grpc_url: str, model: str, runner: Runner, feeds: list[Feeds], pairs: int, seconds: float
) -> dict[str, Any]:
    """Batch-1 latency through Triton beside the runtime alone, in short alternating slices.

    One client, one request in flight, against ``runner`` in this process: ``pairs`` pairs of
    ``seconds`` each, the order flipped every pair, so that both sides of each ratio see the
    same machine (its speed drifts by 20-40% over minutes here). Each slice gives its median;
    the ratio is taken per pair and the median quoted.
    """
    import tritonclient.grpc as grpcclient

    from honed.serving.load import grpc_inputs

    client = grpcclient.InferenceServerClient(grpc_url)
    prepared = [grpc_inputs(feed) for feed in feeds]

    def through_triton() -> list[float]:
        times = []
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            client.infer(model, prepared[i % len(prepared)])
            times.append((time.perf_counter() - t0) * 1000)
            i += 1
        return times

    through_triton()  # connect and warm the path
    triton_ms: list[float] = []
    runtime_ms: list[float] = []
    for pair in range(pairs):
        order = (through_triton, lambda: time_runtime(runner, feeds, seconds))
        for side in order if pair % 2 == 0 else order[::-1]:
            (triton_ms if side is through_triton else runtime_ms).append(float(np.median(side())))
    client.close()
    return {
        "runtime_p50_ms": statistics.median(runtime_ms),
        "triton_p50_ms": statistics.median(triton_ms),
        "ratio": statistics.median(t / r for t, r in zip(triton_ms, runtime_ms, strict=True)),
        "pairs": pairs,
        "seconds_per_slice": seconds,
        "per_pair": [round(t / r, 3) for t, r in zip(triton_ms, runtime_ms, strict=True)],
    }


def batch_compute(http_url: str, model: str) -> dict[int, tuple[int, int]]:
    """Triton's statistics per executed batch size: ``{size: (executions, compute_infer ns)}``, cumulative."""
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=10) as response:
        stats = json.loads(response.read())["model_stats"][0]
    return {
        int(entry["batch_size"]): (int(entry["compute_infer"]["count"]), int(entry["compute_infer"]["ns"]))
        for entry in stats.get("batch_stats", [])
    }


def executed_batches(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[str, Any]:
    """Per batch size formed between two ``batch_compute`` readings: executions and mean compute_infer ms."""
    out: dict[str, Any] = {}
    for size, (count, ns) in sorted(after.items()):
        runs = count - before.get(size, (0, 0))[0]
        if runs > 0:
            out[str(size)] = {"executions": runs, "compute_ms": (ns - before.get(size, (0, 0))[1]) / runs / 1e6}
    return out


def load_point(
    server: TritonServer, model: str, feeds: list[Feeds], concurrency: int, seconds: float
) -> dict[str, Any]:
    before = model_traffic(server.metrics_text(), model)
    formed = batch_compute(server.endpoints.http_url, model)
    result = drive(
        server.endpoints.grpc,
        model,
        feeds,
        concurrency=concurrency,
        seconds=seconds,
        warmup_s=min(1.0, seconds / 3),
    )
    time.sleep(0.2)  # Triton counts a request just after answering it
    after = model_traffic(server.metrics_text(), model)
    runs = after.executions - before.executions
    batch = (after.inferences - before.inferences) / runs if runs else 0.0
    batches = executed_batches(formed, batch_compute(server.endpoints.http_url, model))
    return {**asdict(result), "average_batch": batch, "load_average": os.getloadavg()[0], "batches": batches}


def formed_vs_runtime(points: list[dict[str, Any]], runner: Runner, feeds: list[Feeds]) -> list[dict[str, Any]]:
    """The batches Triton formed (all rounds of one point) beside the runtime alone at each size.

    Triton's compute_infer is the round trip to the python stub and model.py's execute (gathering
    the requests, the runtime, splitting the outputs); the runtime alone runs the same batch in
    this process, right after the load, so the gap is what serving adds around the runtime.
    """
    totals: dict[int, list[float]] = {}
    for point in points:
        for size, entry in point.get("batches", {}).items():
            runs, ms = totals.setdefault(int(size), [0, 0.0])
            totals[int(size)] = [runs + entry["executions"], ms + entry["compute_ms"] * entry["executions"]]
    rows = []
    for size, (runs, ms) in sorted(totals.items(), key=lambda item: -item[1][0])[:6]:
        batch = {name: np.concatenate([feeds[i % len(feeds)][name] for i in range(size)]) for name in feeds[0]}
        runner.run(batch)  # a shape this process has not run yet compiles first (OpenVINO)
        alone = float(np.median(time_runtime(runner, [batch], 1.0)))
        triton_ms = ms / runs
        rows.append(
            {"batch": size, "executions": int(runs), "triton_compute_ms": triton_ms, "runtime_ms": alone,
             "ratio": triton_ms / alone}
        )  # fmt: skip
    return sorted(rows, key=lambda row: row["batch"])


def median_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("items_per_s", "p50_ms", "p90_ms", "p99_ms", "average_batch", "load_average")
    merged = {key: statistics.median(p[key] for p in points) for key in keys}
    merged.update(
        concurrency=points[0]["concurrency"],
        requests=sum(p["requests"] for p in points),
        errors=sum(p["errors"] for p in points),
        rounds=[{**{k: p[k] for k in keys}, "batches": p.get("batches", {})} for p in points],
    )
    return merged


def cache_latency(server: TritonServer, model: str, feeds: list[Feeds], repeats: int) -> dict[str, float]:
    """Misses: each distinct request once. Hits: the first request again, ``repeats`` times."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    prepared = []
    for feed in feeds:
        prepared.append(grpc_inputs(feed))

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


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Serving benchmark: {results['model']} ({results['candidate']})",
        "",
        f"CPU: {results['cpu']}, {results['threads']} threads; Triton {results['triton']}; "
        f"{results['rounds']} interleaved rounds of {results['seconds_per_round']:g} s per point (medians); "
        f"load average {results['load_average_start']:.1f} at start, "
        f"{results['load_average_end']:.1f} at end.",
        "",
        *(
            [
                f"Other processes shared the CPU (load average above {results['threads']} threads): absolute "
                "figures understate the machine, and only the paired ratios below are comparable.",
                "",
            ]
            if max(results["load_average_start"], results["load_average_end"]) > results["threads"]
            else []
        ),
        "| concurrency | no batching items/s | dynamic batching items/s | speedup (paired) | avg batch | "
        "p50 ms (batched) | p99 ms (batched) | p50 ms (no batching) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for plain, batched in zip(results["unbatched"], results["batched"], strict=True):
        lines.append(
            f"| {batched['concurrency']} | {plain['items_per_s']:.1f} | {batched['items_per_s']:.1f} | "
            f"{batched['speedup']:.2f}x | {batched['average_batch']:.1f} | {batched['p50_ms']:.2f} | "
            f"{batched['p99_ms']:.2f} | {plain['p50_ms']:.2f} |"
        )
    b1, cache, last = results["batch1"], results["cache"], results["batched"][-1]
    gain = last["speedup"]
    report_gain = results["report_batch_gain"]
    lines += [
        "",
        f"- Batch-1 p50: runtime alone {b1['runtime_p50_ms']:.2f} ms, "
        f"through Triton {b1['triton_p50_ms']:.2f} ms (one client, {b1['pairs']} alternating pairs of "
        f"{b1['seconds_per_slice']:g} s slices, median of per-pair ratios: {b1['ratio']:.2f}x; target <= 1.3x).",
        f"- Throughput with vs without dynamic batching at concurrency {last['concurrency']}: {gain:.2f}x "
        f"(target >= 3x). The runtime itself moves {report_gain['gain']:.2f}x the items per second at batch "
        f"{report_gain['batch']} as at batch 1 in the engine's report, which bounds what batching can give.",
        f"- Served items/s at concurrency {last['concurrency']} with dynamic batching vs the best the engine "
        f"measured for this artifact ({results['engine_best']['items_per_s']:.1f} items/s at batch "
        f"{results['engine_best']['batch']}): {last['items_per_s'] / results['engine_best']['items_per_s']:.2f}x "
        "(target >= 0.85x). The same runtime alone at that batch in this process, timed in each round "
        f"beside the load ({results['engine_best']['runtime_alone_items_per_s']:.1f} items/s): served is "
        f"{results['engine_best']['served_over_runtime_alone']:.2f}x that, paired per round.",
        f"- Cache: a hit answers in {cache['hit_p50_ms']:.2f} ms p50 ({cache['hit_p99_ms']:.2f} ms p99) vs "
        f"{cache['miss_p50_ms']:.2f} ms p50 for misses; Triton counted {cache['hits_counted']:.0f} hits of "
        f"{cache['repeats']} repeats.",
        "",
        f"Batches Triton formed at concurrency {last['concurrency']} (all rounds; the six most frequent sizes), "
        "its compute_infer per execution (the python stub's round trip and model.py's execute) beside the "
        "runtime alone on the same batch in this process, timed right after the load:",
        "",
        "| batch | executions | Triton compute_infer ms | runtime alone ms | ratio |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {row['batch']} | {row['executions']} | {row['triton_compute_ms']:.2f} | {row['runtime_ms']:.2f} | "
            f"{row['ratio']:.2f}x |"
            for row in results.get("formed_batches", [])
        ),
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--report", type=Path, help="an existing `honed optimize` output directory")
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per point")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point and round")
    parser.add_argument("--pairs", type=int, default=16, help="alternating batch-1 slices, Triton vs runtime alone")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    report_dir = args.report or optimize(args.model, args.out / "work" / args.model)
    report = load_report(report_dir)
    candidate, artifact = select_candidate(report, report_dir)
    measured = {int(b): v for b, v in candidate.throughput.items()}
    top = max(measured, default=1)
    report_gain = {"batch": top, "gain": measured[top] / measured[1] if measured.get(1) else float("nan")}
    best_batch = max(measured, key=lambda b: measured[b], default=1)
    engine_best = {"batch": best_batch, "items_per_s": measured.get(best_batch, float("nan"))}
    print(f"winner {candidate.name}; runtime batch gain x{report_gain['gain']:.2f} at batch {top}", flush=True)
    feeds = sample_feeds(report.model.inputs, 32, seed=0)
    threads = report.device.threads
    load_start = os.getloadavg()[0]
    runner = load_runner(artifact, threads=threads)
    time_runtime(runner, feeds, 1.0)

    with tempfile.TemporaryDirectory(prefix="honed-bench-serving-") as tmp:
        repository = Path(tmp)
        written = {
            "batched": write_version(
                report_dir, repository, model="batched", options=ServingOptions(response_cache=False)
            ),
            "unbatched": write_version(
                report_dir,
                repository,
                model="unbatched",
                options=ServingOptions(response_cache=False, dynamic_batching=False),
            ),
            "cached": write_version(report_dir, repository, model="cached"),
        }
        points: dict[tuple[str, int], list[dict[str, Any]]] = {}
        best_feed = {
            name: np.concatenate([feeds[i % len(feeds)][name] for i in range(best_batch)]) for name in feeds[0]
        }
        runner.run(best_feed)  # a shape this process has not run yet compiles first (OpenVINO)
        alone_best: list[float] = []  # items/s of the runtime alone at the engine's best batch, per round
        with TritonServer(repository, http_port=0, grpc_port=0, metrics_port=0) as server:
            for version in written.values():
                roll_out(server, version)
            for model in ("batched", "unbatched"):  # warm both before anything counts
                drive(server.endpoints.grpc, model, feeds, concurrency=max(concurrencies), seconds=1.0)
            for round_ in range(args.rounds):
                alone_best.append(best_batch * 1000 / float(np.median(time_runtime(runner, [best_feed], args.seconds))))
                for concurrency in concurrencies:
                    order = ("batched", "unbatched") if round_ % 2 == 0 else ("unbatched", "batched")
                    for model in order:
                        point = load_point(server, model, feeds, concurrency, args.seconds)
                        points.setdefault((model, concurrency), []).append(point)
                        print(
                            f"  round {round_ + 1} {model} c={concurrency}: {point['items_per_s']:.1f}/s "
                            f"p50 {point['p50_ms']:.2f} ms batch {point['average_batch']:.1f} "
                            f"errors {point['errors']} load {point['load_average']:.1f}",
                            flush=True,
                        )
            paired = batch1_paired(server.endpoints.grpc, "batched", runner, feeds, args.pairs, 0.5)
            cache = cache_latency(server, "cached", feeds[:16], repeats=50)
            with urllib.request.urlopen(server.endpoints.http_url + "/v2", timeout=5) as response:
                triton_version = json.loads(response.read())["version"]
    results: dict[str, Any] = {
        model: [median_point(points[(model, c)]) for c in concurrencies] for model in ("batched", "unbatched")
    }
    formed = formed_vs_runtime(points[("batched", concurrencies[-1])], runner, feeds)
    # Ratios pair the two sides of each round (measured back to back), then take the median.
    for batched, plain in zip(results["batched"], results["unbatched"], strict=True):
        pairs = zip(batched["rounds"], plain["rounds"], strict=True)
        batched["speedup"] = statistics.median(b["items_per_s"] / max(p["items_per_s"], 1e-9) for b, p in pairs)
    batch1 = {**paired, "concurrency": 1}
    results.update(
        {
            "model": report.model.name,
            "candidate": candidate.name,
            "report": str(report_dir),
            "cpu": report.device.cpu,
            "threads": threads,
            "triton": triton_version,
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
            "batch1": batch1,
            "report_batch_gain": report_gain,
            "engine_best": {
                **engine_best,
                "runtime_alone_items_per_s": statistics.median(alone_best),
                "served_over_runtime_alone": statistics.median(
                    p["items_per_s"] / a
                    for p, a in zip(points[("batched", concurrencies[-1])], alone_best, strict=True)
                ),
            },
            "cache": cache,
            "config_notes": list(written["batched"].notes),
            "formed_batches": formed,
        }
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
