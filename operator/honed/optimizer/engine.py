"""The search: source -> data -> candidates built and validated in workers -> interleaved timing -> report."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from honed.errors import InputError
from honed.optimizer import data as datamod
from honed.optimizer.backends import BACKEND_MODULES, GPU_BACKEND_MODULES, backend_module
from honed.optimizer.backends.base import AS_GIVEN, Backend, BuildContext, CandidatePlan, SearchContext
from honed.optimizer.gate import verdict
from honed.optimizer.machine import cpu_flags
from honed.optimizer.options import OptimizeOptions
from honed.optimizer.progress import Progress
from honed.optimizer.report import MetricResult, Skipped
from honed.optimizer.sources import SourceModel, load_source
from honed.optimizer.validate import check_metric, default_metric
from honed.optimizer.worker import Worker, WorkerFailure


@dataclass
class Trial:
    """One candidate on its way through build, validation and timing."""

    plan: CandidatePlan
    status: str = "pending"
    reason: str = ""
    metric: MetricResult | None = None
    build_seconds: float | None = None
    worker: Worker | None = None
    samples: dict[int, list[float]] = field(default_factory=dict)
    stats: dict[str, int | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The plan's name, e.g. ``onnx-int8.openvino``."""
        return self.plan.name


@dataclass
class Prepared:
    """The model and data checked against each other, and what the search takes from them: metric, batch sizes."""

    source: SourceModel
    dataset: datamod.Dataset
    data_path: Path
    metric: str
    batch_sizes: list[int]
    attention: bool
    notes: list[str]
    matmul_heavy: bool = False


def prepare(options: OptimizeOptions, work: Path, progress: Progress) -> Prepared:
    """Load the model and the data and check they fit each other; every problem is an InputError."""
    data = Path(options.data) if options.data else None
    arrays = datamod.read_npz(data) if data else None
    progress.step(f"loading model {options.model}")
    source = load_source(options.model, work, options.inputs, datamod.npz_shapes(arrays) if arrays else None)
    notes = list(source.notes)
    for note in source.notes:
        progress.warn(note)
    fixed = source.fixed_batch
    if arrays is not None and data is not None:
        dataset = datamod.check_arrays(arrays, source.inputs, data, fixed)
    else:
        from honed.optimizer.onnx_graph import integer_input_bounds

        bounds = integer_input_bounds(source.onnx_path) if source.onnx_path else {}
        dataset = datamod.synthesize(source.inputs, options.synthetic_samples, bounds)
        notes.append(
            "no --data given: inputs were synthesized from the input spec, so the accuracy gate "
            "compares outputs with the original's, not task accuracy; pass --data for that"
        )
    step = fixed or 1
    keep = min(dataset.samples, options.max_samples)
    keep -= keep % step
    if keep == 0:
        raise InputError(
            f"the model's batch axis is fixed at {fixed} but the data has {dataset.samples} samples",
            hint=f"give at least {fixed} samples",
        )
    dataset.feeds = {k: v[:keep] for k, v in dataset.feeds.items()}
    dataset.labels = None if dataset.labels is None else dataset.labels[:keep]
    metric = options.metric or default_metric(source.outputs[0].shape, dataset.labels is not None, dataset.synthesized)
    check_metric(metric, dataset.labels is not None)
    batch_sizes = options.batch_sizes
    if fixed is not None:
        batch_sizes = [fixed]
        notes.append(f"the model pins its batch axis at {fixed}; measured at that batch size only")
    attention = dense = False
    if source.onnx_path is not None:
        from honed.optimizer.onnx_graph import has_attention, matmul_heavy

        attention, dense = has_attention(source.onnx_path), matmul_heavy(source.onnx_path)
    data_path = dataset.save(work / "data.npz")
    return Prepared(source, dataset, data_path, metric, batch_sizes, attention, notes, matmul_heavy=dense)


def _default_baseline(src: SourceModel, device: str, factory_opts: dict[str, Any]) -> CandidatePlan:
    """What every speedup is against: the original run the plain way an expert would time it.

    PyTorch and TorchScript sources: the user's model as given (the factory's module or the
    TorchScript file, never a module rebuilt from the exported program), eager, fp32; on CPU
    with the search's thread count, on CUDA with TF32 off and ``cudnn.benchmark`` on (see
    ``backends.torch_cuda_baseline``). ONNX sources: ONNX Runtime on CPU, TensorRT fp32 on GPUs.
    """
    if src.format == "onnx":
        return (
            CandidatePlan("onnxruntime", "fp32")
            if device == "cpu"
            else CandidatePlan("tensorrt", "fp32", device=device)
        )
    source = "torch" if src.format == "pytorch" else "torchscript"
    return CandidatePlan("torch", "fp32", source, "eager", device, {**factory_opts, AS_GIVEN: True})


def plan_candidates(
    options: OptimizeOptions, prep: Prepared
) -> tuple[CandidatePlan, list[CandidatePlan], list[Skipped]]:
    """The baseline plan, the candidate plans (cheap builds first) and what was skipped, with why.

    Raises:
        InputError: ``--backends`` names a backend unknown on the device, or the baseline's
            backend cannot run here.
    """
    src = prep.source
    known = sorted(GPU_BACKEND_MODULES if options.device == "cuda" else BACKEND_MODULES)
    unknown = [b for b in options.backends if b not in known]
    if unknown:
        raise InputError(
            f"--backends {','.join(unknown)} unknown on {options.device}", hint=f"choose among {', '.join(known)}"
        )
    factory_opts = {"factory": src.factory, "sys_path": [str(Path.cwd())]} if src.factory else {}
    baseline = _default_baseline(src, options.device, factory_opts)
    ctx = _search_context(options, prep)
    plans: list[CandidatePlan] = []
    skipped: list[Skipped] = []
    for name in known:
        module = _runnable_backend(name, options.device, baseline, skipped)
        if module is None or (options.backends and name not in options.backends and name != baseline.backend):
            continue
        for item in module.plans(ctx):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            plan = CandidatePlan(
                item.backend, item.precision, item.source, item.variant, item.device, {**factory_opts, **item.options}
            )
            if plan.name == baseline.name:
                if not baseline.options.get(AS_GIVEN):
                    baseline = plan  # the backend's own options (e.g. ONNX Runtime's) for the baseline
                # else: the same precision and mode rebuilt from the exported program, which the
                # model as given already measures.
            elif not options.backends or name in options.backends:
                plans.append(plan)
    # Cheap builds first: when the time budget runs out, what is left is the slow tail (compiles).
    plans.sort(key=_build_cost)
    return baseline, plans, skipped


def _search_context(options: OptimizeOptions, prep: Prepared) -> SearchContext:
    src = prep.source
    return SearchContext(
        inputs=src.inputs,
        outputs=src.outputs,
        source_format=src.format,
        precisions=list[str](options.precisions),
        cpu_flags=cpu_flags(),
        device=options.device,
        attention=prep.attention,
        matmul_heavy=prep.matmul_heavy,
        has_torch_program=src.torch_path is not None or src.format == "torchscript",
        batch_sizes=prep.batch_sizes,
    )


def _runnable_backend(name: str, device: str, baseline: CandidatePlan, skipped: list[Skipped]) -> Backend | None:
    """Backend ``name``'s module when its runtime is here; else None, with why appended to ``skipped``.

    Raises:
        InputError: the baseline's backend cannot run here.
    """
    try:
        module = backend_module(name, device)
    except ImportError as exc:
        skipped.append(Skipped(name=name, reason=f"backend module missing: {exc}"))
        return None
    reason = module.availability()
    if not reason:
        return module
    if name == baseline.backend:
        raise InputError(
            f"the baseline backend {name} cannot run here: {reason}",
            hint="install it, or run on a device that has it (--device)",
        )
    skipped.append(Skipped(name=name, reason=reason))
    return None


class Search:
    """One search: its deadline, the original's reference outputs and the build context.

    Each candidate is built in one worker process and loaded in a second, which is kept for timing.
    """

    def __init__(self, options: OptimizeOptions, prep: Prepared, work: Path, progress: Progress) -> None:
        """Start the time budget's clock."""
        self.options = options
        self.prep = prep
        self.work = work
        self.progress = progress
        self.artifacts = options.out / "artifacts"
        self.deadline = time.monotonic() + options.time_budget_s
        self.timing_load: list[float] = []
        self.reference: dict[str, np.ndarray] | None = None
        self.reference_path = work / "reference.npz"
        src = prep.source
        self.build_ctx = BuildContext(
            onnx_path=src.onnx_path,
            torch_path=src.torch_path,
            inputs=src.inputs,
            outputs=src.outputs,
            calibration_path=prep.data_path,
            threads=options.threads,
            attention=prep.attention,
            work_dir=work,
            torch_call=src.call,
        )

    def remaining(self) -> float:
        """Seconds left in the time budget (negative once it is spent)."""
        return self.deadline - time.monotonic()

    def measurement_reserve(self, live: int) -> float:
        """Seconds to hold back for timing ``live`` accepted candidates at every batch size, with margin."""
        return live * len(self.prep.batch_sizes) * self.options.measure_seconds * 1.5 + 5

    def evaluate(self, trial: Trial, live: int) -> None:
        """Build in one process, then load, predict and keep a fresh process for timing."""
        if trial.plan.source == "onnx" and self.prep.source.onnx_path is None:
            trial.status, trial.reason = "failed", self.prep.source.export_error or "no ONNX model"
            return
        budget = self.remaining() - self.measurement_reserve(live + 1)
        if budget < 10:
            trial.status, trial.reason = "failed", "time budget exhausted before this candidate was built"
            return
        out_dir = self.artifacts / trial.name
        shutil.rmtree(out_dir, ignore_errors=True)
        builder = Worker.start(f"build-{trial.name}", self.options.threads, self.work / f"{trial.name}.build.log")
        try:
            trial.build_seconds = builder.call("build", trial.plan, self.build_ctx, out_dir, timeout=budget)
        except WorkerFailure as exc:
            trial.status, trial.reason = "failed", f"build: {exc}"
            return
        finally:
            builder.close()
        runner = Worker.start(trial.name, self.options.threads, self.work / f"{trial.name}.run.log")
        trial.worker = runner
        try:
            runner.call("load", out_dir, self.prep.data_path, timeout=max(30.0, self.remaining()))
            out = self.work / f"pred-{trial.name}.npz"
            batch = self.prep.source.fixed_batch or max(self.prep.batch_sizes)
            runner.call("predict", batch, out, timeout=max(30.0, self.remaining()))
        except WorkerFailure as exc:
            trial.status, trial.reason = "failed", str(exc)
            return
        with np.load(out) as loaded:
            outputs = {key: loaded[key] for key in loaded.files}
        if self.reference is None:
            self.reference = outputs
            shutil.copyfile(out, self.reference_path)
        try:
            gate = verdict(
                self.prep.metric, self.reference, outputs, self.prep.dataset.labels, self.options.max_metric_drop
            )
        except ValueError as exc:
            trial.status, trial.reason = "failed", f"outputs differ from the original's: {exc}"
            return
        trial.metric = gate.metric
        if gate.accepted:
            trial.status = "accepted"
        else:
            trial.status, trial.reason = "rejected", gate.reason

    def follow_up(self, trial: Trial) -> CandidatePlan | None:
        """When plain int8 fails the gate, try int8 keeping the most sensitive layers in higher precision."""
        plan = trial.plan
        if trial.status != "rejected" or plan.precision != "int8" or plan.variant:
            return None
        if plan.backend not in ("openvino", "onnxruntime"):
            return None
        return CandidatePlan(
            plan.backend,
            "int8",
            plan.source,
            "accuracy-aware",
            plan.device,
            {
                "reference": str(self.reference_path),
                "metric": self.prep.metric,
                "max_drop": self.options.max_metric_drop,
                "labels": self.prep.dataset.labels is not None,
            },
        )

    def time_all(self, trials: list[Trial]) -> None:
        """Time the accepted trials in interleaved rounds; one whose worker fails is marked failed."""
        from honed.optimizer.machine import load_average

        before = load_average()
        try:
            self._time_all(trials)
        finally:
            after = load_average()
            self.timing_load = [x for x in (before, after) if x is not None]

    def _time_all(self, trials: list[Trial]) -> None:
        from honed.optimizer.measure import rounds_schedule

        live = {t.name: t for t in trials if t.status == "accepted" and t.worker is not None}
        rounds = self.options.rounds
        slots = max(1, len(live) * len(self.prep.batch_sizes) * rounds)
        per_slot = min(self.options.measure_seconds / rounds, max(0.05, (self.remaining() - 5) / slots))
        schedule = rounds_schedule(list(live), self.prep.batch_sizes, rounds)
        self.progress.step(
            f"timing {len(live)} candidates x batch {self.prep.batch_sizes} in {rounds} "
            f"interleaved rounds ({per_slot:.2f}s or 5 calls per slot)"
        )
        for name, batch in schedule:
            trial = live.get(name)
            if trial is None or trial.status != "accepted" or trial.worker is None:
                continue
            try:
                samples = trial.worker.call("time", batch, per_slot, 5, 2000, timeout=max(60.0, per_slot * 20))
                trial.samples.setdefault(batch, []).extend(samples)
            except WorkerFailure as exc:
                trial.status, trial.reason = "failed", f"timing at batch {batch}: {exc}"
        for trial in live.values():
            if trial.worker is not None and trial.status == "accepted":
                try:
                    trial.stats = trial.worker.call("stats", timeout=30)
                    trial.settings = trial.worker.call("settings", timeout=30)
                except WorkerFailure as exc:
                    trial.status, trial.reason = "failed", str(exc)

    def close(self, trials: list[Trial]) -> None:
        """Stop the trials' worker processes."""
        for trial in trials:
            if trial.worker is not None:
                trial.worker.close()
                trial.worker = None


def repro_command(options: OptimizeOptions, plan: CandidatePlan) -> str:
    """The ``honed optimize`` command line that searches only this plan's backend and precision."""
    parts = ["honed", "optimize", options.model]
    if options.data:
        parts += ["--data", str(options.data)]
    parts += [
        "--backends",
        plan.backend,
        "--precisions",
        plan.precision.split("-")[0],
        "--batch-sizes",
        ",".join(map(str, options.batch_sizes)),
        "--max-metric-drop",
        str(options.max_metric_drop),
    ]
    parts += [f"--input {s.name}:{s.dtype}:{','.join(map(str, s.shape))}" for s in options.inputs]
    return " ".join(parts)


def _build_cost(plan: CandidatePlan) -> int:
    if plan.variant == "compile":
        return 3
    if plan.precision.startswith("int8"):
        return 2 if plan.precision != "int8-dynamic" else 1
    return 0
