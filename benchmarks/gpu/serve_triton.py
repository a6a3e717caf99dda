"""Issue 17 item 7 on a GPU: the compiled fp16 winners served on Triton, measured.

For ResNet-50 and BERT-base (benchmarks/gpu/models.py) this:

1. builds honed's torch-fp16.compile artifact (the backend's own build; with ``--cache DIR`` the
   artifact is assembled from a compiler cache and metadata a levers.py run kept, re-exporting
   the same program, so loading compiles nothing when the cache hits);
2. times it in this process (CUDA events at each batch size) and writes a ``honed.report/v1``
   naming it the winner, so the serving config is derived from its own benchmark as ``honed
   serve`` derives it;
3. writes two versions into a Triton model repository with honed's serving code (runtime
   packaging: Triton's python backend running honed's ``model.py``): with dynamic batching and
   without, response cache off so every request computes;
4. starts the tritonserver shipped in the nvidia-pytriton wheel (``honed.serving.server``) and
   measures, in interleaved rounds, items/s at each concurrency with and without dynamic
   batching (tritonclient gRPC callers, batch-1 requests) and the batch-1 p50 through Triton
   against the runtime alone (the same artifact's ``run`` in this process: host arrays in and
   out, as ``model.py`` calls it), paired per round.

Writes serving.json and serving.md to --out. Anything that fails is recorded with Triton's or
the runtime's own words, and the next model still runs.

    PYTHONPATH=operator:.:benchmarks/gpu python benchmarks/gpu/serve_triton.py --out OUT [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for entry in (str(HERE), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from benchmarks.serving.run import load_point, median_point, time_runtime  # noqa: E402
from models import export, make  # noqa: E402

from honed import __version__  # noqa: E402
from honed.optimizer.artifact import META_FILE, ArtifactMeta, read_meta  # noqa: E402
from honed.optimizer.backends import torch_cuda  # noqa: E402
from honed.optimizer.backends.base import BuildContext, CandidatePlan, SearchContext  # noqa: E402
from honed.optimizer.backends.torch_cuda_runner import CACHE_FILE, WARMUP_FILE  # noqa: E402
from honed.optimizer.gpu_timing import gpu_info, summarize_ms  # noqa: E402
from honed.optimizer.machine import device_info  # noqa: E402
from honed.optimizer.report import (  # noqa: E402
    Candidate,
    DataInfo,
    Latency,
    ModelInfo,
    Report,
    SearchSettings,
    load_report,
)
from honed.serving.load import drive, sample_feeds  # noqa: E402
from honed.serving.local_rollout import roll_out  # noqa: E402
from honed.serving.repository import write_version  # noqa: E402
from honed.serving.server import TritonServer  # noqa: E402
from honed.serving.tuning import ServingOptions  # noqa: E402

CANDIDATE = "torch-fp16.compile"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def artifact_for(
    name: str, work: Path, batches: list[int], cache: Path | None, built: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """The fp16 compile artifact under work/report/artifacts/: one levers.py built, or built here."""
    target = work / "report" / "artifacts" / CANDIDATE
    shutil.rmtree(target, ignore_errors=True)
    done = built / name / "honed" / "artifact" if built else None
    if done is not None and (done / META_FILE).is_file() and (done / CACHE_FILE).is_file():
        shutil.copytree(done, target)
        return target, {"source": f"built by levers.py in this run ({done})"}
    target.mkdir(parents=True)
    model = make(name)
    program, calib = export(model, work / "source")
    kept_cache = cache / f"{name}-inductor-cache.bin" if cache else None
    kept_meta = cache / f"{name}-honed-artifact.json" if cache else None
    bctx = BuildContext(
        onnx_path=None,
        torch_path=program,
        inputs=model.inputs,
        outputs=model.outputs,
        calibration_path=calib,
        threads=os.cpu_count() or 1,
        attention=model.attention,
        work_dir=work,
    )
    if kept_cache and kept_cache.is_file() and kept_meta and kept_meta.is_file():
        # What torch_cuda.build writes, from the same export: the program, warm-up rows, the
        # build's metadata (matmul settings, buckets) and its saved compiler cache.
        shutil.copyfile(program, target / "model.pt2")
        savez: Any = np.savez
        savez(target / WARMUP_FILE, **bctx.calibration(limit=2))
        shutil.copyfile(kept_meta, target / META_FILE)
        shutil.copyfile(kept_cache, target / CACHE_FILE)
        return target, {"source": f"assembled from the compiler cache kept in {cache}"}
    sctx = SearchContext(
        inputs=model.inputs,
        outputs=model.outputs,
        source_format="pytorch",
        precisions=["fp16"],
        cpu_flags=set(),
        device="cuda",
        attention=model.attention,
        has_torch_program=True,
        batch_sizes=batches,
    )
    plan = next(p for p in torch_cuda.plans(sctx) if isinstance(p, CandidatePlan) and p.name == CANDIDATE)
    started = time.perf_counter()
    torch_cuda.build(plan, bctx, target)
    return target, {"source": "built here", "build_seconds": round(time.perf_counter() - started, 1)}


def write_report(name: str, work: Path, runner: Any, meta: ArtifactMeta, batches: list[int]) -> Path:
    """A report naming the artifact the winner, with its own timings, as the engine writes one."""
    model = make(name)
    latency: dict[str, Latency] = {}
    throughput: dict[str, float] = {}
    for batch in batches:
        times = runner.time_batch(model.feeds(batch, seed=40 + batch), 100 if batch == 1 else 40)
        stats = summarize_ms(times)
        latency[str(batch)] = Latency(p50=stats["p50"], p90=stats["p90"], p99=stats["p99"])
        throughput[str(batch)] = round(batch * 1000.0 / stats["p50"], 1)
    candidate = Candidate(
        name=CANDIDATE,
        backend=meta.backend,
        precision=meta.precision,
        variant=meta.variant,
        device="cuda",
        status="accepted",
        latency_ms=latency.get("1"),
        latency_by_batch_ms=latency,
        throughput=throughput,
        artifact=f"artifacts/{CANDIDATE}",
        settings=runner.settings(),
    )
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report = Report(
        honed_version=__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=0.0,
        model=ModelInfo(
            source=f"benchmarks/gpu/models.py:{name}",
            format="pytorch",
            inputs=meta.inputs,
            outputs=meta.outputs,
            name=name.replace("-", "_"),
        ),
        device=device_info(os.cpu_count() or 1, gpu=gpu),
        data=DataInfo(source="synthesized", samples=8),
        settings=SearchSettings(batch_sizes=batches, precisions=["fp16"], backends=["torch"], metric="cosine"),
        baseline=candidate,
        candidates=[candidate],
        winner=CANDIDATE,
        notes=["written by benchmarks/gpu/serve_triton.py from the artifact's own timings (no full search)"],
    )
    report.write(work / "report")
    return work / "report"


def serve_model(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"model": name, "candidate": CANDIDATE}
    started = time.perf_counter()
    artifact, how = artifact_for(name, work, args.batches, args.cache, args.artifact_root)
    out["artifact"] = how
    log(f"{name}: artifact {how['source']} in {time.perf_counter() - started:.1f} s; loading the runtime")
    load_started = time.perf_counter()
    runner = torch_cuda.load(read_meta(artifact), artifact, None)
    out["runtime_load_seconds"] = round(time.perf_counter() - load_started, 1)
    out["runtime_cache"] = runner.cache_info  # type: ignore[attr-defined]
    log(f"{name}: runtime loaded in {out['runtime_load_seconds']} s, cache {out['runtime_cache']}")
    report_dir = write_report(name, work, runner, read_meta(artifact), args.batches)
    report = load_report(report_dir)
    out["runtime_cuda_event_ms"] = {b: lat.model_dump() for b, lat in report.candidates[0].latency_by_batch_ms.items()}
    feeds = sample_feeds(report.model.inputs, 32, seed=0)
    time_runtime(runner, feeds, 1.0)
    repository = work / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    written = {
        "batched": write_version(
            report_dir, repository, model=f"{name}-batched", options=ServingOptions(response_cache=False)
        ),
        "unbatched": write_version(
            report_dir,
            repository,
            model=f"{name}-unbatched",
            options=ServingOptions(response_cache=False, dynamic_batching=False),
        ),
    }
    out["config_notes"] = list(written["batched"].notes)
    out["config_batched"] = written["batched"].config_text
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    runtime_p50: list[float] = []
    with TritonServer(
        repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        cache_bytes=0,
        log_path=work / "tritonserver.log",
        extra_args=args.server_args,
    ) as server:
        with urllib.request.urlopen(server.endpoints.http_url + "/v2", timeout=5) as response:
            out["triton"] = json.loads(response.read())["version"]
        load_started = time.perf_counter()
        # Both versions load at once: each stub process compiles from the artifact's cache on its own.
        with ThreadPoolExecutor(len(written)) as pool:
            list(pool.map(lambda version: roll_out(server, version), written.values()))
        out["triton_load_seconds"] = round(time.perf_counter() - load_started, 1)
        log(f"{name}: both versions loaded on Triton in {out['triton_load_seconds']} s")
        models = {key: version.model for key, version in written.items()}
        for model in models.values():  # warm both before anything counts
            drive(server.endpoints.grpc, model, feeds, concurrency=max(args.concurrency), seconds=1.0)
        for round_ in range(args.rounds):
            runtime_p50.append(float(np.percentile(time_runtime(runner, feeds, args.runtime_seconds), 50)))
            for concurrency in args.concurrency:
                order = ("batched", "unbatched") if round_ % 2 == 0 else ("unbatched", "batched")
                for key in order:
                    point = load_point(server, models[key], feeds, concurrency, args.seconds)
                    points.setdefault((key, concurrency), []).append(point)
                    log(
                        f"  {name} round {round_ + 1} {key} c={concurrency}: {point['items_per_s']:.1f}/s "
                        f"p50 {point['p50_ms']:.2f} ms batch {point['average_batch']:.1f} errors {point['errors']}"
                        + (f" ({point['first_error'][:200]})" if point["errors"] else "")
                    )
        out["server_log_tail"] = server.log_tail(15)
    for key in ("batched", "unbatched"):
        out[key] = [median_point(points[(key, c)]) for c in args.concurrency]
    for batched, plain in zip(out["batched"], out["unbatched"], strict=True):
        pairs = zip(batched["rounds"], plain["rounds"], strict=True)
        batched["speedup"] = statistics.median(b["items_per_s"] / max(p["items_per_s"], 1e-9) for b, p in pairs)
    first = args.concurrency[0]
    triton_rounds = [p["p50_ms"] for p in points[("batched", first)]]
    plain_rounds = [p["p50_ms"] for p in points[("unbatched", first)]]
    out["batch1"] = {
        "concurrency": first,
        "runtime_p50_ms": statistics.median(runtime_p50),
        "triton_p50_ms": statistics.median(triton_rounds),
        "triton_unbatched_p50_ms": statistics.median(plain_rounds),
        "ratio": statistics.median(t / r for t, r in zip(triton_rounds, runtime_p50, strict=True)),
        "ratio_unbatched": statistics.median(t / r for t, r in zip(plain_rounds, runtime_p50, strict=True)),
        "runtime_rounds_ms": runtime_p50,
    }
    return out


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# The GPU winners served on Triton",
        "",
        f"GPU {env.get('gpu')} (sm {env.get('capability')}), driver {env.get('driver')}, torch {env.get('torch')} "
        f"(CUDA {env.get('cuda_runtime')}); {env.get('cpus')} CPUs; Triton {results.get('triton', '?')} from the "
        "nvidia-pytriton 0.7.0 wheel, python backend running honed's model.py (runtime packaging).",
        "",
        results["method"],
        "",
    ]
    for name, res in results["models"].items():
        lines += [f"## {name} ({res.get('candidate')})", ""]
        if res.get("error"):
            lines += [f"Not measured: {res['error']}", ""]
            continue
        lines += [
            "| concurrency | no batching items/s | dynamic batching items/s | speedup (paired) | avg batch | "
            "p50 ms (batched) | p99 ms (batched) | p50 ms (no batching) | errors |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for plain, batched in zip(res["unbatched"], res["batched"], strict=True):
            lines.append(
                f"| {batched['concurrency']} | {plain['items_per_s']:.1f} | {batched['items_per_s']:.1f} | "
                f"{batched['speedup']:.2f}x | {batched['average_batch']:.1f} | {batched['p50_ms']:.2f} | "
                f"{batched['p99_ms']:.2f} | {plain['p50_ms']:.2f} | {batched['errors'] + plain['errors']} |"
            )
        b1 = res["batch1"]
        lines += [
            "",
            f"- Batch-1 p50 at concurrency {b1['concurrency']}: runtime alone {b1['runtime_p50_ms']:.3f} ms "
            f"(host arrays in and out, as model.py calls it), through Triton {b1['triton_p50_ms']:.3f} ms with "
            f"dynamic batching, {b1['triton_unbatched_p50_ms']:.3f} ms without; paired per round "
            f"{b1['ratio']:.2f}x and {b1['ratio_unbatched']:.2f}x (target <= 1.3x).",
            "- The runtime's own CUDA-event p50 (inputs already on the GPU): "
            + ", ".join(f"batch {b} {v['p50']:.3f} ms" for b, v in res["runtime_cuda_event_ms"].items())
            + ".",
            f"- Artifact: {res['artifact']['source']}; runtime load {res['runtime_load_seconds']} s "
            f"(compiler cache {res['runtime_cache']}); both versions loaded on Triton in "
            f"{res.get('triton_load_seconds')} s.",
            "",
            "Served config (derived from the winner's benchmark):",
            "",
            "```",
            *res["config_notes"],
            "```",
            "",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,bert-base")
    parser.add_argument("--batches", default="1,32", help="the artifact's batch buckets")
    parser.add_argument("--cache", type=Path, help="levers.py --keep-artifacts directory")
    parser.add_argument("--artifact-root", type=Path, help="levers.py --work directory of this machine")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "honed-serve-gpu")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per point and round")
    parser.add_argument("--runtime-seconds", type=float, default=2.0)
    parser.add_argument("--server-arg", action="append", default=[], dest="server_args")
    args = parser.parse_args(argv)
    args.batches = sorted(int(b) for b in args.batches.split(","))
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "environment": {**gpu_info(), "cpus": os.cpu_count()},
        "method": (
            f"{args.rounds} interleaved rounds of {args.seconds:g} s per point (medians; batched and "
            "unbatched alternate, the runtime alone is timed at the start of each round); load from "
            f"tritonclient gRPC threads on the same machine sending batch-1 requests, {args.concurrency} in "
            "flight; response cache off. Ratios are paired per round."
        ),
        "models": {},
    }

    def save() -> None:
        (args.out / "serving.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (args.out / "serving.md").write_text(markdown(results))

    for name in args.models.split(","):
        try:
            res = serve_model(name, args, args.work / name)
            results["triton"] = res.get("triton")
        except Exception as exc:  # one model's failure is recorded; the next one still runs
            res = {"model": name, "candidate": CANDIDATE, "error": f"{type(exc).__name__}: {exc}"}
            res["traceback"] = traceback.format_exc(limit=12)
            log(f"{name}: FAILED {res['error']}\n{res['traceback']}")
            log_file = args.work / name / "tritonserver.log"
            if log_file.is_file():
                res["server_log_tail"] = log_file.read_text(errors="replace")[-4000:]
        results["models"][name] = res
        save()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
