"""kopf handlers: thin adapters that run one observe -> reconcile -> apply pass.

Create, update and resume run a pass at once, and so does a new ``honed.dev/reoptimize``
annotation. A per-resource daemon runs the passes nothing else starts: when a child changes (the
watch cache says so), when a wait the plan scheduled ends (``requeue_after``: a rollout, a pod's
pending timeout), and at the resync interval. Passes read the cache, so only their writes reach
the API server. A lock per resource keeps passes of one resource from overlapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from honed.api.spec import GROUP, PLURAL, VERSION
from honed.artifacts import ArtifactStore
from honed.controller import feedback_loop, names, operator_metrics
from honed.controller.apply import RepositoryWriter, apply_plan, post_event
from honed.controller.cache import Cache
from honed.controller.kube import OPTIMIZED_MODELS, KubeClient
from honed.controller.observe import observe
from honed.controller.reconcile import reconcile
from honed.controller.reconcile_data import Plan
from honed.controller.settings import HonedSettings
from honed.feedback import Evaluation

log = logging.getLogger(__name__)

Login = Callable[[], kopf.ConnectionInfo]

# kopf's retry policy for the change handlers. A pass that failed (an API conflict, a store that
# did not answer) is retried after RETRY_DELAY_S; kopf gives up after HANDLER_RETRIES tries or
# HANDLER_TIMEOUT_S, which loses nothing: the daemon's periodic pass keeps reconciling.
RETRY_DELAY_S = 10.0
HANDLER_RETRIES = 10
HANDLER_TIMEOUT_S = 600.0
# Deleting the store's files of a deleted resource: after these kopf lets the resource go.
DELETE_RETRIES = 30
DELETE_TIMEOUT_S = 900.0
# The client waits this much longer than the server's watch timeout before it gives up on a watch.
WATCH_CLIENT_GRACE_S = 60.0
WATCH_CONNECT_TIMEOUT_S = 30.0
# A child's change waits this long for the ones that come with it (a Job and its pod, a rollout's
# pods), so that a burst of events makes one pass.
CHANGE_SETTLE_S = 0.2
# How often feedback looks again at a resource with nothing to judge yet (no version served).
FEEDBACK_IDLE_S = 30.0
# How often the feedback loop checks whose round has come; rounds themselves follow the intervals.
FEEDBACK_TICK_S = 5.0

Key = tuple[str, str]  # (namespace, name) of an OptimizedModel


class InvalidSpec(kopf.PermanentError):
    """The spec cannot be acted on; only an edit fixes it, so kopf must not retry the handler."""


def outcome(plan: Plan | None) -> None:
    """Raise what kopf must make of a finished pass: an invalid spec is permanent (the pass already wrote why)."""
    if plan is not None and plan.invalid_spec is not None:
        raise InvalidSpec(plan.invalid_spec)


def default_login() -> kopf.ConnectionInfo:
    """In a pod: the service account; elsewhere: the kubeconfig, both read by the kubernetes client.

    kopf's documented piggybacking on that client (``login_via_client``): it understands every
    kubeconfig the client does (exec plugins, auth providers) and, in a pod, reaches the API
    server at KUBERNETES_SERVICE_HOST rather than by a DNS name.
    """
    info = kopf.login_via_client(logger=log, settings=kopf.OperatorSettings())
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig found")
    return info


@dataclass
class Schedule:
    """When a resource's daemon runs its next pass: at ``due`` (monotonic), or at once when kicked."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    due: float = math.inf
    kicked: bool = False


def _newer(candidate: dict[str, Any], held: dict[str, Any] | None) -> bool:
    if held is None:
        return True
    try:
        return int(candidate["metadata"]["resourceVersion"]) > int(held["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


@dataclass
class Operator:
    """The operator's long-lived parts, shared by every handler.

    Settings, the API client, the watch cache, the store, per-resource locks and schedules.
    ``namespaces`` is the operator's scope (None: all).
    """

    settings: HonedSettings
    login: Login
    write_repository: RepositoryWriter
    namespaces: Sequence[str] | None = None
    client: KubeClient = field(init=False)
    cache: Cache = field(init=False)
    store: ArtifactStore = field(init=False)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict, init=False)
    _schedules: dict[tuple[str, str], Schedule] = field(default_factory=dict, init=False)
    _feedback_at: dict[tuple[str, str], float] = field(default_factory=dict, init=False)  # epoch s
    feedback_task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        """Create the client, cache and store from the settings; nothing talks to the API server yet."""
        self.client = KubeClient(self.login, qps=self.settings.api_qps, burst=self.settings.api_burst)
        self.cache = Cache(
            self.client, self.namespaces, watch_timeout_s=self.settings.watch_timeout_s, on_change=self.kick
        )
        self.store = ArtifactStore(self.settings.artifact_store, pvc_mount_root=self.settings.pvc_mount_root)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """The resource's lock: passes and feedback writes of one resource never overlap."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def schedule(self, namespace: str, name: str) -> Schedule:
        """The resource's schedule, created (nothing due) on first use."""
        return self._schedules.setdefault((namespace, name), Schedule())

    def kick(self, namespace: str, name: str) -> None:
        """Something the resource owns changed: its daemon runs a pass now."""
        plan = self.schedule(namespace, name)
        plan.kicked = True
        plan.wake.set()

    def _reschedule(self, namespace: str, name: str, plan: Plan | None) -> None:
        wait = self.settings.resync_interval_s
        if plan is not None and plan.requeue_after is not None:
            wait = min(wait, plan.requeue_after)
        schedule = self.schedule(namespace, name)
        schedule.due = time.monotonic() + wait
        schedule.wake.set()  # the daemon may be waiting for a later time

    async def next_pass(self, namespace: str, name: str) -> None:
        """Wait until the resource's next pass is due or something it owns changed.

        Plain asyncio waits: kopf cancels the daemon when it stops (its own time-limited
        ``stopped.wait`` leaves a task behind when cancelled).
        """
        schedule = self.schedule(namespace, name)
        if schedule.due == math.inf:
            schedule.due = time.monotonic() + self.settings.resync_interval_s
        while True:
            if schedule.kicked:
                await asyncio.sleep(CHANGE_SETTLE_S)
                schedule.kicked = False
                return
            left = schedule.due - time.monotonic()
            if left <= 0:
                return
            schedule.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(schedule.wake.wait(), left)

    async def model(self, namespace: str, name: str, seen: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The resource as the cache has it, or as kopf just handed it (``seen``) when that is newer.

        A GET only when the cache has not seen it yet (kopf's stream can be ahead of the cache's)
        or has not started (a feedback pass run on its own); None when the resource is gone.
        """
        body = self.cache.get(OPTIMIZED_MODELS, namespace, name) if self.cache.synced else None
        if seen is not None and _newer(seen, body):
            self.cache.remember(OPTIMIZED_MODELS, seen)
            body = seen
        if body is None:
            body = await self.client.get(OPTIMIZED_MODELS, namespace, name)
            if body is not None:
                self.cache.remember(OPTIMIZED_MODELS, body)
        return body

    def forget(self, namespace: str, name: str) -> None:
        """Drop a gone resource's lock and schedule."""
        self._locks.pop((namespace, name), None)
        self._schedules.pop((namespace, name), None)

    async def run_pass(self, namespace: str, name: str, seen: dict[str, Any] | None = None) -> Plan | None:
        """One level-based pass over the resource as it is now; None when it is gone or going."""
        async with self.lock(namespace, name):
            started = time.monotonic()
            try:
                body = await self.model(namespace, name, seen)
                if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                    self.forget(namespace, name)
                    return None
                observed = await observe(self.cache, self.store, body, self.settings)
                plan = reconcile(body.get("spec"), observed)
                plan = await apply_plan(self.client, self.store, plan, observed, self.write_repository)
            except Exception:
                operator_metrics.RECONCILES.labels(result="error").inc()
                raise
            finally:
                operator_metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            operator_metrics.RECONCILES.labels(result="ok").inc()
            operator_metrics.record_plan(plan, namespace, name)
            self._reschedule(namespace, name, plan)
            return plan

    async def feedback_pass(self, namespace: str, name: str) -> float | None:
        """One resource's feedback evaluation now; the seconds until its next (None: it is gone)."""
        return (await self.judge([(namespace, name)]))[(namespace, name)]

    async def judge(self, keys: Sequence[Key]) -> dict[Key, float | None]:
        """Evaluate these resources' feedback together, with one set of Prometheus queries.

        Returns, per resource, the seconds until its next evaluation; None when it is gone.
        The policy decides in pure code; each patch is written under the resource's lock, like a
        pass, and a serving change is handed to ``run_pass``, the path every other trigger takes.
        """
        waits: dict[Key, float | None] = {}
        bodies: dict[Key, dict[str, Any]] = {}
        due: dict[Key, feedback_loop.FeedbackInputs] = {}
        for key in keys:
            body = await self.model(*key)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                waits[key] = None
                continue
            inputs = feedback_loop.feedback_inputs(body, self.settings)
            if isinstance(inputs, str):
                log.debug("feedback for %s/%s waits: %s", *key, inputs)
                waits[key] = FEEDBACK_IDLE_S
                continue
            bodies[key], due[key] = body, inputs
        # Prometheus may take seconds to answer: outside the locks, so passes are not held up.
        judged = await feedback_loop.observe_and_evaluate(self.settings, due) if due else {}
        for key, (evaluation, now) in judged.items():
            waits[key] = due[key].slo.interval_s
            try:
                await self._write_feedback(key, bodies[key], evaluation, now)
            except Exception as exc:  # one resource's failed write must not cost the others theirs
                log.warning("feedback for %s/%s failed: %s", *key, exc)
        return waits

    async def _write_feedback(self, key: Key, body: dict[str, Any], evaluation: Evaluation, now: datetime) -> None:
        namespace, name = key
        async with self.lock(namespace, name):
            # Status may have moved while Prometheus answered: patch against what is there now.
            body = await self.model(namespace, name) or body
            patch = feedback_loop.feedback_patch(body, evaluation, now)
            if patch.annotations:
                annotate = {"metadata": {"annotations": patch.annotations}}
                await self.client.patch(OPTIMIZED_MODELS, namespace, name, annotate)
            if patch.status:
                await self.client.patch(
                    OPTIMIZED_MODELS, namespace, name, {"status": patch.status}, subresource="status"
                )
            ref = feedback_loop.object_ref(body)
            for event in patch.events:
                await post_event(self.client, ref, event)
        log.info("feedback for %s/%s: %s", namespace, name, evaluation.decision.summary())
        if "serving" in patch.status:
            # Apply it now rather than at the next pass; a failure here is retried by that pass.
            await self.run_pass(namespace, name)

    async def feedback_rounds(self) -> None:
        """The operator's feedback loop: each round judges the models whose interval ended then.

        Rounds fall on multiples of each model's interval (``feedback_loop.next_round``), so all models
        with one interval are judged, and their metrics queried, together.
        """
        while True:
            now = time.time()
            due: list[Key] = []
            for body in self.cache.all(OPTIMIZED_MODELS):
                meta, spec = body.get("metadata") or {}, body.get("spec") or {}
                key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
                interval = feedback_loop.feedback_interval(spec)
                if interval is None:
                    self._feedback_at.pop(key, None)
                    continue
                at = self._feedback_at.setdefault(key, feedback_loop.next_round(now, interval))
                if now >= at:
                    due.append(key)
                    self._feedback_at[key] = feedback_loop.next_round(now, interval)
            if due:
                try:
                    await self.judge(due)
                except Exception as exc:  # Prometheus, a bug: the next round tries again
                    log.warning("feedback round of %d models failed: %s", len(due), exc)
            await asyncio.sleep(FEEDBACK_TICK_S)


def configure(settings: kopf.OperatorSettings, honed: HonedSettings) -> None:
    """Keep kopf's bookkeeping under honed.dev and out of status (the CRD schema prunes it)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="honed.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="honed.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "honed.dev/finalizer"
    # honed posts its own Events at status transitions; kopf's per-handler ones would be noise.
    settings.posting.enabled = False
    settings.execution.max_workers = 4
    # Unset, kopf waits on a watch as long as the socket lives: behind a load balancer that
    # dropped the connection silently no event would ever arrive again. The server ends each watch
    # after server_timeout and kopf re-lists; a client that heard nothing for a minute more gives up.
    settings.watching.server_timeout = honed.watch_timeout_s
    settings.watching.client_timeout = honed.watch_timeout_s + WATCH_CLIENT_GRACE_S
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT_S


def reoptimize_requested(annotations: Any, status: Any, **_: Any) -> bool:
    """Whether the honed.dev/reoptimize annotation asks for an optimization not started yet (a kopf filter)."""
    return names.reoptimize_pending(dict(annotations or {}), dict(status or {}))


def build_registry(operator: Operator) -> kopf.OperatorRegistry:
    """The kopf registry of every honed handler, bound to ``operator``; ``kopf.operator`` runs it."""
    registry = kopf.OperatorRegistry()
    _register_lifecycle(registry, operator)
    _register_passes(registry, operator)
    _register_deletion(registry, operator)
    return registry


def _register_lifecycle(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Login, and the cache and feedback loop that live as long as the operator."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return operator.login()

    # kopf starts its handlers after the startup ones: no pass runs before the cache is complete.
    @kopf.on.startup(registry=registry)
    async def fill_cache(**_: Any) -> None:
        await operator.cache.start()
        if operator.settings.prometheus_url:
            operator.feedback_task = asyncio.create_task(operator.feedback_rounds(), name="honed-feedback")

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        if operator.feedback_task is not None:
            operator.feedback_task.cancel()
        operator.cache.stop()
        await operator.client.close()


def _register_passes(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """What runs a pass: a change to the resource, a reoptimize request, and the per-resource daemon."""
    # Waiting (for Jobs, a rollout) is the daemon's job, on the plan's requeue_after; these
    # handlers only make a change take effect at once, so they retry failures, not waits.
    retrying: dict[str, Any] = {
        "registry": registry,
        "backoff": RETRY_DELAY_S,
        "retries": HANDLER_RETRIES,
        "timeout": HANDLER_TIMEOUT_S,
    }

    @kopf.on.create(GROUP, VERSION, PLURAL, **retrying)
    @kopf.on.update(GROUP, VERSION, PLURAL, **retrying)
    @kopf.on.resume(GROUP, VERSION, PLURAL, **retrying)
    async def changed(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
        try:
            plan = await operator.run_pass(namespace or "", name, dict(body))
        except Exception as exc:
            raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=RETRY_DELAY_S) from exc
        outcome(plan)

    # kopf leaves every honed.dev/ annotation out of the diff on.update compares (its storage
    # prefix is honed.dev, and it ignores annotations under a prefix marked as a kopf storage's),
    # so a changed honed.dev/reoptimize waited for the daemon's next pass (up to the interval).
    # Any watch event while a request is not yet started runs a pass now; once the pass records
    # it in status.lastOptimization.request the filter is false and events pass by.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, when=reoptimize_requested)
    async def reoptimize(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
        await operator.run_pass(namespace or "", name, dict(body))

    # A pass cut short by a stop is harmless: the next operator's first pass redoes it.
    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=0.0)
    async def keep_reconciling(stopped: kopf.DaemonStopped, name: str, namespace: str | None, **_: Any) -> None:
        namespace = namespace or ""
        while not stopped:
            await operator.next_pass(namespace, name)
            try:
                await operator.run_pass(namespace, name)
            except Exception as exc:
                log.warning("reconcile of %s/%s failed (again in %.0f s): %s", namespace, name, RETRY_DELAY_S, exc)
                operator.schedule(namespace, name).due = time.monotonic() + RETRY_DELAY_S


def _register_deletion(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """The finalizer's handler: a deleted resource's files leave the artifact store."""

    # kopf keeps its finalizer on every resource while this handler exists: the store's reports,
    # artifacts and model repository of a deleted resource go with it (children go through owner
    # references). A store that stays unreachable must not block deletion forever: after the
    # retries kopf gives up, lets the resource go, and the log names what is left behind.
    @kopf.on.delete(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        backoff=RETRY_DELAY_S,
        retries=DELETE_RETRIES,
        timeout=DELETE_TIMEOUT_S,
    )
    async def deleted(name: str, namespace: str | None, retry: int, **_: Any) -> None:
        key = names.resource_key(namespace or "", name)
        try:
            await asyncio.to_thread(operator.store.delete, key)
        except Exception as exc:
            log.warning("could not delete %s (try %d): %s", operator.store.url(key), retry + 1, exc)
            raise kopf.TemporaryError(f"store unreachable: {exc}", delay=RETRY_DELAY_S) from exc
        log.info("deleted %s with %s/%s", operator.store.url(key), namespace, name)
