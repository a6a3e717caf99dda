"""The serving half of reconcile: the winner's version on Triton, and what the rollout reports.

It plans the winner's repository version, the Triton Deployment and Service, and sets the Deployed
and Ready conditions and the endpoint from the pods (pure, like reconcile).
"""

from __future__ import annotations

from honed.api.spec import OptimizedModelSpec, Serving
from honed.api.status import DEPLOYED, READY, OptimizedModelStatus, Winner
from honed.artifacts import join_uri
from honed.controller import names
from honed.controller.conditions import AWAITING_WINNER, SetCondition
from honed.controller.jobs import Owner
from honed.controller.reconcile_data import (
    DeploymentState,
    Observed,
    Patch,
    Plan,
    PodProblem,
    PodState,
    RepositoryWrite,
)
from honed.controller.settings import Pool
from honed.controller.triton_manifests import endpoint, runs_serving_config, triton_deployment, triton_service
from honed.controller.winner import effective_serving

POLL_DEPLOYING_S = 10.0
# Deployed's reason when the served version's pods went away or restarted while nothing rolls out.
REPLICAS_UNAVAILABLE = "ReplicasUnavailable"


def deploy(
    plan: Plan, new: OptimizedModelStatus, obs: Observed, spec: OptimizedModelSpec, condition: SetCondition
) -> None:
    """Plan the winner's repository version, Triton Deployment and Service; set Deployed, Ready, the endpoint.

    Adds to ``plan`` (creates, patches, the repository write, a requeue while the rollout runs)
    and sets ``new``'s conditions and endpoint through ``condition``; without a winner, or when its
    pool is no longer configured, nothing is planned.
    """
    winner = new.winner
    if winner is None:
        condition(DEPLOYED, False, AWAITING_WINNER, "nothing to deploy until an optimization selects a winner")
        condition(READY, False, AWAITING_WINNER, "no model is served yet")
        return
    settings = obs.settings
    pool = settings.pool(winner.pool)
    if pool is None:
        condition(DEPLOYED, False, "PoolRemoved", f"the winner's pool {winner.pool!r} is no longer configured")
        return
    owner = Owner(obs.name, obs.namespace, obs.uid)
    serving = effective_serving(spec.serving, winner.overrides)
    if winner.version not in obs.repository_ready:
        repository = join_uri(settings.artifact_store, names.repository_key(obs.namespace, obs.name))
        plan.repository = RepositoryWrite(
            version=winner.version,
            pool=winner.pool,
            candidate=winner.name,
            report_uri=winner.report,
            repository_uri=repository,
            model_name=names.triton_model_name(obs.name),
            serving=serving.model_dump(mode="json"),
            serving_version=new.endpoint.version if new.endpoint else None,
        )
    replicas = spec.serving.replicas
    serves = _plan_triton(plan, obs, owner, serving, pool, winner.version, replicas)
    _report_rollout(plan, new, obs, owner, winner, serves, replicas, condition)


def _plan_triton(
    plan: Plan, obs: Observed, owner: Owner, serving: Serving, pool: Pool, version: int, replicas: int
) -> bool:
    """Plan the Triton Deployment and Service; returns whether the Deployment already serves ``version``."""
    settings = obs.settings
    dep = obs.deployment
    serves = dep is not None and _serves(dep, version, serving, pool.name)
    if dep is None:
        plan.create.append(triton_deployment(owner, serving, pool, settings, version))
    elif not serves:
        # A new version, serving config or pool: the pods restart anyway, so they get the
        # operator's current settings (Triton image, security, mounts) as well.
        desired = triton_deployment(owner, serving, pool, settings, version)
        body = {"metadata": desired["metadata"], "spec": desired["spec"]}
        # A merge patch merges maps: selector keys of the previous pool must be removed explicitly.
        selector = desired["spec"]["template"]["spec"].get("nodeSelector", {})
        stale = {key: None for key in dep.node_selector if key not in selector}
        if stale:
            body["spec"]["template"]["spec"]["nodeSelector"] = {**selector, **stale}
        plan.patch.append(Patch("apps/v1", "Deployment", desired["metadata"]["name"], body))
    elif dep.replicas != replicas:
        # Scaling adds or removes pods of the running template; it restarts none.
        plan.patch.append(Patch("apps/v1", "Deployment", names.server_name(obs.name), {"spec": {"replicas": replicas}}))
    # Otherwise the Deployment is left alone: a new operator (another Triton image, other settings)
    # must not restart what serves; its settings apply with the next version.
    if not obs.service:
        plan.create.append(triton_service(owner))
    return serves


def _report_rollout(
    plan: Plan,
    new: OptimizedModelStatus,
    obs: Observed,
    owner: Owner,
    winner: Winner,
    serves: bool,
    replicas: int,
    condition: SetCondition,
) -> None:
    """Deployed and Ready from the pods, the endpoint of the version that answers; requeue until rolled out."""
    dep = obs.deployment
    current = serves and dep is not None and dep.rolled_out and dep.replicas == replicas
    # Whether this version had rolled out and answered before this pass: losing pods then is no rollout.
    was_served = _rolled_out_before(new, winner)
    # Pods of the template that serves the winner, by the annotations the template gives them.
    fresh = [
        p
        for p in obs.server_pods
        if serves and dep is not None and (p.version, p.serving_config) == (dep.version, dep.serving_config)
    ]
    previous = [p for p in obs.server_pods if p not in fresh]
    fresh_ready = sum(p.ready for p in fresh)
    previous_ready = sum(p.ready for p in previous)
    # As `kubectl rollout status`, counted on the pods: every pod is of the new template and ready.
    rolled = current and fresh_ready >= replicas and not previous
    what = f"version {winner.version} ({winner.name} on {winner.pool})"
    served_before = max((p.version for p in previous if p.ready and p.version), default=None)
    keeps = f"; version {served_before} keeps serving" if previous_ready and served_before else ""
    problem = None if rolled else _new_pods_problem(fresh, dep if serves else None)
    lost = current and was_served and not rolled and not previous
    if rolled:
        condition(DEPLOYED, True, "RolledOut", f"{what}: {fresh_ready}/{replicas} replicas ready")
    elif lost:
        # Nothing rolls out: the Deployment replaces a deleted pod, the kubelet restarts a killed
        # Triton. Saying RollingOut (and phase Deploying) would announce a deploy that is not happening.
        condition(
            DEPLOYED,
            False,
            REPLICAS_UNAVAILABLE,
            f"{what} rolled out, but {fresh_ready}/{replicas} replicas are ready now ({_why_not_ready(fresh)}); "
            "Kubernetes restarts or replaces the pods, nothing to do unless this lasts",
        )
        plan.requeue_after = min(plan.requeue_after or POLL_DEPLOYING_S, POLL_DEPLOYING_S)
    elif current and problem is not None:
        # The new version's pods cannot run (no node, no image, a crash): the old pods keep serving
        # (maxUnavailable 0) and the endpoint keeps naming their version.
        condition(
            DEPLOYED,
            False,
            problem.reason,
            f"{what}: {fresh_ready}/{replicas} new pods ready; {problem.describe()}{keeps}",
        )
        plan.requeue_after = min(plan.requeue_after or POLL_DEPLOYING_S, POLL_DEPLOYING_S)
    elif current and dep is not None and dep.stalled:
        condition(DEPLOYED, False, "RolloutStalled", f"{what} did not become ready: {dep.stalled}{keeps}")
        plan.requeue_after = min(plan.requeue_after or POLL_DEPLOYING_S, POLL_DEPLOYING_S)
    else:
        condition(DEPLOYED, False, "RollingOut", f"{what}: {fresh_ready}/{replicas} replicas ready{keeps}")
        plan.requeue_after = min(plan.requeue_after or POLL_DEPLOYING_S, POLL_DEPLOYING_S)
    if fresh_ready + previous_ready > 0:
        if fresh_ready and not previous_ready:
            new.endpoint = endpoint(owner, winner.version)
        elif new.endpoint is None or (served_before and new.endpoint.version != served_before):
            # Both versions answer while the rollout runs: announce the one that served before.
            new.endpoint = endpoint(owner, served_before or winner.version)
        served = new.endpoint
        condition(READY, True, "Serving", f"model {served.model} version {served.version} at {served.http}")
    elif replicas == 0:
        new.endpoint = None
        condition(READY, False, "ScaledToZero", "spec.serving.replicas is 0")
    elif lost:
        condition(READY, False, "NotReady", f"no Triton pod of {what} is ready now: {_why_not_ready(fresh)}")
    else:
        why = f": {problem.describe()}" if problem is not None else ""
        condition(
            READY,
            False,
            "NotReady" if dep is not None else "Deploying",
            f"no Triton pod of {what} is ready yet{why}",
        )


def _rolled_out_before(new: OptimizedModelStatus, winner: Winner) -> bool:
    """Whether ``winner``'s version had rolled out (or lost pods since) and is the one the endpoint names.

    Read before this pass sets Deployed. A new winner, a retune or a first deploy has no such past:
    their rollouts report RollingOut.
    """
    deployed = new.condition(DEPLOYED)
    return (
        deployed is not None
        and (deployed.status == "True" or deployed.reason == REPLICAS_UNAVAILABLE)
        and new.endpoint is not None
        and new.endpoint.version == winner.version
    )


def _why_not_ready(pods: list[PodState]) -> str:
    """Each not-ready pod's problem or note, for a message."""
    reasons = [
        f"pod {p.name}: {p.problem.describe() if p.problem is not None else p.note or 'not ready'}"
        for p in sorted(pods, key=lambda p: p.name)
        if not p.ready
    ]
    return "; ".join(reasons) or "no pod yet"


def _serves(dep: DeploymentState, version: int, serving: Serving, pool: str) -> bool:
    """Whether the Deployment's pod template runs ``version`` with ``serving`` on ``pool``."""
    return (
        dep.version == version and dep.pool == pool and runs_serving_config(dep.serving_config, serving, dep.replicas)
    )


def _new_pods_problem(fresh: list[PodState], dep: DeploymentState | None) -> PodProblem | None:
    """Why the new template's pods do not serve: the first such pod's problem, or the ReplicaSet's."""
    for pod in sorted(fresh, key=lambda p: p.name):
        if not pod.ready and pod.problem is not None:
            return pod.problem
    return dep.problem if dep is not None else None
