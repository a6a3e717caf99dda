"""The search: each planned candidate built and validated in workers, bounded by what is measured, timed interleaved."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from honed.optimizer.backends.base import BuildContext, CandidatePlan
from honed.optimizer.bounds import follow_up_skip, torch_cpu_skip
from honed.optimizer.gate import verdict
from honed.optimizer.options import OptimizeOptions
from honed.optimizer.planning import Prepared
from honed.optimizer.progress import Progress
from honed.optimizer.report import MetricResult, Skipped
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
    round_p50s: dict[int, list[float]] = field(default_factory=dict)  # one median per timing slot
    stats: dict[str, int | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    quick_p50: float | None = None  # ms at the smallest batch, from a short timing taken to bound a follow-up

    @property
    def name(self) -> str:
        """The plan's name, e.g. ``onnx-int8.openvino``."""
        return self.plan.name


# The share of the time budget one expensive build (accuracy-aware quantization, a compile) may
# take, so that it cannot starve everything after it.
EXPENSIVE_BUILD_SHARE = 0.4
QUICK_TIMING_S = 0.3
# Candidates whose first p50 is within this ratio of the fastest at a batch size are timed for
# CONFIRM_ROUNDS more interleaved rounds: 3 rounds of 0.5 s put two candidates 5-15% apart in the
# wrong order on a loaded machine (benchmarks/engine: int8-bf16 picked over int8, 0.85x of the
# paired measurement), and the extra time goes only where the pick is still open.
CONTENDER_WITHIN = 1.15
CONFIRM_ROUNDS = 4


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
        self.skipped: list[Skipped] = []  # follow-ups not built, with why
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
        cap = self.build_cap(trial.plan)
        out_dir = self.artifacts / trial.name
        shutil.rmtree(out_dir, ignore_errors=True)
        builder = Worker.start(f"build-{trial.name}", self.options.threads, self.work / f"{trial.name}.build.log")
        started = time.monotonic()
        try:
            trial.build_seconds = builder.call("build", trial.plan, self.build_ctx, out_dir, timeout=min(budget, cap))
        except WorkerFailure as exc:
            trial.status, trial.reason = "failed", f"build: {exc}"
            if cap < budget and time.monotonic() - started >= cap:
                trial.reason = (
                    f"build stopped at its cap of {cap:.0f}s ({EXPENSIVE_BUILD_SHARE:.0%} of the time budget for "
                    "one expensive build), so the candidates after it keep their time; a larger --time-budget "
                    "lets it run longer"
                )
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
                self.prep.metric,
                self.reference,
                outputs,
                self.prep.dataset.labels,
                self.options.max_metric_drop,
                self.prep.mask,
            )
        except ValueError as exc:
            trial.status, trial.reason = "failed", f"outputs differ from the original's: {exc}"
            return
        trial.metric = gate.metric
        if gate.accepted:
            trial.status = "accepted"
        else:
            trial.status, trial.reason = "rejected", gate.reason

    def build_cap(self, plan: CandidatePlan) -> float:
        """The longest one build of ``plan`` may take: a share of the budget for the expensive ones."""
        if plan.variant in ("accuracy-aware", "compile"):
            return max(60.0, self.options.time_budget_s * EXPENSIVE_BUILD_SHARE)
        return float("inf")

    def quick_p50(self, trial: Trial) -> float | None:
        """A short timing of ``trial`` at the smallest batch (ms), taken once; None when it cannot be timed."""
        if trial.quick_p50 is None and trial.worker is not None:
            try:
                batch = self.prep.source.fixed_batch or min(self.prep.batch_sizes)
                samples = trial.worker.call("time", batch, QUICK_TIMING_S, 5, 500, timeout=60)
                trial.quick_p50 = float(np.median(samples)) if samples else None
            except WorkerFailure:
                return None
        return trial.quick_p50

    def not_worth_building(self, plan: CandidatePlan, done: list[Trial]) -> Skipped | None:
        """Why a PyTorch CPU candidate cannot win, from what is already measured; None to build it.

        Never the baseline (always the first trial, so ``done`` is empty for it).
        """
        if plan.backend != "torch" or plan.device != "cpu" or not done or self.options.exhaustive:
            return None
        return torch_cpu_skip(plan, self._timed(done))

    def follow_up(self, trial: Trial, done: list[Trial]) -> CandidatePlan | None:
        """When plain int8 fails the gate, try int8 keeping the most sensitive layers in higher precision.

        Not when the plain int8 (the fastest the follow-up can be) is too slow to win: the skip
        and its figures go to ``skipped``.
        """
        plan = trial.plan
        if trial.status != "rejected" or plan.precision != "int8" or plan.variant:
            return None
        if plan.backend not in ("openvino", "onnxruntime"):
            return None
        follow = self._accuracy_aware(plan)
        ceiling = None if self.options.exhaustive else self.quick_p50(trial)
        skip = None if ceiling is None else follow_up_skip(follow, trial, ceiling, self._timed(done))
        if skip is not None:
            self.skipped.append(skip)
            self.progress.step(f"skipping {follow.name}: {plan.name} is not faster than the best accepted")
            return None
        return follow

    def _timed(self, done: list[Trial]) -> list[tuple[Trial, float]]:
        timed = [(t, self.quick_p50(t)) for t in done if t.status == "accepted"]
        return [(t, p) for t, p in timed if p is not None]

    def _accuracy_aware(self, plan: CandidatePlan) -> CandidatePlan:
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
        self._run_schedule(live, schedule, per_slot)
        self._confirm(live, per_slot)
        for trial in live.values():
            if trial.worker is not None and trial.status == "accepted":
                try:
                    trial.stats = trial.worker.call("stats", timeout=30)
                    trial.settings = trial.worker.call("settings", timeout=30)
                except WorkerFailure as exc:
                    trial.status, trial.reason = "failed", str(exc)

    def _run_schedule(self, live: dict[str, Trial], schedule: list[tuple[str, int]], per_slot: float) -> None:
        for name, batch in schedule:
            trial = live.get(name)
            if trial is None or trial.status != "accepted" or trial.worker is None:
                continue
            try:
                samples = trial.worker.call("time", batch, per_slot, 5, 2000, timeout=max(60.0, per_slot * 20))
                trial.samples.setdefault(batch, []).extend(samples)
                if samples:
                    trial.round_p50s.setdefault(batch, []).append(float(np.median(samples)))
            except WorkerFailure as exc:
                trial.status, trial.reason = "failed", f"timing at batch {batch}: {exc}"

    def _confirm(self, live: dict[str, Trial], per_slot: float) -> None:
        """More interleaved rounds for the candidates still close to the fastest, batch size by batch size."""
        from honed.optimizer.measure import contenders, rounds_schedule, typical_ms

        for batch in self.prep.batch_sizes:
            p50 = {
                name: typical_ms(t.samples[batch], t.round_p50s.get(batch, ()))
                for name, t in live.items()
                if t.status == "accepted" and t.samples.get(batch)
            }
            # The fastest alone gets its rounds too: its p50 is what the report promises.
            close = contenders(p50, CONTENDER_WITHIN)
            if not close or self.remaining() < len(close) * CONFIRM_ROUNDS * per_slot * 2 + 5:
                continue
            why = (
                f"within {CONTENDER_WITHIN}x of the fastest"
                if len(close) > 1
                else f"none other within {CONTENDER_WITHIN}x; more rounds for a steadier p50"
            )
            self.progress.step(f"timing {', '.join(close)} at batch {batch} for {CONFIRM_ROUNDS} more rounds ({why})")
            self._run_schedule(live, rounds_schedule(close, [batch], CONFIRM_ROUNDS), per_slot)

    def close(self, trials: list[Trial]) -> None:
        """Stop the trials' worker processes."""
        for trial in trials:
            if trial.worker is not None:
                trial.worker.close()
                trial.worker = None
