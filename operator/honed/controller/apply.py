"""Carry out a Plan through the kube client (and the artifact store for the model repository)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from honed.api.timestamps import utc_timestamp
from honed.artifacts import ArtifactStore
from honed.controller import names
from honed.controller.conditions import merge_patch
from honed.controller.kube import EVENTS, OPTIMIZED_MODELS, KubeClient, resource_of
from honed.controller.reconcile import repository_write_failed
from honed.controller.reconcile_data import Event, ObjectRef, Observed, Plan, RepositoryWrite
from honed.controller.settings import HonedSettings
from honed.errors import HonedError

log = logging.getLogger(__name__)

RepositoryWriter = Callable[[ArtifactStore, RepositoryWrite, HonedSettings], None]


async def apply_plan(
    client: KubeClient,
    store: ArtifactStore,
    plan: Plan,
    obs: Observed,
    write_repository: RepositoryWriter,
) -> Plan:
    """Apply the plan in dependency order and return it as applied.

    A failed repository write changes the plan, through the pure ``repository_write_failed``; an
    exception leaves the rest for the next (level-based) pass.
    """
    failure = await write_plan_repository(store, plan, obs, write_repository)
    if failure is not None:
        log.warning("repository write failed for %s/%s: %s", obs.namespace, obs.name, failure)
        plan = repository_write_failed(plan, obs, failure)
    await apply_changes(client, plan, obs)
    return plan


async def write_plan_repository(
    store: ArtifactStore, plan: Plan, obs: Observed, write_repository: RepositoryWriter
) -> str | None:
    """Write the plan's model version to the repository; what went wrong, or None."""
    if plan.repository is None:
        return None
    try:
        # Blocking file and network I/O: keep the event loop (and other resources) responsive.
        await asyncio.to_thread(write_repository, store, plan.repository, obs.settings)
    except (HonedError, OSError) as exc:
        return f"version {plan.repository.version}: {exc}"
    return None


async def apply_changes(client: KubeClient, plan: Plan, obs: Observed) -> None:
    """The plan's objects, then the status, then the Events."""
    for manifest in plan.create:
        resource = resource_of(manifest["apiVersion"], manifest["kind"])
        created = await client.create(resource, obs.namespace, manifest)
        if created:
            log.info("created %s %s/%s", manifest["kind"], obs.namespace, manifest["metadata"]["name"])
    for patch in plan.patch:
        await client.patch(resource_of(patch.api_version, patch.kind), obs.namespace, patch.name, patch.body)
    for delete in plan.delete:
        if await client.delete(resource_of(delete.api_version, delete.kind), obs.namespace, delete.name):
            log.info("deleted %s %s/%s", delete.kind, obs.namespace, delete.name)
    status_patch = merge_patch(obs.status, plan.status)
    if status_patch:
        await client.patch(OPTIMIZED_MODELS, obs.namespace, obs.name, {"status": status_patch}, subresource="status")
    for event in plan.events:
        await post_event(client, obs.ref, event)


def event_manifest(ref: ObjectRef, event: Event, now: datetime | None = None) -> dict[str, Any]:
    """A core/v1 Event about the OptimizedModel ``ref``, its message cut to 1024 characters; ``now`` defaults to now."""
    stamp = utc_timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        # Events need unique names; Kubernetes' own convention is <object>.<hex>. The object's name
        # may take all 253 characters a name can have, so it is shortened to leave room.
        "metadata": {"name": f"{names.bounded(ref.name, 236)}.{secrets.token_hex(8)}", "namespace": ref.namespace},
        "involvedObject": {
            "apiVersion": OPTIMIZED_MODELS.api_version,
            "kind": OPTIMIZED_MODELS.kind,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": ref.uid,
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": "honed-operator"},
        "reportingComponent": "honed.dev/operator",
        "reportingInstance": "honed-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(client: KubeClient, ref: ObjectRef, event: Event) -> None:
    """Events are best effort: a lost event must never fail a reconcile."""
    try:
        await client.create(EVENTS, ref.namespace, event_manifest(ref, event))
    except Exception as exc:
        log.warning("could not post event %s for %s/%s: %s", event.reason, ref.namespace, ref.name, exc)
