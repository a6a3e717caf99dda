"""``reconcile(spec, observed) -> Plan``: the whole controller logic, level-based and pure.

Every trigger (create, update, resume, the timer, a child's event) runs the same function on a
fresh observation; it decides from what exists, never from which event arrived, so a restarted
operator converges to the same plan and never repeats work that already happened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from honed.api.spec import OptimizedModelSpec, SpecError, parse_spec
from honed.api.status import (
    DEPLOYED,
    OPTIMIZED,
    READY,
    LastOptimization,
    OptimizedModelStatus,
    Phase,
    PoolStatus,
    Winner,
)
from honed.artifacts import join_uri
from honed.controller import names
from honed.controller.conditions import load_status, set_condition, transition_events
from honed.controller.jobs import Owner, build_request, optimizer_job, request_configmap
from honed.controller.selection import Criteria, PoolOutcome, Selection, select, significant, summaries
from honed.controller.state import Delete, Observed, Patch, Plan, RepositoryWrite
from honed.controller.triton import endpoint, triton_deployment, triton_service
from honed.optimizer.report import REPORT_FILE
from honed.settings import HonedSettings

TOP_CANDIDATES = 8
POLL_OPTIMIZING_S = 15.0
POLL_DEPLOYING_S = 10.0
RETRY_UNREACHABLE_S = 60.0
APPLIED = "honed.dev/applied"

SetCondition = Callable[[str, bool, str, str], None]


def check_pools(spec: OptimizedModelSpec, settings: HonedSettings) -> None:
    """Every target must be a configured pool; the cost objective needs every pool's price."""
    known = settings.pool_names()
    for index, target in enumerate(spec.targets):
        if target.pool not in known:
            listing = ", ".join(known) if known else "none (set HONED_POOLS)"
            raise SpecError(
                f"spec.targets[{index}].pool",
                f"unknown pool {target.pool!r}; known pools: {listing}",
                reason="UnknownPool",
            )
    if spec.search.objective == "cost":
        unpriced = [t.pool for t in spec.targets if (p := settings.pool(t.pool)) and p.price_per_hour is None]
        if unpriced:
            raise SpecError(
                "spec.search.objective",
                f"cost needs a pricePerHour for every target pool; {', '.join(unpriced)} has none "
                "(use latency or throughput, or ask for the price in the chart's values)",
            )


def report_uri(settings: HonedSettings, obs: Observed, optimization: str, pool: str) -> str:
    key = names.optimization_key(obs.namespace, obs.name, optimization, pool)
    return join_uri(settings.artifact_store, key, REPORT_FILE)


def _seconds_between(start: str, end: str) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def reconcile(spec_raw: Any, obs: Observed) -> Plan:
    old = load_status(obs.status)
    new = old.model_copy(deep=True)
    new.observed_generation = obs.generation
    plan = Plan()

    def condition(type_: str, value: bool, reason: str, message: str) -> None:
        set_condition(new, type_, value, reason, message, now=obs.now, generation=obs.generation)

    try:
        spec = parse_spec(spec_raw)
        check_pools(spec, obs.settings)
    except SpecError as exc:
        # Nothing is created or touched: a serving version keeps serving the last valid spec.
        condition(OPTIMIZED, False, exc.reason, str(exc))
        new.phase = "Failed"
        return _finish(plan, old, new)

    optimization = names.optimization_id(spec, obs.annotations)
    _start_optimization_if_new(new, obs, optimization)
    _delete_stale(plan, obs, spec, optimization)
    optimizing = _optimize(plan, new, obs, spec, optimization, condition)
    _deploy(plan, new, obs, spec, condition)
    new.phase = _phase(new, optimizing)
    return _finish(plan, old, new)


def _start_optimization_if_new(new: OptimizedModelStatus, obs: Observed, optimization: str) -> None:
    last = new.last_optimization
    if last is not None and last.id == optimization:
        return
    request = obs.annotations.get(names.REOPTIMIZE)
    if last is None:
        reason = "Created"
    elif (request or None) != (last.request or None):
        reason = names.reoptimize_reason(obs.annotations) or "SpecChanged"
    else:
        reason = "SpecChanged"
    new.last_optimization = LastOptimization(
        id=optimization, reason=reason, started_at=obs.now, generation=obs.generation, request=request
    )
    new.pools = []
    new.candidates = []


def _delete_stale(plan: Plan, obs: Observed, spec: OptimizedModelSpec, optimization: str) -> None:
    """Jobs of an older spec stop (their reports stay in the store); so do their ConfigMaps."""
    current = {names.job_name(obs.name, pool, optimization) for pool in spec.pools()}
    for job in sorted(obs.jobs.values(), key=lambda j: j.name):
        if job.name not in current:
            plan.delete.append(Delete("batch/v1", "Job", job.name))
    for configmap in sorted(obs.configmaps - current):
        plan.delete.append(Delete("v1", "ConfigMap", configmap))


def _optimize(
    plan: Plan,
    new: OptimizedModelStatus,
    obs: Observed,
    spec: OptimizedModelSpec,
    optimization: str,
    condition: SetCondition,
) -> bool:
    """Drive the current optimization; returns True while it is still running."""
    last = new.last_optimization
    assert last is not None
    if last.finished_at is not None:
        return False
    settings = obs.settings
    owner = Owner(obs.name, obs.namespace, obs.uid)
    jobs = {pool: names.job_name(obs.name, pool, optimization) for pool in spec.pools()}
    present = {pool: obs.jobs.get(name) for pool, name in jobs.items()}
    if all(state is None for state in present.values()) and obs.model_error:
        condition(OPTIMIZED, False, "ModelUnreachable", f"spec.model.uri: {obs.model_error}")
        plan.requeue_after = RETRY_UNREACHABLE_S
        new.pools = []
        return False

    pools: list[PoolStatus] = []
    for pool_name, job in jobs.items():
        pool = settings.pool(pool_name)
        assert pool is not None  # check_pools ran
        state = present[pool_name]
        if state is None:
            if job not in obs.configmaps:
                plan.create.append(
                    request_configmap(
                        owner,
                        job,
                        pool_name,
                        optimization,
                        build_request(spec, pool, settings, batch_sizes=names.observed_batch_sizes(obs.annotations)),
                    )
                )
            plan.create.append(optimizer_job(owner, spec, pool, settings, optimization))
            pools.append(PoolStatus(pool=pool_name, job=job, phase="Pending", message="Job created"))
            continue
        status = PoolStatus(pool=pool_name, job=job, phase=state.phase, message=state.message)
        if state.phase == "Succeeded":
            read = obs.reports.get(pool_name)
            status.report = report_uri(settings, obs, optimization, pool_name)
            if read is None or read.report is None:
                status.phase = "Failed"
                why = read.error if read is not None else "not read yet"
                status.message = f"the Job succeeded but its report is unusable: {why}"
        pools.append(status)
    new.pools = pools

    if any(p.phase in ("Pending", "Running") for p in pools):
        progress = ", ".join(f"{p.pool} {p.phase.lower()}" for p in pools)
        condition(OPTIMIZED, False, "Optimizing", f"optimization {optimization}: {progress}")
        plan.requeue_after = POLL_OPTIMIZING_S
        return True

    outcomes = [
        PoolOutcome(
            pool=settings.pool(p.pool),  # type: ignore[arg-type]
            report=(obs.reports[p.pool].report if p.phase == "Succeeded" else None),
            error=None if p.phase == "Succeeded" else (p.message or "the Job failed"),
        )
        for p in pools
    ]
    criteria = Criteria(spec.search.objective, spec.validation.max_metric_drop, spec.search.latency_budget_ms)
    selection = select(outcomes, criteria)
    _record_selection(plan, new, obs, optimization, selection, condition)
    return False


def _record_selection(
    plan: Plan,
    new: OptimizedModelStatus,
    obs: Observed,
    optimization: str,
    selection: Selection,
    condition: SetCondition,
) -> None:
    last = new.last_optimization
    assert last is not None
    last.finished_at = obs.now
    new.candidates = summaries(selection, TOP_CANDIDATES)
    plan.optimization_seconds = _seconds_between(last.started_at, obs.now)
    failed_pools = [p for p in new.pools if p.phase == "Failed"]
    if selection.winner is None:
        last.outcome = "Failed"
        plan.optimization_outcome = "failed"
        assert selection.failure is not None
        condition(OPTIMIZED, False, selection.failure, selection.message)
        return
    win = selection.winner
    report = report_uri(obs.settings, obs, optimization, win.pool.name)
    artifact_dir = win.candidate.artifact or win.candidate.name
    pool_root = join_uri(
        obs.settings.artifact_store,
        names.optimization_key(obs.namespace, obs.name, optimization, win.pool.name),
    )
    new.winner = Winner(
        pool=win.pool.name,
        name=win.candidate.name,
        backend=win.candidate.backend,
        precision=win.candidate.precision,
        device=win.candidate.device,
        optimization=optimization,
        version=_next_version(new, obs),
        speedup=significant(win.candidate.speedup),
        p50_ms=significant(win.p50),
        p99_ms=significant(win.p99),
        throughput=significant(win.throughput or None),
        metric_drop=significant(win.drop),
        cost_per_million=significant(win.cost),
        report=report,
        artifact=join_uri(pool_root, artifact_dir),
    )
    last.outcome = "Succeeded"
    plan.optimization_outcome = "succeeded"
    plan.winner_speedup = win.candidate.speedup
    speed = f", {win.candidate.speedup:.2f}x the original" if win.candidate.speedup else ""
    note = f" ({len(failed_pools)} pool(s) failed: {', '.join(p.pool for p in failed_pools)})" if failed_pools else ""
    condition(OPTIMIZED, True, "WinnerSelected", f"{win.label()}, version {new.winner.version}{speed}{note}")


def _next_version(new: OptimizedModelStatus, obs: Observed) -> int:
    """A new winner always gets a new version: Triton's cache must not mix two models' answers."""
    seen = [new.winner.version if new.winner else 0, max(obs.repository_versions, default=0)]
    if obs.deployment is not None and obs.deployment.version is not None:
        seen.append(obs.deployment.version)
    return max(seen) + 1


def _deploy(
    plan: Plan, new: OptimizedModelStatus, obs: Observed, spec: OptimizedModelSpec, condition: SetCondition
) -> None:
    winner = new.winner
    if winner is None:
        condition(DEPLOYED, False, "AwaitingWinner", "nothing to deploy until an optimization selects a winner")
        condition(READY, False, "AwaitingWinner", "no model is served yet")
        return
    settings = obs.settings
    pool = settings.pool(winner.pool)
    if pool is None:
        condition(DEPLOYED, False, "PoolRemoved", f"the winner's pool {winner.pool!r} is no longer configured")
        return
    owner = Owner(obs.name, obs.namespace, obs.uid)
    if winner.version not in obs.repository_ready:
        repository = join_uri(settings.artifact_store, names.repository_key(obs.namespace, obs.name))
        plan.repository = RepositoryWrite(
            version=winner.version,
            pool=winner.pool,
            candidate=winner.name,
            report_uri=winner.report,
            repository_uri=repository,
            model_name=names.triton_model_name(obs.name),
            serving=spec.serving.model_dump(mode="json"),
        )
    desired = triton_deployment(owner, spec.serving, pool, settings, winner.version)
    applied = names.short_hash(desired)
    desired["metadata"]["annotations"][APPLIED] = applied
    dep = obs.deployment
    if dep is None:
        plan.create.append(desired)
    elif dep.applied != applied:
        body = {"metadata": desired["metadata"], "spec": desired["spec"]}
        # A merge patch merges maps: selector keys of the previous pool must be removed explicitly.
        selector = desired["spec"]["template"]["spec"].get("nodeSelector", {})
        stale = {key: None for key in dep.node_selector if key not in selector}
        if stale:
            body["spec"]["template"]["spec"]["nodeSelector"] = {**selector, **stale}
        plan.patch.append(Patch("apps/v1", "Deployment", desired["metadata"]["name"], body))
    if not obs.service:
        plan.create.append(triton_service(owner))

    replicas = spec.serving.replicas
    current = dep is not None and dep.applied == applied and dep.rolled_out
    # As `kubectl rollout status`: every pod is of the new template, and as many are ready.
    rolled = (
        current
        and dep is not None
        and dep.updated_replicas >= replicas
        and dep.total_replicas <= dep.updated_replicas
        and dep.ready_replicas >= replicas
    )
    ready = dep.ready_replicas if dep is not None else 0
    what = f"version {winner.version} ({winner.name} on {winner.pool})"
    if rolled:
        condition(DEPLOYED, True, "RolledOut", f"{what}: {ready}/{replicas} replicas ready")
    elif current and dep is not None and dep.stalled:
        # New pods never got ready (a version Triton refuses, no capacity): old pods keep serving.
        keeps = f"; version {new.endpoint.version} keeps serving" if new.endpoint and ready else ""
        condition(DEPLOYED, False, "RolloutStalled", f"{what} did not become ready: {dep.stalled}{keeps}")
        plan.requeue_after = min(plan.requeue_after or POLL_DEPLOYING_S, POLL_DEPLOYING_S)
    else:
        condition(DEPLOYED, False, "RollingOut", f"{what}: {ready}/{replicas} replicas ready")
        plan.requeue_after = min(plan.requeue_after or POLL_DEPLOYING_S, POLL_DEPLOYING_S)
    if ready > 0:
        # During a rollout the ready pods may still be the previous version: keep announcing it.
        if rolled or new.endpoint is None:
            new.endpoint = endpoint(owner, winner.version)
        served = new.endpoint
        condition(READY, True, "Serving", f"model {served.model} version {served.version} at {served.http}")
    elif replicas == 0:
        new.endpoint = None
        condition(READY, False, "ScaledToZero", "spec.serving.replicas is 0")
    else:
        condition(
            READY,
            False,
            "NotReady" if dep is not None else "Deploying",
            f"no Triton pod of {what} is ready yet",
        )


def _phase(new: OptimizedModelStatus, optimizing: bool) -> Phase:
    optimized = new.condition(OPTIMIZED)
    if optimizing:
        return "Optimizing"
    if optimized is not None and optimized.status == "False":
        return "Failed" if optimized.reason != "Optimizing" else "Optimizing"
    deployed = new.condition(DEPLOYED)
    if new.winner is None:
        return "Pending"
    if deployed is not None and deployed.status == "True":
        return "Serving"
    return "Deploying"


def _finish(plan: Plan, old: OptimizedModelStatus, new: OptimizedModelStatus) -> Plan:
    plan.events.extend(transition_events(old, new))
    plan.status = new.to_wire()
    return plan
