"""The winner in status: built from a scored candidate, numbered, and changed by the feedback loop.

The feedback loop never touches the winner itself; it writes requests to ``status.serving``
(``overrides`` from Retune decisions, ``fallback`` from a Fallback decision) and reconcile
applies them here, level-based: the desired served version is a function of the status and the
spec alone, so a restarted operator derives the same one and never writes a version twice.

- Retune: when the overrides differ from those the winner's version was written with, the same
  candidate gets a NEW version (Triton's response cache keeps answers per version) written with
  the overridden config; the Deployment rolls and the old version serves until the new is ready.
- Fallback: the requested accepted candidate (or, when it is no longer eligible, the next best
  by the objective) becomes the winner with reason ``FallbackFromSLO``, as a new version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from honed.api.spec import Serving
from honed.api.status import (
    OPTIMIZED,
    CandidateSummary,
    OptimizedModelStatus,
    ServedConfig,
    ServingOverrides,
    ServingRequests,
    Winner,
)
from honed.artifacts import join_uri
from honed.controller import names
from honed.controller.reconcile_data import Event, Observed
from honed.controller.selection import Scored, significant
from honed.controller.stored_repository import serving_options
from honed.optimizer.report import REPORT_FILE, Report
from honed.serving.tuning import choose_batching, choose_instances

SetCondition = Callable[[str, bool, str, str], None]
FALLBACK_REASON = "FallbackFromSLO"


def report_uri(obs: Observed, run: str, pool: str) -> str:
    """The store URI of one pool's report.json in one run of the observed resource."""
    key = names.optimization_key(obs.namespace, obs.name, run, pool)
    return join_uri(obs.settings.artifact_store, key, REPORT_FILE)


def next_version(new: OptimizedModelStatus, obs: Observed) -> int:
    """A new winner or config always gets a new version: Triton's cache must not mix answers."""
    seen = [new.winner.version if new.winner else 0, max(obs.repository_versions, default=0)]
    if obs.deployment is not None and obs.deployment.version is not None:
        seen.append(obs.deployment.version)
    return max(seen) + 1


def effective_serving(serving: Serving, overrides: ServingOverrides | None) -> Serving:
    """spec.serving with the feedback loop's overrides on top (what config.pbtxt and the pods get)."""
    if overrides is None:
        return serving
    batching = serving.dynamic_batching
    if overrides.max_queue_delay_microseconds is not None:
        batching = batching.model_copy(update={"max_queue_delay_microseconds": overrides.max_queue_delay_microseconds})
    update: dict[str, Any] = {"dynamic_batching": batching}
    if overrides.instances is not None:
        update["instances"] = overrides.instances
    if overrides.response_cache is not None:
        update["response_cache"] = overrides.response_cache
    return serving.model_copy(update=update)


def overrides_basis(serving: Serving) -> str:
    """Hash of the spec.serving fields overrides replace: the owner changing them takes precedence."""
    fields = {"instances", "dynamic_batching", "response_cache"}
    return names.short_hash(serving.model_dump(mode="json", include=fields))


def served_config(report: Report, scored: Scored, serving: Serving) -> ServedConfig:
    """The settings honed.serving derives for this candidate: what the feedback loop retunes from."""
    options = serving_options(serving.model_dump(mode="json"))
    batching = choose_batching(report, scored.candidate, options)
    instances = choose_instances(report, scored.candidate, options)
    return ServedConfig(
        max_batch_size=batching.max_batch_size,
        max_queue_delay_microseconds=None if batching.dynamic is None else batching.dynamic.max_queue_delay_us,
        instances=instances.group.count,
        response_cache=options.response_cache,
    )


def build_winner(obs: Observed, run: str, scored: Scored, report: Report, serving: Serving, version: int) -> Winner:
    """``status.winner`` for ``scored`` as model ``version``: its figures, store locations and derived config."""
    pool_root = join_uri(
        obs.settings.artifact_store, names.optimization_key(obs.namespace, obs.name, run, scored.pool.name)
    )
    return Winner(
        pool=scored.pool.name,
        name=scored.candidate.name,
        backend=scored.candidate.backend,
        precision=scored.candidate.precision,
        device=scored.candidate.device,
        optimization=run,
        version=version,
        speedup=significant(scored.candidate.speedup),
        p50_ms=significant(scored.p50),
        p99_ms=significant(scored.p99),
        throughput=significant(scored.throughput or None),
        metric_drop=significant(scored.drop),
        cost_per_million=significant(scored.cost),
        report=report_uri(obs, run, scored.pool.name),
        artifact=join_uri(pool_root, scored.candidate.artifact or scored.candidate.name),
        config=served_config(report, scored, serving),
    )


def fallback_choice(
    candidates: list[CandidateSummary], winner: Winner, wanted: tuple[str, str], left: set[str]
) -> CandidateSummary | None:
    """The requested candidate if still eligible, else the next best by the objective.

    ``candidates`` are ranked best first; the current winner and candidates the loop already
    left for breaking the SLO (``left``, NAME@POOL) are never chosen.
    """
    eligible = [
        c
        for c in candidates
        if c.verdict in ("eligible", "winner")
        and (c.name, c.pool) != (winner.name, winner.pool)
        and f"{c.name}@{c.pool}" not in left
    ]
    for candidate in eligible:
        if (candidate.name, candidate.pool) == wanted:
            return candidate
    return eligible[0] if eligible else None


def apply_requests(
    new: OptimizedModelStatus,
    obs: Observed,
    spec_serving: Serving,
    optimizing: bool,
    condition: SetCondition,
    events: list[Event],
) -> None:
    """Apply ``status.serving`` to the winner (see the module docstring); pure."""
    requests, winner = new.serving, new.winner
    if requests is None or winner is None:
        return
    if requests.fallback is not None:
        _fallback(new, obs, requests, spec_serving, optimizing, condition, events)
        winner = new.winner
        assert winner is not None
    overrides = requests.overrides
    if overrides is not None and requests.basis != overrides_basis(spec_serving):
        events.append(
            Event(
                "Normal",
                "OverridesDropped",
                f"spec.serving changed: the feedback loop's overrides ({overrides.describe()}) no longer apply",
            )
        )
        overrides = requests.overrides = requests.basis = None
    if overrides is not None and overrides == ServingOverrides():
        overrides = None
    if winner.overrides != overrides:
        winner.version = next_version(new, obs)
        winner.overrides = overrides
        what = overrides.describe() if overrides is not None else "spec.serving as written"
        events.append(
            Event("Normal", "Retuned", f"version {winner.version} serves {winner.name} on {winner.pool} with {what}")
        )
    if requests == ServingRequests():
        new.serving = None


def _fallback(
    new: OptimizedModelStatus,
    obs: Observed,
    requests: ServingRequests,
    spec_serving: Serving,
    optimizing: bool,
    condition: SetCondition,
    events: list[Event],
) -> None:
    request, winner = requests.fallback, new.winner
    assert request is not None and winner is not None
    if request.replaces != f"{winner.name}@{winner.pool}":
        requests.fallback = None  # about a winner that is gone already
        return
    if optimizing:
        return  # the optimization under way selects a new winner, which clears the request
    left = set((new.feedback or {}).get("fallenBackFrom") or [])
    choice = fallback_choice(new.candidates, winner, (request.candidate, request.pool), left)
    read = obs.reports.get(choice.pool) if choice is not None else None
    pool = obs.settings.pool(choice.pool) if choice is not None else None
    report = read.report if read is not None else None
    if choice is None or pool is None or report is None:
        why = (
            "no other accepted candidate is left"
            if choice is None
            else f"pool {choice.pool} is no longer configured"
            if pool is None
            else f"its report cannot be read: {read.error if read is not None else 'not read yet'}"
        )
        if choice is not None and pool is not None and read is None:
            return  # observe reads the report on the next pass
        requests.fallback = None
        events.append(Event("Warning", "FallbackImpossible", f"cannot fall back from {winner.name}: {why}"))
        return
    try:
        candidate = report.candidate(choice.name)
    except KeyError:
        requests.fallback = None
        events.append(Event("Warning", "FallbackImpossible", f"the {choice.pool} report has no {choice.name!r}"))
        return
    previous = f"{winner.name} on {winner.pool}"
    # The throughput the status showed when this candidate was ranked: within the budget then.
    scored = Scored(pool, candidate, "eligible", throughput=choice.throughput or 0.0)
    fallen = build_winner(obs, winner.optimization, scored, report, spec_serving, next_version(new, obs))
    fallen.reason = FALLBACK_REASON
    fallen.fallback_from = previous
    new.winner = fallen
    new.serving = requests
    requests.fallback = None
    requests.overrides = requests.basis = None  # tuned for the previous candidate
    for summary in new.candidates:
        if (summary.name, summary.pool) == (fallen.name, fallen.pool):
            summary.verdict = "winner"
        elif summary.verdict == "winner":
            summary.verdict = "eligible"
    detail = f": {request.reason}" if request.reason else ""
    condition(
        OPTIMIZED,
        True,
        "FallbackFromSLO",
        f"{scored.label()}, version {fallen.version}, serves instead of {previous}{detail}",
    )
