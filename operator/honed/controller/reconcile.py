"""``reconcile(spec, observed) -> Plan``: the whole controller logic, level-based and pure.

Every trigger (create, update, resume, the timer, a child's event) runs the same function on a
fresh observation; it decides from what exists, never from which event arrived, so a restarted
operator converges to the same plan and never repeats work that already happened.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from honed.api.spec import OptimizedModelSpec, Serving, SpecError, parse_spec
from honed.api.status import (
    DEPLOYED,
    OPTIMIZED,
    LastOptimization,
    OptimizedModelStatus,
    Phase,
    PoolStatus,
)
from honed.controller import names
from honed.controller.conditions import SetCondition, load_status, seconds_between, set_condition, transition_events
from honed.controller.jobs import Owner, build_request, optimizer_job, request_configmap
from honed.controller.reconcile_data import (
    Delete,
    Event,
    Observed,
    Patch,
    Plan,
    PodProblem,
)
from honed.controller.rollout import REPLICAS_UNAVAILABLE, deploy
from honed.controller.selection import PoolOutcome, Selection, select, summaries
from honed.controller.settings import HonedSettings
from honed.controller.winner import apply_requests, build_winner, next_version, report_uri
from honed.optimizer.backends import device_backends
from honed.optimizer.selection import Criteria

TOP_CANDIDATES = 8
# The model's URI lives outside the cluster: no watch says when it appears, so it is retried.
RETRY_UNREACHABLE_S = 60.0

# Waits that end only when someone acts (a node, an image, a Secret, an admission rule): after
# HONED_PENDING_TIMEOUT_S the pool fails with the reason instead of staying Pending for ever.
GIVE_UP_REASONS = frozenset({"Unschedulable", "ImageUnavailable", "ContainerConfigError", "FailedCreate"})
RETRY_HINT = f'then annotate the OptimizedModel {names.REOPTIMIZE}="Requested:$(date +%s)" to run it again'
SLO_MET = "SLOMet"


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
                reason="PoolWithoutPrice",
            )
    if spec.search.backends:
        # A pool none of whose backends can run would only fail after its Job was scheduled.
        for index, target in enumerate(spec.targets):
            pool = settings.pool(target.pool)
            assert pool is not None  # checked above
            runnable = device_backends(pool.device)
            if not set(spec.search.backends) & set(runnable):
                raise SpecError(
                    "spec.search.backends",
                    f"none of {', '.join(spec.search.backends)} runs on pool {target.pool!r} "
                    f"(spec.targets[{index}], device {pool.device}, which runs {', '.join(runnable)}); "
                    "add one of those, leave backends empty, or target another pool",
                    reason="NoBackendForPool",
                )


def reconcile(spec_raw: Any, obs: Observed) -> Plan:
    """Decide one pass, purely: the children to create, patch and delete, the status, the Events.

    An invalid spec (``plan.invalid_spec``) changes nothing but the status and its Events: a
    serving version keeps serving the last valid spec.
    """
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
        plan.invalid_spec = str(exc)
        return _finish(plan, old, new)

    optimization = names.optimization_id(spec, obs.annotations)
    _start_optimization_if_new(new, obs, optimization)
    _delete_stale(plan, obs, spec, optimization)
    optimizing = _optimize(plan, new, obs, spec, optimization, condition)
    apply_requests(new, obs, spec.serving, optimizing, condition, plan.events)
    deploy(plan, new, obs, spec, condition)
    _feedback_configured(new, obs, spec)
    new.phase = _phase(new, optimizing)
    return _finish(plan, old, new)


def repository_write_failed(plan: Plan, obs: Observed, message: str) -> Plan:
    """The plan once its repository write failed: the Deployment stays as it is, status and an Event say why.

    Pods of the new version could not load it; the previous version keeps serving.
    """
    status = load_status(plan.status)
    set_condition(status, DEPLOYED, False, "RepositoryWriteFailed", message, now=obs.now, generation=obs.generation)
    return replace(
        plan,
        repository=None,
        create=[m for m in plan.create if m["kind"] != "Deployment"],
        patch=[p for p in plan.patch if p.kind != "Deployment"],
        status=status.to_wire(),
        events=[*plan.events, Event("Warning", "RepositoryWriteFailed", message)],
    )


def _run_of(obs: Observed, optimization: str) -> str:
    """A new run of ``optimization``, unless its Jobs exist already: then theirs.

    That happens when the status write that recorded their run was lost; the reports are then
    looked for where those Jobs write them.
    """
    for job in sorted(obs.jobs.values(), key=lambda j: j.name):
        if job.optimization == optimization:
            return job.run or optimization  # no run: a Job of an earlier operator, keyed by the id
    return names.run_id(optimization, obs.now)


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
        id=optimization,
        run=_run_of(obs, optimization),
        reason=reason,
        started_at=obs.now,
        generation=obs.generation,
        request=request,
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
    run = last.run or optimization  # runs of earlier operators were keyed by the id alone
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
            plan.create.append(optimizer_job(owner, spec, pool, settings, optimization, run))
            pools.append(PoolStatus(pool=pool_name, job=job, phase="Pending", message="Job created"))
            continue
        status = PoolStatus(pool=pool_name, job=job, phase=state.phase, message=state.message, reason=state.reason)
        if state.phase in ("Pending", "Running") and state.problem is not None:
            _pool_problem(plan, status, state.problem, obs, spec.model.credentials_secret)
        if state.phase == "Succeeded":
            read = obs.reports.get(pool_name)
            status.report = report_uri(obs, run, pool_name)
            if read is None or read.report is None:
                status.phase = "Failed"
                why = read.error if read is not None else "not read yet"
                status.message = f"the Job succeeded but its report is unusable: {why}"
        pools.append(status)
    new.pools = pools

    if any(p.phase in ("Pending", "Running") for p in pools):
        progress = ", ".join(f"{p.pool} {p.phase.lower()}" + (f": {p.message}" if p.reason else "") for p in pools)
        # Jobs and pods that change wake the next pass through the watch cache; only a pending
        # timeout (set by _pool_problem) needs a timer.
        condition(OPTIMIZED, False, "Optimizing", f"optimization {optimization}: {progress}")
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
    _record_selection(plan, new, obs, run, selection, spec.serving, condition)
    return False


def give_up_hint(problem: PodProblem, pool: str, namespace: str, spec_secret: str | None) -> str:
    """What a person does about a pool that gave up waiting (one of GIVE_UP_REASONS), and how to retry.

    The kubelet's and admission's words name what is missing but not where honed takes it from:
    the pool's image, selector and resources are the chart's ``pools[]``, a Secret the spec's or
    the chart's.
    """
    where = f"the pools[] entry {pool!r} of the chart's values"
    if problem.reason == "ImageUnavailable":
        fix = (
            "make the optimizer image pullable by the pool's nodes (push it, or load it onto the nodes when "
            f"its pullPolicy is Never), or correct image.repository/tag in {where}"
        )
    elif problem.reason == "ContainerConfigError":
        if spec_secret and f'"{spec_secret}"' in problem.message:
            fix = f"create Secret {spec_secret!r} in namespace {namespace!r}, or correct spec.model.credentialsSecret"
        else:
            fix = f"create what the message names in namespace {namespace!r} (the store's Secret is the chart's)"
    elif problem.reason == "FailedCreate":
        fix = (
            f"namespace {namespace!r} refuses the pod: raise its ResourceQuota or LimitRange, relax its Pod Security "
            f"level, or lower resources in {where}"
        )
    else:
        fix = f"add a node that matches nodeSelector/tolerations and fits resources of {where}, or target another pool"
    return f"fix: {fix}; {RETRY_HINT}"


def _pool_problem(plan: Plan, status: PoolStatus, problem: PodProblem, obs: Observed, spec_secret: str | None) -> None:
    """Say why the pool's pod does not run; past the timeout, give up on waits only a person can end."""
    status.message = problem.describe()
    status.reason = problem.reason
    if problem.reason not in GIVE_UP_REASONS or problem.since is None:
        return
    waited = seconds_between(problem.since, obs.now)
    timeout = obs.settings.pending_timeout_s
    if waited is None:
        return
    if waited < timeout:
        # Nothing in the cluster changes when the timeout passes: the pass is scheduled for it.
        plan.requeue_after = min(plan.requeue_after or math.inf, timeout - waited + 1.0)
        return
    status.phase = "Failed"
    # Under two minutes (a short timeout), minutes would read "waited 0 min" (seen on a real cluster).
    waited_text = f"{waited:.0f} s" if waited < 120 else f"{waited / 60:.0f} min"
    status.message = (
        f"{problem.describe()} (waited {waited_text}, HONED_PENDING_TIMEOUT_S is {timeout:.0f} s); "
        + give_up_hint(problem, status.pool, obs.namespace, spec_secret)
    )
    # Suspending deletes the pod, so it holds no node or image pull; the annotation keeps the
    # failure for later passes and a restarted operator (the pod and its conditions are gone).
    body = {"metadata": {"annotations": {names.FAILED: status.message}}, "spec": {"suspend": True}}
    plan.patch.append(Patch("batch/v1", "Job", status.job, body))


def _record_selection(
    plan: Plan,
    new: OptimizedModelStatus,
    obs: Observed,
    run: str,
    selection: Selection,
    spec_serving: Serving,
    condition: SetCondition,
) -> None:
    last = new.last_optimization
    assert last is not None
    last.finished_at = obs.now
    new.candidates = summaries(selection, TOP_CANDIDATES)
    plan.optimization_seconds = seconds_between(last.started_at, obs.now)
    failed_pools = [p for p in new.pools if p.phase == "Failed"]
    if selection.winner is None:
        last.outcome = "Failed"
        plan.optimization_outcome = "failed"
        assert selection.failure is not None
        reason: str = selection.failure
        reasons = {p.reason for p in failed_pools}
        if reason == "AllPoolsFailed" and len(reasons) == 1 and None not in reasons:
            # One cause everywhere (no node fits, the image is missing): name it, not just the count.
            reason = str(reasons.pop())
        condition(OPTIMIZED, False, reason, selection.message)
        return
    win = selection.winner
    report = obs.reports[win.pool.name].report
    assert report is not None  # only pools with a report have candidates
    new.winner = build_winner(obs, run, win, report, spec_serving, next_version(new, obs))
    new.serving = None  # retune overrides and fallback requests were about the previous winner
    last.outcome = "Succeeded"
    plan.optimization_outcome = "succeeded"
    plan.winner_speedup = win.candidate.speedup
    speed = f", {win.candidate.speedup:.2f}x the original" if win.candidate.speedup else ""
    note = f" ({len(failed_pools)} pool(s) failed: {', '.join(p.pool for p in failed_pools)})" if failed_pools else ""
    condition(OPTIMIZED, True, "WinnerSelected", f"{win.label()}, version {new.winner.version}{speed}{note}")


def _feedback_configured(new: OptimizedModelStatus, obs: Observed, spec: OptimizedModelSpec) -> None:
    """The feedback loop cannot run without Prometheus: say so where the owner looks (SLOMet)."""
    if spec.feedback.enabled and not obs.settings.prometheus_url:
        message = (
            "spec.feedback.enabled is true but the operator has no Prometheus (HONED_PROMETHEUS_URL, the "
            "chart's prometheus.url): live traffic is not watched"
        )
        set_condition(
            new, SLO_MET, "Unknown", "PrometheusNotConfigured", message, now=obs.now, generation=obs.generation
        )
        return
    slo = new.condition(SLO_MET)
    if slo is not None and slo.reason == "PrometheusNotConfigured":
        # Configured now (the loop writes its own verdict), or the loop is off: nothing to judge.
        new.conditions = [c for c in new.conditions if c is not slo]


def _phase(new: OptimizedModelStatus, optimizing: bool) -> Phase:
    optimized = new.condition(OPTIMIZED)
    if optimizing:
        return "Optimizing"
    if optimized is not None and optimized.status == "False":
        return "Failed" if optimized.reason != "Optimizing" else "Optimizing"
    deployed = new.condition(DEPLOYED)
    if new.winner is None:
        return "Pending"
    if deployed is not None and (deployed.status == "True" or deployed.reason == REPLICAS_UNAVAILABLE):
        # Pods of the served version that went away leave it Serving, as a Pod whose container
        # restarts stays Running: Ready says whether anything answers.
        return "Serving"
    return "Deploying"


def _finish(plan: Plan, old: OptimizedModelStatus, new: OptimizedModelStatus) -> Plan:
    plan.events.extend(transition_events(old, new))
    plan.status = new.to_wire()
    return plan
