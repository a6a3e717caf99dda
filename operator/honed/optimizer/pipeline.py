"""``optimize(options)``: the whole run from a model to ``report.json`` and artifacts."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from honed import __version__
from honed.optimizer.engine import Search, Trial
from honed.optimizer.machine import device_info, loaded_note
from honed.optimizer.measure import latency_stats, throughput
from honed.optimizer.options import OptimizeOptions
from honed.optimizer.planning import Prepared, plan_candidates, prepare, repro_command
from honed.optimizer.progress import Progress
from honed.optimizer.report import (
    Candidate,
    DataInfo,
    ModelInfo,
    Report,
    SearchSettings,
    Skipped,
)
from honed.optimizer.selection import Criteria, pick


def optimize(options: OptimizeOptions, progress: Progress | None = None) -> Report:
    """Search for the fastest candidate inside the accuracy gate; write ``report.json`` and artifacts to ``out``.

    Returns:
        The report, also when no candidate won (``winner`` is then None and a note says why).

    Raises:
        InputError: the model, data or options are unusable, or the original fails on the input.
        EnvironmentProblem: the machine has too little memory to run the original.
        BudgetExhausted: the time budget is too short to run the original.
    """
    progress = progress or Progress()
    started = time.monotonic()
    options.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=options.out))
    try:
        prep = prepare(options, work, progress)
        baseline_plan, plans, skipped = plan_candidates(options, prep)
        progress.step(
            f"{len(plans) + 1} candidates, {len(skipped)} skipped; data: {prep.dataset.samples} samples "
            f"({'synthesized' if prep.dataset.synthesized else 'from file'}), metric {prep.metric}"
        )
        search = Search(options, prep, work, progress)
        trials = _evaluate_all(search, Trial(baseline_plan), [Trial(p) for p in plans])
        try:
            search.time_all(trials)
        finally:
            search.close(trials)
        candidates = [_candidate(t, options, prep) for t in trials]
        skipped += search.skipped
        report = _assemble(options, prep, candidates, skipped, time.monotonic() - started, search.timing_load)
        _prune_artifacts(options.out, report)
        report.write(options.out)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _evaluate_all(search: Search, baseline: Trial, others: list[Trial]) -> list[Trial]:
    from honed.errors import BudgetExhausted, EnvironmentProblem, InputError
    from honed.optimizer.failures import explain

    queue = [baseline, *others]
    done: list[Trial] = []
    index = 0
    while queue:
        trial = queue.pop(0)
        skip = search.not_worth_building(trial.plan, done)
        if skip is not None:
            search.skipped.append(skip)
            search.progress.step(f"skipping {trial.name}: {skip.reason}")
            continue
        index += 1
        total = index + len(queue)
        live = sum(1 for t in done if t.status == "accepted")
        search.evaluate(trial, live)
        if trial is baseline and trial.status != "accepted":
            search.close([*done, trial])
            why = explain(trial.reason)
            # The exit code says what fixes it (the operator names the reason from it): input 2,
            # memory 3 (the machine), time 4 (the budget).
            error = {"input": InputError, "memory": EnvironmentProblem, "time": BudgetExhausted}[why.kind]
            raise error(f"the original model does not run ({trial.plan.name}): {why.cause}", hint=why.hint)
        drop = f"drop {trial.metric.drop:.4f}" if trial.metric else ""
        built = f"built {trial.build_seconds:.1f}s" if trial.build_seconds is not None else ""
        search.progress.candidate(
            index,
            total,
            trial.name,
            trial.status,
            " ".join(x for x in (built, drop, trial.reason if trial.status != "accepted" else "") if x),
        )
        # A rejected trial's worker lives until the follow-up is decided: its speed bounds it.
        follow = search.follow_up(trial, done)
        if trial.status != "accepted" and trial.worker is not None:
            trial.worker.close()
            trial.worker = None
        done.append(trial)
        if follow is not None:
            queue.insert(0, Trial(follow))
    return done


def _candidate(trial: Trial, options: OptimizeOptions, prep: Prepared) -> Candidate:
    rounds = trial.round_p50s
    by_batch = {str(b): latency_stats(s, rounds.get(b, ())) for b, s in sorted(trial.samples.items()) if s}
    tput = {str(b): throughput(b, s, rounds.get(b, ())) for b, s in sorted(trial.samples.items()) if s}
    first = str(min(prep.batch_sizes)) if prep.batch_sizes else "1"
    artifact_dir = options.out / "artifacts" / trial.name
    from honed.optimizer.artifact import artifact_size

    status = trial.status if trial.status in ("accepted", "rejected", "failed") else "failed"
    if status == "accepted" and not by_batch:
        status, trial.reason = "failed", trial.reason or "no timing samples"
    return Candidate(
        name=trial.name,
        backend=trial.plan.backend,
        precision=trial.plan.precision,
        variant=trial.plan.variant,
        device=trial.plan.device,
        status=status,
        reason=trial.reason,
        latency_ms=by_batch.get("1", by_batch.get(first)),
        latency_by_batch_ms=by_batch,
        throughput=tput,
        metric=trial.metric,
        size_bytes=(artifact_size(artifact_dir) or None) if artifact_dir.is_dir() else None,
        peak_rss_bytes=trial.stats.get("peak_rss_bytes"),
        peak_gpu_bytes=trial.stats.get("peak_gpu_bytes"),
        build_seconds=None if trial.build_seconds is None else round(trial.build_seconds, 2),
        artifact=f"artifacts/{trial.name}" if artifact_dir.is_dir() else None,
        repro=repro_command(options, trial.plan),
        settings=trial.settings,
    )


def _assemble(
    options: OptimizeOptions,
    prep: Prepared,
    candidates: list[Candidate],
    skipped: list[Skipped],
    duration: float,
    timing_load: list[float],
) -> Report:
    baseline = candidates[0]
    base_p50 = baseline.latency_ms.p50 if baseline.latency_ms else None
    for cand in candidates:
        if base_p50 and cand.latency_ms and cand.latency_ms.p50 > 0:
            cand.speedup = round(base_p50 / cand.latency_ms.p50, 3)
    winner = pick(candidates, Criteria(options.objective, options.max_metric_drop, options.latency_budget_ms))
    notes = list(prep.notes)
    if prep.mask is not None and any(c.metric is not None and c.metric.masked_by for c in candidates):
        notes.append(
            f"the gate compares per-position outputs where {prep.mask.input} is 1 and leaves padded positions "
            f"out ({int((~prep.mask.keep).sum())} of {prep.mask.keep.size} positions in the data), as any "
            "consumer of those outputs does"
        )
    if winner is None:
        drops = [c.metric.drop for c in candidates if c.metric is not None and c is not baseline]
        best = f"; the best metric drop seen was {min(drops):.4f}" if drops else ""
        notes.append(
            f"no candidate met the constraints (max drop {options.max_metric_drop}, latency budget "
            f"{options.latency_budget_ms} ms){best}"
        )
    device = device_info(options.threads, gpu=_gpu_name() if options.device == "cuda" else None)
    device.timing_load = timing_load
    loaded = loaded_note(timing_load, device.cpus)
    if loaded is not None:
        notes.append(loaded)
    src = prep.source
    fixed = src.fixed_batch
    return Report(
        honed_version=__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=round(duration, 1),
        model=ModelInfo(
            source=src.location,
            format=src.format,
            inputs=src.inputs,
            outputs=src.outputs,
            batch="fixed" if fixed else "dynamic",
            fixed_batch_size=fixed,
            name=_model_name(src.location),
        ),
        device=device,
        data=DataInfo(
            source="synthesized" if prep.dataset.synthesized else "file",
            path=prep.dataset.path,
            samples=prep.dataset.samples,
            labels=prep.dataset.labels is not None,
        ),
        settings=SearchSettings(
            objective=options.objective,
            latency_budget_ms=options.latency_budget_ms,
            batch_sizes=prep.batch_sizes,
            precisions=options.precisions,
            backends=options.backends,
            time_budget_s=options.time_budget_s,
            metric=prep.metric,
            max_metric_drop=options.max_metric_drop,
        ),
        baseline=baseline,
        candidates=candidates,
        skipped=skipped,
        winner=winner.name if winner else None,
        notes=notes,
    )


def _model_name(location: str) -> str:
    """A Triton-safe model name from the source: file stem or factory name."""
    stem = Path(location.split(":")[-1]).stem if ":" in location else Path(location).stem
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem).strip("_")
    return cleaned or "model"


def _prune_artifacts(out: Path, report: Report) -> None:
    """Keep the winner's and accepted candidates' artifacts; drop the rest."""
    keep = {c.name for c in report.accepted()}
    root = out / "artifacts"
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    for cand in report.candidates:
        if cand.name not in keep:
            cand.artifact = None


def _gpu_name() -> str | None:
    try:
        import torch

        return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    except ImportError:
        return None
