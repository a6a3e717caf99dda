"""Issue 17 item 4 on a GPU: honest baselines, and honed's pick against a hand-tuned torch.compile.

For ResNet-50 and BERT-base (benchmarks/gpu/models.py, random weights) this times, interleaved in
one run:

- the baseline as the engine had it (``engine-before``: the fp32 module rebuilt from the exported
  program, PyTorch's default TF32 convolutions) and as it is now (``engine-after``: the user's
  ``nn.Module`` as given, eager, strict fp32, ``cudnn.benchmark`` on; the engine's own
  ``torch_cuda_baseline``), plus the module with all of PyTorch's defaults (``eager-defaults``,
  what benchmarks/gpu/run.py used);
- a hand-tuned ``torch.compile(model.half(), mode="max-autotune")`` with its CUDA graphs
  (channels-last for the CNN), what an expert writes by hand (``hand-compile``);
- honed's pick (``honed``: torch-fp16.compile as the backend builds it) and variants of it with
  one lever each (coordinate-descent tuning; Triton convolution templates, whose epilogues fuse
  the ReLU/residual adds cuDNN leaves as separate kernels).

Every contender lives in its own process (its own compiler caches), all build in parallel, then
the parent times them in interleaved rounds (each round visits every contender at every batch
size, the order rotated); ratios are taken per round and the median quoted. The gate compares
each contender's outputs on 32 fresh samples with ``engine-after`` (true fp32). Writes
levers.json and levers.md to --out.

    PYTHONPATH=operator:benchmarks/gpu python benchmarks/gpu/levers.py --out OUT
    PYTHONPATH=operator:benchmarks/gpu python benchmarks/gpu/levers.py --selftest --out /tmp/x  # CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import sys
import time
import traceback
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

KINDS = {
    "eager-defaults": "nn.Module as given, fp32, PyTorch's default settings (TF32 convolutions, no cudnn.benchmark)",
    "engine-before": "the engine's baseline before: fp32 module rebuilt from the exported program, eager",
    "engine-after": "the engine's baseline now: nn.Module as given, eager, strict fp32, cudnn.benchmark on",
    "hand-compile": 'torch.compile(model.half(), mode="max-autotune", dynamic=False): its own CUDA graphs',
    "honed": "honed's torch-fp16.compile as the backend builds it (freezing, max-autotune, own CUDA graph per batch)",
    "cpu-eager": "self-test only: a tiny module on the CPU",
}
# Levers on top of honed's compile options, one at a time, so a win can be attributed.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "resnet50": {
        "honed+coordesc": {"coordinate_descent_tuning": True},
        "honed+triton-conv": {"max_autotune_conv_backends": "ATEN,TRITON"},
    },
    "bert-base": {
        "honed+coordesc": {"coordinate_descent_tuning": True},
    },
}
BATCH_ITERS = {1: 100, 8: 50, 32: 30}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- contenders (run in their own process) ---------------------------------------------------------


class EagerDefaults:
    """The module with every PyTorch default, timed as benchmarks/gpu/run.py's old baseline was."""

    def __init__(self, name: str) -> None:
        import torch
        from models import make

        model = make(name)
        self.torch = torch
        self.inputs = model.inputs
        self.module = model.module.cuda().eval()

    def _args(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        return [self.torch.from_numpy(feeds[s.name]).cuda() for s in self.inputs]

    def time_batch(self, feeds: dict[str, np.ndarray], iters: int) -> list[float]:
        from honed.optimizer.gpu_timing import event_times_ms

        xs = self._args(feeds)
        with self.torch.no_grad():
            return event_times_ms(lambda: self.module(*xs), iters, warmup=10)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from honed.optimizer.torch_call import flatten

        with self.torch.no_grad():
            return [t.float().cpu().numpy() for _, t in flatten(self.module(*self._args(feeds)))]


class HandCompiled:
    """What an expert writes by hand: fp16 weights, channels-last for the CNN, max-autotune."""

    def __init__(self, name: str, batches: list[int]) -> None:
        import torch
        from models import make

        model = make(name)
        self.torch = torch
        self.inputs = model.inputs
        self.image = any(len(s.shape) == 4 for s in model.inputs)
        module = model.module.half().cuda().eval()
        if self.image:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted, but not in torch's overloads
        self.fn = torch.compile(module, mode="max-autotune", dynamic=False)
        self.compile_seconds: dict[str, float] = {}
        for batch in batches:
            started = time.perf_counter()
            xs = self._args(model.feeds(batch, seed=0))
            with torch.inference_mode():
                for _ in range(3):  # compile, record the CUDA graph, replay
                    self.fn(*xs)
            torch.cuda.synchronize()
            self.compile_seconds[str(batch)] = round(time.perf_counter() - started, 1)

    def _args(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        torch = self.torch
        out = []
        for spec in self.inputs:
            x = torch.from_numpy(feeds[spec.name]).cuda()
            if x.is_floating_point():
                x = x.half()
                if x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
            out.append(x)
        return out

    def time_batch(self, feeds: dict[str, np.ndarray], iters: int) -> list[float]:
        from honed.optimizer.gpu_timing import event_times_ms

        xs = self._args(feeds)
        with self.torch.inference_mode():
            return event_times_ms(lambda: self.fn(*xs), iters, warmup=10)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from honed.optimizer.torch_call import flatten

        with self.torch.inference_mode():
            return [t.float().cpu().numpy() for _, t in flatten(self.fn(*self._args(feeds)))]


class CpuEager:
    """Self-test contender: exercises processes, rounds, ratios and the write-up without a GPU."""

    def __init__(self, scale: float) -> None:
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.module = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()
        self.scale = scale

    def time_batch(self, feeds: dict[str, np.ndarray], iters: int) -> list[float]:
        x = self.torch.from_numpy(feeds["x"])
        times = []
        with self.torch.inference_mode():
            for _ in range(iters):
                started = time.perf_counter()
                for _ in range(int(self.scale)):
                    self.module(x)
                times.append((time.perf_counter() - started) * 1000)
        return times

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.torch.inference_mode():
            out = self.module(self.torch.from_numpy(feeds["x"]))
        return [(out * (1.0 + 1e-4 * (self.scale - 1))).numpy()]


def _engine_runner(spec: dict[str, Any], out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Build and load through the torch CUDA backend exactly as the engine's workers do."""
    from models import FACTORIES, make

    from honed.optimizer.artifact import read_meta
    from honed.optimizer.backends import torch_cuda
    from honed.optimizer.backends.base import AS_GIVEN, BuildContext, CandidatePlan, SearchContext

    model = make(spec["model"])
    batches = spec["batches"]
    bctx = BuildContext(
        onnx_path=None,
        torch_path=Path(spec["program"]) if spec.get("program") else None,
        inputs=model.inputs,
        outputs=model.outputs,
        calibration_path=Path(spec["calib"]),
        threads=os.cpu_count() or 1,
        attention=model.attention,
        work_dir=out_dir.parent,
    )
    if spec["kind"] == "engine-after":
        plan = CandidatePlan(
            "torch", "fp32", "torch", "eager", "cuda", {AS_GIVEN: True, "factory": FACTORIES[spec["model"]]}
        )
    else:
        sctx = SearchContext(
            inputs=model.inputs,
            outputs=model.outputs,
            source_format="pytorch",
            precisions=["fp32", "fp16"],
            cpu_flags=set(),
            device="cuda",
            attention=model.attention,
            has_torch_program=True,
            batch_sizes=batches,
        )
        wanted = "torch-fp32.eager" if spec["kind"] == "engine-before" else "torch-fp16.compile"
        plan = next(p for p in torch_cuda.plans(sctx) if isinstance(p, CandidatePlan) and p.name == wanted)
        if spec.get("inductor_extra"):
            options = {**plan.options, "inductor": {**plan.options["inductor"], **spec["inductor_extra"]}}
            plan = CandidatePlan(plan.backend, plan.precision, plan.source, plan.variant, plan.device, options)
    meta = torch_cuda.build(plan, bctx, out_dir)
    runner = torch_cuda.load(read_meta(out_dir), out_dir, None)
    info: dict[str, Any] = {
        "plan": plan.name,
        "compile_seconds_by_batch": meta.options.get("build_seconds_by_batch"),
        "load_cache": getattr(runner, "cache_info", None),
        "artifact": str(out_dir),
    }
    if hasattr(runner, "settings"):
        info["settings"] = runner.settings()
    return runner, info


def _make(spec: dict[str, Any], out_dir: Path) -> tuple[Any, dict[str, Any]]:
    kind = spec["kind"]
    if kind == "eager-defaults":
        return EagerDefaults(spec["model"]), {}
    if kind == "hand-compile":
        runner = HandCompiled(spec["model"], spec["batches"])
        return runner, {"compile_seconds_by_batch": runner.compile_seconds}
    if kind == "cpu-eager":
        return CpuEager(spec.get("scale", 1.0)), {}
    return _engine_runner(spec, out_dir)


def contender(conn: Connection, spec: dict[str, Any]) -> None:
    """A contender's process: build, report, then answer time/predict commands until told to exit."""
    # Its own process group: stopping it also stops the compiler's worker processes, which would
    # otherwise keep compiling beside the timing of the others (seen: eager batch-1 times doubled).
    os.setsid()
    work = Path(spec["work"])
    # Its own compiler caches: no contender reuses another's kernels, and build times are its own.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(work / "triton")
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(spec.get("compile_threads", 4)))
    if spec.get("nice"):  # the variants yield the CPU to the two builds every comparison needs
        os.nice(spec["nice"])
    started = time.perf_counter()
    try:
        runner, info = _make(spec, work / "artifact")
    except BaseException as exc:  # reported to the parent as this contender's failure
        conn.send(("failed", f"{type(exc).__name__}: {str(exc)[:600]}", traceback.format_exc(limit=10)))
        return
    info["build_seconds"] = round(time.perf_counter() - started, 1)
    conn.send(("built", info))
    feeds_cache: dict[str, dict[str, np.ndarray]] = {}

    def feeds(path: str) -> dict[str, np.ndarray]:
        if path not in feeds_cache:
            with np.load(path) as data:
                feeds_cache[path] = {k: data[k] for k in data.files}
        return feeds_cache[path]

    while True:
        try:
            command, *args = conn.recv()
        except EOFError:
            return
        if command == "exit":
            return
        try:
            if command == "time":
                conn.send(("ok", runner.time_batch(feeds(args[0]), args[1])))
            elif command == "predict":
                conn.send(("ok", runner.run(feeds(args[0]))))
            else:
                conn.send(("error", f"unknown command {command}"))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {str(exc)[:600]}"))


# -- the parent: build in parallel, gate, time interleaved ---------------------------------------------


class Handle:
    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self.spec = spec
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=contender, args=(child, spec), name=f"lever-{name}", daemon=True)
        self.process.start()
        child.close()
        self.started = time.monotonic()
        self.status = "building"
        self.info: dict[str, Any] = {}
        self.reason = ""

    def call(self, *command: Any, timeout: float = 300.0) -> Any:
        self.conn.send(command)
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.name}: {command[0]} took over {timeout:.0f} s")
        reply = self.conn.recv()
        if reply[0] != "ok":
            raise RuntimeError(f"{self.name}: {reply[1]}")
        return reply[1]

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.conn.send(("exit",))
            self.process.join(10)
        if self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def wait_built(handles: list[Handle], deadline: float) -> None:
    pending = {h.conn: h for h in handles if h.status == "building"}
    while pending and time.monotonic() < deadline:
        # wait() returns some of the objects it was given: these Connections.
        ready = cast(list[Connection], wait(list(pending), timeout=max(0.1, deadline - time.monotonic())))
        for conn in ready:
            handle = pending.pop(conn)
            try:
                reply = conn.recv()
            except EOFError:
                code = handle.process.exitcode
                handle.status, handle.reason = "failed", f"process died while building (exit code {code})"
                log(f"  {handle.name}: {handle.reason}")
                continue
            if reply[0] == "built":
                handle.status, handle.info = "built", reply[1]
                log(f"  {handle.name}: built in {handle.info['build_seconds']} s")
            else:
                handle.status, handle.reason = "failed", reply[1]
                handle.info["traceback"] = reply[2][-3000:]
                log(f"  {handle.name}: FAILED {reply[1]}\n{reply[2][-1500:]}")
    for handle in pending.values():
        handle.status = "failed"
        handle.reason = f"not built within the run's build deadline ({time.monotonic() - handle.started:.0f} s)"
        log(f"  {handle.name}: {handle.reason}")
        handle.stop()


def paired_ratio(slow: list[float], fast: list[float]) -> float | None:
    """Median over rounds of slow p50 / fast p50 (both measured in the same round)."""
    pairs = [s / f for s, f in zip(slow, fast, strict=False) if f > 0]
    return round(statistics.median(pairs), 3) if pairs else None


def start_model(name: str, args: argparse.Namespace, work: Path) -> tuple[list[Handle], Any]:
    """Start every contender of ``name`` (they build in parallel); returns them and the feed maker."""
    batches = args.batches
    work.mkdir(parents=True, exist_ok=True)
    handles: list[Handle] = []

    def start(cname: str, kind: str, **extra: Any) -> None:
        spec = {"model": name, "kind": kind, "batches": batches, "work": str(work / cname)} | extra
        Path(spec["work"]).mkdir(parents=True, exist_ok=True)
        handles.append(Handle(cname, spec))

    if args.selftest:
        start("engine-after", "cpu-eager", scale=1.0)
        start("hand-compile", "cpu-eager", scale=3.0)
        start("honed", "cpu-eager", scale=2.0)
        return handles, _selftest_feeds
    from models import export, make

    model = make(name)
    skipped = {c for m, _, c in (item.partition(":") for item in args.skip) if m == name}

    def start_unless_skipped(cname: str, kind: str, **extra: Any) -> None:
        if cname not in skipped:
            start(cname, kind, **extra)

    # Contenders that need no exported program start at once; their compiles overlap the export.
    hand_batches = [b for b in batches if b in args.hand_batches] if args.hand_batches else batches
    start_unless_skipped("hand-compile", "hand-compile", compile_threads=args.compile_threads, batches=hand_batches)
    start_unless_skipped("eager-defaults", "eager-defaults")
    np.savez(work / "calib-only.npz", **model.feeds(8, seed=2))  # type: ignore[arg-type]  # numpy's stubs match **arrays to allow_pickle
    start_unless_skipped("engine-after", "engine-after", calib=str(work / "calib-only.npz"))
    log(f"{name}: exporting")
    program, calib = export(model, work / "source")
    common = {"program": str(program), "calib": str(calib), "compile_threads": args.compile_threads}
    start_unless_skipped("engine-before", "engine-before", **common)
    start_unless_skipped("honed", "honed", **common)
    for cname, extra in VARIANTS.get(name, {}).items():
        start_unless_skipped(cname, "honed", inductor_extra=extra, nice=5, **common)
    log(f"{name}: building {[h.name for h in handles]}")
    return handles, model.feeds


def measure_model(
    name: str, handles: list[Handle], feeds_of: Any, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Gate every built contender against ``engine-after``, then time them in interleaved rounds."""
    from report_md import gate_entry

    from honed.optimizer.gate import verdict
    from honed.optimizer.gpu_timing import summarize_ms

    batches = args.batches
    result: dict[str, Any] = {"contenders": {}, "batches": batches}
    live = [h for h in handles if h.status == "built"]
    val_path = work / "val.npz"
    np.savez(val_path, **feeds_of(32, seed=3))
    outputs: dict[str, list[np.ndarray]] = {}
    for handle in live:
        try:
            outputs[handle.name] = handle.call("predict", str(val_path), timeout=120)
        except Exception as exc:
            handle.status, handle.reason = "failed", f"predict: {exc}"
    reference = outputs.get("engine-after")
    for handle in live:
        if handle.name in outputs and reference is not None:
            gate = verdict("cosine", reference, outputs[handle.name], None, args.max_drop)
            handle.info["gate"] = gate_entry(gate)
            if not gate.accepted:
                handle.status, handle.reason = "rejected", gate.reason
    live = [h for h in handles if h.status == "built"]
    paths = {}
    for batch in batches:
        paths[batch] = work / f"feeds-{batch}.npz"
        np.savez(paths[batch], **feeds_of(batch, seed=10 + batch))
    samples: dict[str, dict[int, list[float]]] = {h.name: {b: [] for b in batches} for h in live}
    round_p50: dict[str, dict[int, list[float]]] = {h.name: {b: [] for b in batches} for h in live}
    load = []
    log(f"{name}: timing {[h.name for h in live]} in {args.rounds} interleaved rounds")
    for round_ in range(args.rounds):
        for batch in batches:
            shift = round_ % len(live) if live else 0
            for handle in live[shift:] + live[:shift]:
                if handle.status != "built" or batch not in handle.spec["batches"]:
                    continue  # a contender is timed only at the batch sizes it was built for
                try:
                    times = handle.call("time", str(paths[batch]), args.iters.get(batch, 30), timeout=180)
                except Exception as exc:
                    handle.status, handle.reason = "failed", f"timing: {exc}"
                    continue
                samples[handle.name][batch] += times
                round_p50[handle.name][batch].append(float(np.percentile(times, 50)))
        load.append(os.getloadavg()[0])
    for handle in handles:
        entry: dict[str, Any] = {
            "kind": handle.spec["kind"],
            "description": KINDS.get(handle.spec["kind"], ""),
            "inductor_extra": handle.spec.get("inductor_extra"),
            "status": handle.status,
            "reason": handle.reason,
            **handle.info,
        }
        timed = [b for b in batches if samples.get(handle.name, {}).get(b)]
        if timed:
            entry["latency_ms"] = {str(b): summarize_ms(samples[handle.name][b]) for b in timed}
            entry["round_p50_ms"] = {str(b): [round(v, 4) for v in round_p50[handle.name][b]] for b in timed}
            entry["items_per_s"] = {str(b): round(b * 1000.0 / entry["latency_ms"][str(b)]["p50"], 1) for b in timed}
        result["contenders"][handle.name] = entry
    result["load_average_during_timing"] = load
    result["ratios"] = ratios(result["contenders"], batches)
    return result


def ratios(contenders: dict[str, Any], batches: list[int]) -> dict[str, Any]:
    """slow/fast p50, paired per round, for the comparisons the issue asks about."""

    def rp(name: str, batch: int) -> list[float]:
        p50s: list[float] = contenders.get(name, {}).get("round_p50_ms", {}).get(str(batch), [])
        return p50s

    out: dict[str, Any] = {}
    picks = [n for n in contenders if n == "honed" or n.startswith("honed+")]
    for batch in map(int, batches):
        row: dict[str, Any] = {
            "engine_before_over_after": paired_ratio(rp("engine-before", batch), rp("engine-after", batch)),
            "defaults_over_after": paired_ratio(rp("eager-defaults", batch), rp("engine-after", batch)),
        }
        for pick in picks:
            row[f"hand_over_{pick}"] = paired_ratio(rp("hand-compile", batch), rp(pick, batch))
            row[f"after_over_{pick}"] = paired_ratio(rp("engine-after", batch), rp(pick, batch))
            row[f"before_over_{pick}"] = paired_ratio(rp("engine-before", batch), rp(pick, batch))
        out[str(batch)] = row
    return out


def _selftest_feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 16)).astype(np.float32)}


def write_markdown(results: dict[str, Any], path: Path) -> None:
    from report_md import gate_drop

    env = results.get("environment", {})
    lines = [
        "# GPU levers: honest baselines and honed's pick vs a hand-tuned torch.compile",
        "",
        f"GPU {env.get('gpu')} (sm {env.get('capability')}), driver {env.get('driver')}, torch {env.get('torch')} "
        f"(CUDA {env.get('cuda_runtime')}), triton {env.get('triton')}, cuDNN {env.get('cudnn')}, "
        f"transformers {env.get('transformers')}; {env.get('cpus')} CPUs.",
        "",
        results.get("method", ""),
        "",
    ]
    for name, model in results.get("models", {}).items():
        batches = model["batches"]
        lines += [
            f"## {name}",
            "",
            "| contender | status | cosine drop | " + " | ".join(f"p50 ms b{b}" for b in batches) + " | build s |",
            "|---|---|---|" + "---|" * len(batches) + "---|",
        ]
        for cname, entry in model["contenders"].items():
            lat = entry.get("latency_ms", {})
            drop = gate_drop(entry.get("gate", {}))
            status = entry["status"] + (f": {entry['reason']}" if entry.get("reason") else "")
            status = " ".join(status.split()).replace("|", "/")  # one table cell
            lines.append(
                f"| {cname} | {status[:160]} | {'-' if drop is None else f'{drop:.1e}'} | "
                + " | ".join(f"{lat[str(b)]['p50']:.3f}" if str(b) in lat else "-" for b in batches)
                + f" | {entry.get('build_seconds', '-')} |"
            )
        lines += ["", "Ratios (slower p50 / faster p50, paired per round, median over rounds):", ""]
        keys = sorted({k for row in model["ratios"].values() for k in row})
        lines += ["| ratio | " + " | ".join(f"b{b}" for b in batches) + " |", "|---|" + "---|" * len(batches)]
        for key in keys:
            cells = [model["ratios"][str(b)].get(key) for b in batches]
            lines.append(f"| {key} | " + " | ".join("-" if c is None else f"{c:.2f}x" for c in cells) + " |")
        lines += ["", f"Load average during timing: {model.get('load_average_during_timing')}", ""]
        for cname, entry in model["contenders"].items():
            lines.append(f"- {cname}: {entry.get('description', '')}")
            if entry.get("inductor_extra"):
                lines.append(f"  (honed's inductor options plus {entry['inductor_extra']})")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,bert-base")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--work", type=Path, default=Path("/tmp/honed-levers"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--build-seconds", type=float, default=360.0, help="deadline for all parallel builds")
    parser.add_argument("--compile-threads", type=int, default=4, help="inductor compile threads per contender")
    parser.add_argument("--skip", default="", help="contenders to leave out, as MODEL:NAME,MODEL:NAME")
    parser.add_argument("--hand-batches", default="", help="batch sizes the hand-tuned compile is built for")
    parser.add_argument("--keep-artifacts", type=Path, help="copy honed's pick artifacts (cache + meta) here")
    parser.add_argument("--selftest", action="store_true", help="CPU-only run of the orchestration")
    args = parser.parse_args(argv)
    args.batches = sorted(int(b) for b in args.batches.split(","))
    args.iters = BATCH_ITERS if not args.selftest else dict.fromkeys(args.batches, 5)
    args.skip = [v for v in args.skip.split(",") if v]
    args.hand_batches = [int(b) for b in args.hand_batches.split(",") if b]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"models": {}}
    if args.selftest:
        results["environment"] = {"gpu": None, "cpus": os.cpu_count()}
    else:
        import transformers

        from honed.optimizer.gpu_timing import gpu_info

        results["environment"] = {**gpu_info(), "transformers": transformers.__version__, "cpus": os.cpu_count()}
    results["method"] = (
        f"CUDA-event time per call, inputs already on the GPU, after warm-up; {args.rounds} interleaved rounds "
        f"({', '.join(f'{args.iters.get(b)} calls at batch {b}' for b in args.batches)} per contender and "
        "round), the order rotated each round; p50 over all calls; ratios paired per round. Builds ran in "
        "parallel processes (their autotuning shared the GPU); timing ran one contender at a time."
    )

    def save(name: str, model_result: dict[str, Any]) -> None:
        results["models"][name] = model_result
        (args.out / "levers.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        write_markdown(results, args.out / "levers.md")

    names = args.models.split(",") if not args.selftest else ["selftest"]
    # Every model's contenders build at once (compiles are mostly single-threaded Python, so more
    # processes use more of the cores); then each model is timed on an otherwise idle GPU.
    deadline = time.monotonic() + args.build_seconds
    started = {name: start_model(name, args, args.work / name) for name in names}
    everyone = [h for handles, _ in started.values() for h in handles]
    try:
        wait_built(everyone, deadline)
        for name, (handles, feeds_of) in started.items():
            save(name, measure_model(name, handles, feeds_of, args, args.work / name))
            if args.keep_artifacts and not args.selftest:
                keep_pick(results["models"][name], name, args.keep_artifacts)
    finally:
        for handle in everyone:
            handle.stop()
    log(f"wrote {args.out / 'levers.json'}")
    print((args.out / "levers.md").read_text())
    return 0


def keep_pick(model_result: dict[str, Any], name: str, target: Path) -> None:
    """honed's pick's saved compiler cache and metadata, for the serving run to load without compiling."""
    entry = model_result["contenders"].get("honed", {})
    artifact = Path(entry.get("artifact", "/nonexistent"))
    if entry.get("status") != "built" or not artifact.is_dir():
        log(f"{name}: no honed artifact to keep ({entry.get('status')}: {entry.get('reason')})")
        return
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact / "inductor-cache.bin", target / f"{name}-inductor-cache.bin")
    shutil.copyfile(artifact / "honed-artifact.json", target / f"{name}-honed-artifact.json")
    log(f"{name}: kept {(target / f'{name}-inductor-cache.bin').stat().st_size} bytes of compiler cache")


if __name__ == "__main__":
    sys.exit(main())
