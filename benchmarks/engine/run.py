"""Engine benchmark: honed's pick against an expert's hand-tuned configurations, on real trained models.

For each model (MiniLM on real sentences, EfficientNet-Lite0 on real photographs, each with its
trained weights; see models.py):

1. ``honed optimize`` searches it (default backends and precisions, batch 1, the model's gate:
   cosine drop <= 0.01 for MiniLM, top-1 agreement drop <= 0.02 for the CNN); its wall time is the
   search time.
2. The expert's configurations of the same model, exported to ONNX here: OpenVINO fp32, bf16 and
   NNCF int8 (the transformer preset for MiniLM, NNCF's defaults for the CNN), each compiled for
   the static input shape (what an expert does on CPU), and ONNX Runtime fp32. Each is checked
   with the same gate honed uses.
3. Every engine runs in its own process; honed's winner is loaded from its artifact through
   ``honed.optimizer.artifact.load_runner``. They are timed at batch 1 on one real sample, in
   shuffled interleaved rounds, so each ratio is paired within a round.
4. The report's own p50 for the winner is compared with this longer, independent measurement.

Writes results.json and results.md to --out.

    PYTHONPATH=operator:. python benchmarks/engine/run.py --out benchmarks/engine
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script (make bench-engine): benchmarks.engine.models imports from the root
    sys.path.insert(0, str(ROOT))
SEQ = 128


@dataclass(frozen=True)
class BenchModel:
    """A model of the benchmark: its factory, its inputs per sample, its gate and its real data."""

    factory: str
    inputs: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape of one sample)
    metric: str
    max_drop: float
    data: Callable[[Path, int], Path]  # (path, count) -> an .npz of the inputs
    transformer: bool

    def input_flags(self) -> list[str]:
        flags: list[str] = []
        for name, (dtype, shape) in self.inputs.items():
            flags += ["--input", f"{name}:{dtype}:batch,{','.join(map(str, shape))}"]
        return flags


def _tokens(path: Path, count: int) -> Path:
    from benchmarks.engine.models import token_data

    return token_data(path, count, SEQ)


def _images(path: Path, count: int) -> Path:
    from benchmarks.engine.models import image_data

    return image_data(path, count)


TOKENS: dict[str, tuple[str, tuple[int, ...]]] = {"input_ids": ("int64", (SEQ,)), "attention_mask": ("int64", (SEQ,))}
MODELS = {
    "minilm-embedding": BenchModel(
        "benchmarks.engine.models:minilm_embedding", TOKENS, "cosine", 0.01, _tokens, transformer=True
    ),
    "minilm-tokens": BenchModel(
        "benchmarks.engine.models:minilm_tokens", TOKENS, "cosine", 0.01, _tokens, transformer=True
    ),
    "efficientnet-lite0": BenchModel(
        "benchmarks.engine.models:efficientnet_lite0",
        {"images": ("float32", (3, 224, 224))},
        "top1",
        0.02,
        _images,
        transformer=False,
    ),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def search(name: str, model: BenchModel, data: Path, out: Path, threads: int, budget: str) -> dict[str, Any]:
    """One ``honed optimize`` run; its wall time, winner and report."""
    cmd = [
        sys.executable, "-m", "honed", "optimize", model.factory, "--data", str(data), "--out", str(out),
        *model.input_flags(), "--metric", model.metric, "--max-metric-drop", str(model.max_drop),
        "--batch-sizes", "1", "--threads", str(threads), "--time-budget", budget, "--no-plot",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    (out.parent / f"{name}.search.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"honed optimize {name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": round(wall, 1), "report": report, "winner": report["winner"]}


def export_onnx(spec: BenchModel, path: Path) -> Path:
    import importlib

    import torch

    module, attr = spec.factory.split(":")
    model = getattr(importlib.import_module(module), attr)()
    names = list(spec.inputs)

    class Plain(torch.nn.Module):
        """The first output as a tensor (a ModelOutput's last_hidden_state), as an expert exports it."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            out = self.model(*tensors)  # positional: the factories' own argument names differ (inputs, input_ids)
            return out if isinstance(out, torch.Tensor) else out[0]

    dtypes = {"int64": torch.int64, "float32": torch.float32}
    example = tuple(torch.ones(1, *shape, dtype=dtypes[dtype]) for dtype, shape in spec.inputs.values())
    axes = {name: {0: "batch"} for name in [*names, "output"]}
    torch.onnx.export(
        Plain().eval(), example, str(path), input_names=names,
        output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


def expert_int8(spec: BenchModel, onnx: Path, data: dict[str, np.ndarray], out: Path) -> Path:
    """NNCF's post-training int8 as its documentation recommends: the transformer preset for transformers."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx))
    items = [{k: v[i : i + 1] for k, v in data.items()} for i in range(_count(data))]
    extra: dict[str, Any] = (
        {"model_type": nncf.ModelType.TRANSFORMER, "preset": nncf.QuantizationPreset.MIXED} if spec.transformer else {}
    )
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), **extra)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def _count(data: dict[str, np.ndarray]) -> int:
    return len(next(iter(data.values())))


class Engine:
    """One engine in a process of its own.

    ``spec``: ('honed', artifact dir), ('openvino', model file, inference precision, model name) or
    ('onnxruntime', onnx).
    """

    def __init__(self, spec: tuple[str, ...], threads: int) -> None:
        self.spec = spec
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(spec, threads, child), daemon=True)
        self.proc.start()

    def call(self, *msg: Any) -> Any:
        self.conn.send(msg)
        kind, value = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"{self.spec}: {value}")
        return value

    def close(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(10)


def _runner(spec: tuple[str, ...], threads: int) -> Any:
    """A callable feeds -> list of outputs for the engine ``spec``."""
    if spec[0] == "honed":
        from honed.optimizer.artifact import load_runner

        runner = load_runner(Path(spec[1]), threads=threads)
        return runner.run
    if spec[0] == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(spec[1], opts, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)
    import openvino as ov

    core = ov.Core()
    model = core.read_model(spec[1])
    shapes = MODELS[spec[3]].inputs
    model.reshape({p.get_any_name(): [1, *shapes[p.get_any_name()][1]] for p in model.inputs})
    config = {
        "INFERENCE_PRECISION_HINT": spec[2], "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": threads,
    }  # fmt: skip
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request.infer(feeds, share_inputs=True)
        return [np.array(request.get_output_tensor(i).data) for i in range(len(model.outputs))]

    return run


def _serve(spec: tuple[str, ...], threads: int, conn: Any) -> None:
    try:
        run = _runner(spec, threads)
        conn.send(("ok", None))
    except Exception as exc:  # reported to the parent, which records it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        msg = conn.recv()
        try:
            if msg[0] == "stop":
                return
            if msg[0] == "predict":
                data = msg[1]
                outs = [run({k: v[i : i + 1] for k, v in data.items()})[0] for i in range(_count(data))]
                conn.send(("ok", np.concatenate(outs)))
            elif msg[0] == "time":
                feeds, seconds = msg[1], msg[2]
                times: list[float] = []
                end = time.perf_counter() + seconds
                while time.perf_counter() < end or len(times) < 5:
                    started = time.perf_counter()
                    run(feeds)
                    times.append((time.perf_counter() - started) * 1000)
                conn.send(("ok", times))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def gate(metric: str, reference: np.ndarray, outputs: np.ndarray, data: dict[str, np.ndarray]) -> dict[str, float]:
    """The drop honed's gate sees (padded positions left out) and the drop over the whole tensor."""
    from honed.optimizer.validate import compare, padding_mask

    masked = compare(metric, [reference], [outputs], None, padding_mask(data)).drop
    whole = compare(metric, [reference], [outputs], None).drop
    return {"drop": round(masked, 5), "drop_with_padding": round(whole, 5)}


def bench_model(name: str, spec: BenchModel, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data_path = spec.data(work / f"{name}.npz", args.samples)
    with np.load(data_path) as loaded:
        data = {k: loaded[k] for k in loaded.files}
    log(f"{name}: honed optimize (budget {args.budget})")
    found = search(name, spec, data_path, work / name, args.threads, args.budget)
    report = found["report"]
    winner = next(c for c in report["candidates"] if c["name"] == found["winner"])
    log(f"{name}: search {found['wall_s']} s, winner {found['winner']} (report p50 {winner['latency_ms']['p50']} ms)")
    onnx = export_onnx(spec, work / f"{name}.onnx")
    engines: dict[str, tuple[str, ...]] = {
        "honed": ("honed", str(work / name / winner["artifact"])),
        "expert ov-fp32-static": ("openvino", str(onnx), "f32", name),
        "expert ov-bf16-static": ("openvino", str(onnx), "bf16", name),
        "expert ort-fp32": ("onnxruntime", str(onnx)),
    }
    log(f"{name}: expert int8 (NNCF{', transformer preset' if spec.transformer else ''})")
    int8 = expert_int8(spec, onnx, data, work / f"{name}-int8.xml")
    engines["expert ov-int8-static"] = ("openvino", str(int8), "f32", name)
    started = {label: Engine(spec, args.threads) for label, spec in engines.items()}
    live: dict[str, Engine] = {}
    failed: dict[str, str] = {}
    for label, engine in started.items():
        try:
            engine.conn.recv()
            live[label] = engine
        except EOFError:
            failed[label] = "process died while loading"
    reference = live["expert ort-fp32"].call("predict", data)
    gates = {label: gate(spec.metric, reference, engine.call("predict", data), data) for label, engine in live.items()}
    sample = {k: v[:1] for k, v in data.items()}
    per_round: dict[str, list[float]] = {label: [] for label in live}
    log(f"{name}: timing {list(live)} in {args.rounds} shuffled rounds of {args.seconds} s each")
    for _ in range(args.rounds):
        order = list(live)
        random.shuffle(order)
        for label in order:
            per_round[label].append(statistics.median(live[label].call("time", sample, args.seconds)))
    for engine in live.values():
        engine.close()
    return summarize(name, found, winner, gates, per_round, failed, spec.max_drop) | {
        "metric": spec.metric,
        "max_drop": spec.max_drop,
    }


def summarize(
    name: str,
    found: dict[str, Any],
    winner: dict[str, Any],
    gates: dict[str, dict[str, float]],
    per_round: dict[str, list[float]],
    failed: dict[str, str],
    max_drop: float,
) -> dict[str, Any]:
    p50 = {label: round(statistics.median(times), 3) for label, times in per_round.items()}

    def best_within(key: str) -> tuple[str | None, float | None]:
        """The fastest expert configuration whose ``key`` drop passes, and honed's paired ratio to it."""
        passing = [label for label in per_round if label.startswith("expert") and gates[label][key] <= max_drop]
        if not passing:
            return None, None
        label = min(passing, key=lambda name: p50[name])
        paired = [e / h for e, h in zip(per_round[label], per_round["honed"], strict=True)]
        return label, round(statistics.median(paired), 3)

    best, ratio = best_within("drop")
    best_whole, ratio_whole = best_within("drop_with_padding")
    report_p50 = winner["latency_ms"]["p50"]
    return {
        "model": name,
        "search_s": found["wall_s"],
        "winner": found["winner"],
        "winner_drop": winner["metric"]["drop"] if winner.get("metric") else None,
        "report_p50_ms": report_p50,
        "independent_p50_ms": p50["honed"],
        "report_vs_independent": round(report_p50 / p50["honed"], 3),
        "p50_ms": p50,
        "per_round_ms": per_round,
        "gates": gates,
        "expert_best_in_gate": best,
        "honed_vs_expert_best": ratio,
        "expert_best_in_whole_tensor_gate": best_whole,
        "honed_vs_expert_best_whole_tensor_gate": ratio_whole,
        "failed": failed,
        "skipped_or_failed_candidates": {
            c["name"]: c.get("reason", "") for c in found["report"]["candidates"] if c["status"] != "accepted"
        },
    }


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Engine benchmark: honed's pick against an expert's configurations (real trained models, real inputs)",
        "",
        f"{meta['cpu']}, {meta['threads']} threads; "
        f"load average before/after {meta['load_before']} / {meta['load_after']}.",
        f"Batch 1; MiniLM: sequence {SEQ}, cosine drop on {meta['samples']} real sentences (padded positions "
        "left out; 'with padding' is the whole tensor); EfficientNet-Lite0: top-1 agreement drop on "
        f"{meta['samples']} crops of real photographs. "
        f"{meta['rounds']} shuffled interleaved rounds of {meta['seconds']} s per engine, one process each.",
        "",
        f"Command: `{meta['command']}`",
        "",
    ]
    for r in results:
        lines += [
            f"## {r['model']}",
            "",
            f"- gate: {r['metric']} drop <= {r['max_drop']}",
            f"- search: {r['search_s']} s wall, winner `{r['winner']}` (drop {r['winner_drop']})",
            f"- honed vs the expert's best within the gate ({r['expert_best_in_gate']}): "
            f"**{r['honed_vs_expert_best']}x** (median of per-round ratios)",
            f"- honed vs the expert's best within a whole-tensor gate, padding included, as an expert without "
            f"padding-aware checking would pick ({r['expert_best_in_whole_tensor_gate']}): "
            f"**{r['honed_vs_expert_best_whole_tensor_gate']}x**",
            f"- the report's p50 {r['report_p50_ms']} ms vs {r['independent_p50_ms']} ms here: "
            f"{r['report_vs_independent']}x",
            "",
            "| engine | p50 ms | drop | drop with padding | within gate |",
            "|---|---:|---:|---:|---|",
        ]
        for label, p50 in sorted(r["p50_ms"].items(), key=lambda kv: kv[1]):
            g = r["gates"][label]
            ok = "yes" if g["drop"] <= r["max_drop"] else "no"
            lines.append(f"| {label} | {p50} | {g['drop']} | {g['drop_with_padding']} | {ok} |")
        if r["skipped_or_failed_candidates"]:
            lines += ["", "honed's candidates not accepted:", ""]
            lines += [f"- {k}: {v}" for k, v in r["skipped_or_failed_candidates"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "engine")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--budget", default="10m")
    args = parser.parse_args()
    from honed.optimizer.machine import device_info, load_average

    # The model name and the flags that decide bf16/int8 speed (AMX or not): runs on different hosts
    # of the same shared pool are otherwise indistinguishable.
    machine = device_info(args.threads)
    meta: dict[str, Any] = {
        "cpu": f"{machine.cpu} ({' '.join(machine.flags)})",
        "threads": args.threads,
        "samples": args.samples,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "load_before": load_average(),
        "command": " ".join(["python", "benchmarks/engine/run.py", *sys.argv[1:]]),
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="honed-bench-engine-") as tmp:
        for name in args.models.split(","):
            results.append(bench_model(name, MODELS[name], args, Path(tmp)))
    meta["load_after"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results, meta))
    log(f"wrote {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
