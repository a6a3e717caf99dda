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
from serve_split import (  # noqa: E402
    drive_raw,
    drive_shm,
    echo_config,
    model_stats,
    runtime_parts,
    stats_per_request,
)

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


# The versions measured at every concurrency, and the echo models (no compute) of the split.
LOADED = ("batched", "unbatched", "before")
ECHOES = ("echo", "echo-small")
TIMING_FILE = "model-py-timing.json"


def write_repository(
    name: str, report_dir: Path, repository: Path, work: Path, split: bool, before_delay_us: int
) -> dict[str, Any]:
    """The versions served, written by honed's serving code, config.pbtxt pointing at each.

    ``batched`` and ``unbatched`` are what ``honed serve`` writes (response cache off); with ``split``
    also: ``before`` (dynamic batching as honed configured it before GPU batching stopped waiting: a
    queue delay of 10% of a batch-1 inference), ``gpuout`` (unbatched, the outputs handed to Triton
    as GPU tensors: gpuout_model.py), ``timed`` (unbatched, model.py with clocks: timed_model.py) and
    the echo models (echo_model.py: the same inputs, the real or tiny outputs, no compute).
    """
    plain = ServingOptions(response_cache=False, dynamic_batching=False)
    options = {"batched": ServingOptions(response_cache=False), "unbatched": plain}
    if split:
        options |= {
            "before": ServingOptions(response_cache=False, max_queue_delay_us=before_delay_us),
            "gpuout": plain,
            "timed": plain,
        }
    written = {
        key: write_version(report_dir, repository, model=f"{name}-{key}", options=opts) for key, opts in options.items()
    }
    for key, version in written.items():
        text = version.config_text
        if key == "timed":
            shutil.copyfile(HERE / "timed_model.py", version.path / "model.py")
            text += f'parameters {{ key: "timing_path" value {{ string_value: "{work / TIMING_FILE}" }} }}\n'
        if key == "gpuout":
            shutil.copyfile(HERE / "gpuout_model.py", version.path / "model.py")
        (version.model_dir / "config.pbtxt").write_text(text)
    if split:
        meta = read_meta(written["batched"].path / "artifact")
        for key in ECHOES:
            model_dir = repository / f"{name}-{key}"
            (model_dir / "1").mkdir(parents=True)
            shutil.copyfile(HERE / "echo_model.py", model_dir / "1" / "model.py")
            config = echo_config(
                f"{name}-{key}", meta.inputs, meta.outputs, max_batch_size=32, small=key == "echo-small"
            )
            (model_dir / "config.pbtxt").write_text(config)
    return written


def check_outputs(grpc_url: str, models: dict[str, str], runner: Any, feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference between each served model's answer and the runtime's ``run`` in this process."""
    import tritonclient.grpc as grpcclient

    from honed.serving.load import grpc_inputs

    expected = runner.run(feed)
    diffs: dict[str, float] = {}
    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        for key, model in models.items():
            if key in ECHOES:
                continue
            result = client.infer(model, grpc_inputs(feed))
            got = [result.as_numpy(spec.name) for spec in runner.outputs]
            diffs[key] = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected, strict=True))
    finally:
        client.close()
    return diffs


def median_server(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Median over rounds of Triton's per-request stage times."""
    keys = rounds[0]["server"].keys()
    return {key: statistics.median(r["server"][key] for r in rounds) for key in keys}


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
    # The queue delay honed chose before it made GPU requests wait for nothing: 10% of a batch-1 inference.
    before_delay_us = round(report.candidates[0].latency_by_batch_ms["1"].p50 * 100)
    written = write_repository(name, report_dir, repository, work, args.split, before_delay_us)
    out["config_notes"] = list(written["batched"].notes)
    out["config_batched"] = written["batched"].config_text
    models = {key: version.model for key, version in written.items()}
    models.update({key: f"{name}-{key}" for key in ECHOES if args.split})
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    runtime_p50: list[float] = []
    load_started = time.perf_counter()
    parts: list[dict[str, float]] = []
    timing: list[dict[str, Any]] = []
    with TritonServer(
        repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        cache_bytes=0,
        log_path=work / "tritonserver.log",
        # Every model loads at startup, in parallel (explicit loads one by one took 40 s each).
        startup_timeout_s=args.load_timeout,
        extra_args=[*args.server_args, "--exit-on-error=false", *[f"--load-model={m}" for m in models.values()]],
    ) as server:
        http = server.endpoints.http_url
        with urllib.request.urlopen(http + "/v2", timeout=5) as response:
            out["triton"] = json.loads(response.read())["version"]
        out["triton_load_seconds"] = round(time.perf_counter() - load_started, 1)
        failed = {key: model for key, model in models.items() if not server.is_model_ready(model)}
        if "batched" in failed or "unbatched" in failed:
            raise RuntimeError(f"Triton did not load {sorted(failed.values())}: {server.log_tail(20)}")
        out["variants_failed"] = {key: server.log_tail(5) for key in failed}
        models = {key: model for key, model in models.items() if key not in failed}
        log(f"{name}: {sorted(models)} loaded on Triton (failed: {sorted(failed)})")
        for key, model in models.items():  # warm every model before anything counts
            top = max(args.concurrency) if key in LOADED else 1
            drive(server.endpoints.grpc, model, feeds, concurrency=top, seconds=1.0)
        try:
            out["output_max_abs_diff"] = check_outputs(server.endpoints.grpc, models, runner, feeds[0])
        except Exception as exc:  # recorded; the measurements still run
            out["output_max_abs_diff"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"{name}: served outputs vs the runtime, max abs diff {out['output_max_abs_diff']}")

        def point(key: str, concurrency: int, client: str = "tritonclient") -> None:
            model = models[key]
            before = model_stats(http, model)
            if client == "tritonclient":
                result = load_point(server, model, feeds, concurrency, args.seconds)
            elif client == "raw-grpc":
                result = drive_raw(server.endpoints.grpc, model, feeds, seconds=args.seconds, warmup_s=0.5)
            else:
                outputs = report.model.outputs
                result = drive_shm(server.endpoints.grpc, model, feeds, outputs, seconds=args.seconds, warmup_s=0.5)
            result["server"] = stats_per_request(before, model_stats(http, model))
            result.setdefault("average_batch", result["server"]["requests"] / max(result["server"]["executions"], 1))
            result.setdefault("load_average", os.getloadavg()[0])
            result["concurrency"] = concurrency
            points.setdefault((f"{key}/{client}" if client != "tritonclient" else key, concurrency), []).append(result)
            log(
                f"  {name} {key} {client} c={concurrency}: {result['items_per_s']:.1f}/s p50 {result['p50_ms']:.3f} ms "
                f"batch {result['average_batch']:.1f} server {result['server']} errors {result['errors']}"
                + (f" ({result['first_error'][:200]})" if result["errors"] else "")
            )

        for round_ in range(args.rounds):
            runtime_p50.append(float(np.percentile(time_runtime(runner, feeds, args.runtime_seconds), 50)))
            if args.split:
                parts.append(runtime_parts(runner, feeds[0], args.runtime_seconds))
                log(f"  {name} runtime parts {parts[-1]}")
            for concurrency in args.concurrency:
                order = [key for key in LOADED if key in models]
                for key in order if round_ % 2 == 0 else reversed(order):
                    point(key, concurrency)
                if concurrency != 1 or not args.split:
                    continue
                for key in ("timed", "gpuout", "echo", "echo-small"):
                    if key in models:
                        point(key, 1)
                        if key == "timed" and (work / TIMING_FILE).is_file():
                            timing.append(json.loads((work / TIMING_FILE).read_text()))
                            log(f"  {name} model.py parts {timing[-1]}")
                for key in ("echo-small",):
                    if key in models:
                        point(key, 1, "raw-grpc")
                for key in ("unbatched", "echo"):
                    if key in models:
                        point(key, 1, "shm")
        out["server_log_tail"] = server.log_tail(15)
    out["points"] = {
        f"{key}@{concurrency}": median_point(rounds) | {"server": median_server(rounds)}
        for (key, concurrency), rounds in points.items()
    }
    out["runtime_parts_ms"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]} if parts else {}
    out["model_py_parts_us"] = timing[-1] if timing else {}
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
        # Triton's own count: the mean time a request spent inside the server (statistics extension).
        "server_mean_ms": out["points"][f"batched@{first}"]["server"]["success_us"] / 1000,
        "server_unbatched_mean_ms": out["points"][f"unbatched@{first}"]["server"]["success_us"] / 1000,
    }
    return out


SPLIT_ROWS = (
    ("unbatched", "tritonclient", "honed's model.py, no batching"),
    ("batched", "tritonclient", "honed's model.py, dynamic batching (served config)"),
    ("before", "tritonclient", "dynamic batching as configured before: queue delay 10% of batch 1"),
    ("gpuout", "tritonclient", "no batching, outputs handed to Triton on the GPU"),
    ("timed", "tritonclient", "no batching, model.py with clocks"),
    ("unbatched", "shm", "no batching, outputs in system shared memory"),
    ("echo", "tritonclient", "echo: same tensors, no compute"),
    ("echo", "shm", "echo, outputs in system shared memory"),
    ("echo-small", "tritonclient", "echo, 4-byte outputs"),
    ("echo-small", "raw-grpc", "echo, 4-byte outputs, gRPC stub"),
)


def split_lines(res: dict[str, Any]) -> list[str]:
    """The split of a batch-1 request at concurrency 1: clients, server stages, model.py, the runtime."""
    points = res.get("points", {})
    lines = [
        "### Where a batch-1 request goes (concurrency 1)",
        "",
        "Client p50 is what the caller waits; the server columns are Triton's statistics extension "
        "(means per request): queue, compute_infer (for the python backend: the round trip to the stub "
        "process and model.py's execute) and success (the whole request inside Triton).",
        "",
        "| model / client | what | client p50 ms | items/s | server ms | queue us | compute_infer us |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, client, what in SPLIT_ROWS:
        point = points.get(f"{key}@1" if client == "tritonclient" else f"{key}/{client}@1")
        if point is None:
            continue
        server = point["server"]
        lines.append(
            f"| {key} / {client} | {what} | {point['p50_ms']:.3f} | {point['items_per_s']:.0f} | "
            f"{server['success_us'] / 1000:.3f} | {server['queue_us']:.0f} | {server['compute_infer_us']:.0f} |"
        )
    parts = res.get("runtime_parts_ms") or {}
    if parts:
        lines += [
            "",
            f"- The runtime alone, batch 1 (medians, ms): run {parts['run_ms']:.3f} = copies in "
            f"{parts['copy_in_ms']:.3f} + graph replay and sync {parts['replay_ms']:.3f} + copies out "
            f"{parts['copy_out_ms']:.3f} (each timed alone); through pinned host buffers with one sync "
            f"{parts['pinned_run_ms']:.3f}.",
        ]
    timed = res.get("model_py_parts_us") or {}
    if timed:
        lines.append(
            f"- Inside the stub (timed model.py, medians over {timed.get('calls')} calls, us): execute "
            f"{timed.get('execute_us')} = inputs {timed.get('feeds_us')} + runtime run {timed.get('run_us')} "
            f"+ outputs to Triton {timed.get('outputs_us')} + the rest; between two executes "
            f"{timed.get('gap_us')} (everything outside model.py at concurrency 1)."
        )
    return lines


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
            f"{b1['ratio']:.2f}x and {b1['ratio_unbatched']:.2f}x (target <= 1.3x). Inside Triton (its "
            f"statistics, mean per request): {b1['server_mean_ms']:.3f} ms with dynamic batching, "
            f"{b1['server_unbatched_mean_ms']:.3f} ms without.",
            "- The runtime's own CUDA-event p50 (inputs already on the GPU): "
            + ", ".join(f"batch {b} {v['p50']:.3f} ms" for b, v in res["runtime_cuda_event_ms"].items())
            + ".",
            f"- Artifact: {res['artifact']['source']}; runtime load {res['runtime_load_seconds']} s "
            f"(compiler cache {res['runtime_cache']}); both versions loaded on Triton in "
            f"{res.get('triton_load_seconds')} s.",
            "",
            *split_lines(res),
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
    parser.add_argument("--no-split", action="store_false", dest="split", help="skip the split variants")
    parser.add_argument("--load-timeout", type=float, default=420.0, help="seconds for Triton to load every model")
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
