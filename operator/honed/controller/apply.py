"""Carry out a Plan through the kube client (and the artifact store for the model repository)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from honed.api.status import DEPLOYED
from honed.api.timestamps import utc_timestamp
from honed.artifacts import ArtifactStore
from honed.controller import names
from honed.controller.conditions import load_status, merge_patch, set_condition
from honed.controller.kube import EVENTS, OPTIMIZED_MODELS, KubeClient, resource_of
from honed.controller.state import Event, Observed, Plan, RepositoryWrite
from honed.errors import HonedError
from honed.settings import HonedSettings

log = logging.getLogger(__name__)

RepositoryWriter = Callable[[ArtifactStore, RepositoryWrite, HonedSettings], None]


async def apply_plan(
    client: KubeClient,
    store: ArtifactStore,
    plan: Plan,
    obs: Observed,
    write_repository: RepositoryWriter,
) -> None:
    """Apply in dependency order; an exception leaves the rest for the next (level-based) pass."""
    if plan.repository is not None:
        try:
            # Blocking file and network I/O: keep the event loop (and other resources) responsive.
            await asyncio.to_thread(write_repository, store, plan.repository, obs.settings)
        except (HonedError, OSError) as exc:
            _repository_failed(plan, obs, f"version {plan.repository.version}: {exc}")
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
        await post_event(client, obs, event)


def _repository_failed(plan: Plan, obs: Observed, message: str) -> None:
    """Keep the Deployment as it is (the previous version keeps serving) and say why in status."""
    plan.create = [m for m in plan.create if m["kind"] != "Deployment"]
    plan.patch = [p for p in plan.patch if p.kind != "Deployment"]
    status = load_status(plan.status)
    set_condition(status, DEPLOYED, False, "RepositoryWriteFailed", message, now=obs.now, generation=obs.generation)
    plan.status = status.to_wire()
    plan.events.append(Event("Warning", "RepositoryWriteFailed", message))
    log.warning("repository write failed for %s/%s: %s", obs.namespace, obs.name, message)


def event_manifest(obs: Observed, event: Event, now: datetime | None = None) -> dict[str, Any]:
    stamp = utc_timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        # Events need unique names; Kubernetes' own convention is <object>.<hex>. The object's name
        # may take all 253 characters a name can have, so it is shortened to leave room.
        "metadata": {"name": f"{names.bounded(obs.name, 236)}.{secrets.token_hex(8)}", "namespace": obs.namespace},
        "involvedObject": {
            "apiVersion": OPTIMIZED_MODELS.api_version,
            "kind": OPTIMIZED_MODELS.kind,
            "name": obs.name,
            "namespace": obs.namespace,
            "uid": obs.uid,
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


async def post_event(client: KubeClient, obs: Observed, event: Event) -> None:
    """Events are best effort: a lost event must never fail a reconcile."""
    try:
        await client.create(EVENTS, obs.namespace, event_manifest(obs, event))
    except Exception as exc:
        log.warning("could not post event %s for %s/%s: %s", event.reason, obs.namespace, obs.name, exc)
