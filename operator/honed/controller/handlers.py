"""kopf handlers: thin adapters that run one observe -> reconcile -> apply pass.

Create, update and resume run a pass at once, and so does a new ``honed.dev/reoptimize``
annotation; a per-resource daemon repeats it (sooner while Jobs run or a rollout is under way);
events of the Jobs and Deployments honed owns wake the owner's pass too. A lock per resource
keeps passes of one resource from overlapping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from honed.api.spec import GROUP, KIND, PLURAL, VERSION
from honed.artifacts import ArtifactStore
from honed.controller import feedback, metrics, names
from honed.controller.apply import RepositoryWriter, apply_plan, post_event
from honed.controller.kube import OPTIMIZED_MODELS, KubeClient
from honed.controller.observe import observe
from honed.controller.reconcile import reconcile
from honed.controller.state import Plan
from honed.settings import HonedSettings

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


class InvalidSpec(kopf.PermanentError):
    """The spec cannot be acted on; only an edit fixes it, so kopf must not retry the handler."""


def outcome(plan: Plan | None) -> None:
    """kopf's view of a finished pass: an invalid spec is permanent (the pass already wrote why)."""
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
class Operator:
    """The operator's long-lived parts: settings, the API client, the store, per-resource locks."""

    settings: HonedSettings
    login: Login
    write_repository: RepositoryWriter
    client: KubeClient = field(init=False)
    store: ArtifactStore = field(init=False)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.client = KubeClient(self.login)
        self.store = ArtifactStore(self.settings.artifact_store, pvc_mount_root=self.settings.pvc_mount_root)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """The resource's lock: passes and feedback writes of one resource never overlap."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    async def run_pass(self, namespace: str, name: str) -> Plan | None:
        """One level-based pass over the resource as it is now; None when it is gone or going."""
        async with self.lock(namespace, name):
            started = time.monotonic()
            try:
                # Re-read: the watch stream may lag behind the status this operator just wrote.
                body = await self.client.get(OPTIMIZED_MODELS, namespace, name)
                if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                    self._locks.pop((namespace, name), None)
                    return None
                observed = await observe(self.client, self.store, body, self.settings)
                plan = reconcile(body.get("spec"), observed)
                plan = await apply_plan(self.client, self.store, plan, observed, self.write_repository)
            except Exception:
                metrics.RECONCILES.labels(result="error").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            metrics.RECONCILES.labels(result="ok").inc()
            metrics.record_plan(plan, namespace, name)
            return plan

    async def feedback_pass(self, namespace: str, name: str) -> float | None:
        """One feedback evaluation; the seconds until the next one (None: the resource is gone).

        The policy decides in pure code; this writes its patch under the resource's lock, like a
        pass, and hands a serving change to ``run_pass``, the path every other trigger takes.
        """
        body = await self.client.get(OPTIMIZED_MODELS, namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        inputs = feedback.feedback_inputs(body, self.settings)
        if isinstance(inputs, str):
            log.debug("feedback for %s/%s waits: %s", namespace, name, inputs)
            return self.settings.reconcile_interval_s
        # Prometheus may take seconds to answer: outside the lock, so passes are not held up.
        evaluation, now = await feedback.observe_and_evaluate(self.settings, namespace, inputs)
        async with self.lock(namespace, name):
            # Status may have moved while Prometheus answered: patch against what is there now.
            body = await self.client.get(OPTIMIZED_MODELS, namespace, name) or body
            patch = feedback.feedback_patch(body, evaluation, now)
            if patch.annotations:
                annotate = {"metadata": {"annotations": patch.annotations}}
                await self.client.patch(OPTIMIZED_MODELS, namespace, name, annotate)
            if patch.status:
                await self.client.patch(
                    OPTIMIZED_MODELS, namespace, name, {"status": patch.status}, subresource="status"
                )
            ref = feedback.object_ref(body)
            for event in patch.events:
                await post_event(self.client, ref, event)
        log.info("feedback for %s/%s: %s", namespace, name, evaluation.decision.summary())
        if "serving" in patch.status:
            # Apply it now rather than at the next periodic pass; a failure here is retried by that pass.
            await self.run_pass(namespace, name)
        return inputs.slo.interval_s


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


def owner_name(body: Any) -> str | None:
    """The OptimizedModel owning a child, from its controller owner reference."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
            return str(ref.get("name"))
    return None


def reoptimize_requested(annotations: Any, status: Any, **_: Any) -> bool:
    """kopf filter: the honed.dev/reoptimize annotation asks for an optimization not started yet."""
    return names.reoptimize_pending(dict(annotations or {}), dict(status or {}))


def build_registry(operator: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    interval = operator.settings.reconcile_interval_s
    children = {names.MANAGED_BY: "honed"}

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return operator.login()

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        await operator.client.close()

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
    async def changed(name: str, namespace: str | None, **_: Any) -> None:
        try:
            plan = await operator.run_pass(namespace or "", name)
        except Exception as exc:
            raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=RETRY_DELAY_S) from exc
        outcome(plan)

    # kopf leaves every honed.dev/ annotation out of the diff on.update compares (its storage
    # prefix is honed.dev, and it ignores annotations under a prefix marked as a kopf storage's),
    # so a changed honed.dev/reoptimize waited for the daemon's next pass (up to the interval).
    # Any watch event while a request is not yet started runs a pass now; once the pass records
    # it in status.lastOptimization.request the filter is false and events pass by.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, when=reoptimize_requested)
    async def reoptimize(name: str, namespace: str | None, **_: Any) -> None:
        await operator.run_pass(namespace or "", name)

    # A pass cut short by a stop is harmless: the next operator's first pass redoes it.
    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, initial_delay=interval, cancellation_timeout=1.0)
    async def keep_reconciling(stopped: kopf.DaemonStopped, name: str, namespace: str | None, **_: Any) -> None:
        while not stopped:
            try:
                plan = await operator.run_pass(namespace or "", name)
            except Exception as exc:
                log.warning("reconcile of %s/%s failed: %s", namespace, name, exc)
                plan = None
            delay = min(plan.requeue_after or interval, interval) if plan is not None else interval
            await stopped.wait(delay)

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

    # kopf starts and stops it as spec.feedback.enabled changes.
    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        when=feedback.feedback_enabled,
        initial_delay=interval,
        cancellation_timeout=1.0,
    )
    async def watch_feedback(stopped: kopf.DaemonStopped, name: str, namespace: str | None, **_: Any) -> None:
        while not stopped:
            try:
                delay = await operator.feedback_pass(namespace or "", name)
            except Exception as exc:  # one failed evaluation must not end the loop
                log.warning("feedback for %s/%s failed: %s", namespace, name, exc)
                delay = interval
            if delay is None:
                return
            await stopped.wait(delay)

    @kopf.on.event("batch", "v1", "jobs", labels=children, registry=registry)
    @kopf.on.event("apps", "v1", "deployments", labels=children, registry=registry)
    async def child_changed(body: Any, namespace: str | None, type: str, **_: Any) -> None:
        owner = owner_name(body)
        # None is the initial listing and ADDED is mostly our own create: neither changes anything.
        if owner is not None and namespace and type in ("MODIFIED", "DELETED"):
            await operator.run_pass(namespace, owner)

    return registry
