"""The watch cache against a real API server: it lists and follows only what honed owns, sees the
operator's own writes at once, names the owner of a change, and lets passes run without a request."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from honed.controller import handlers, names, operator_metrics
from honed.controller.cache import Cache
from honed.controller.kube import CONFIGMAPS, JOBS, OPTIMIZED_MODELS, KubeClient
from honed.controller.settings import HonedSettings
from honed.controller.stored_repository import write_repository
from tests.integration.operator.harness import Login, eventually, manifest

pytestmark = pytest.mark.slow


def configmap(name: str, *, owned: bool, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owned:
        meta["labels"] = names.owner_labels(owner["metadata"]["name"] if owner else "nobody")
    if owner is not None:
        ref = {"apiVersion": OPTIMIZED_MODELS.api_version, "kind": "OptimizedModel"}
        meta["ownerReferences"] = [{**ref, "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}


def reads() -> float:
    """GETs and LISTs the operator's clients sent so far (watches not counted)."""
    total = 0.0
    for family in operator_metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "honed_api_requests_total" and sample.labels["verb"] in ("get", "list"):
                total += sample.value
    return total


def requests() -> float:
    return sum(
        sample.value
        for family in operator_metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.name == "honed_api_requests_total" and sample.labels["verb"] != "watch"
    )


async def test_the_cache_lists_then_follows_only_what_honed_owns(api: KubeClient, namespace: str, login: Login) -> None:
    model = {**manifest("m", {"model": {"uri": "file:///nowhere"}, "targets": [{"pool": "cpu"}]})}
    await api.create(OPTIMIZED_MODELS, namespace, model)
    owner = await api.get(OPTIMIZED_MODELS, namespace, "m")
    assert owner is not None
    await api.create(CONFIGMAPS, namespace, configmap("before", owned=True))
    await api.create(CONFIGMAPS, namespace, configmap("not-ours", owned=False))

    changes: list[tuple[str, str]] = []
    client = KubeClient(login)
    cache = Cache(client, [namespace], watch_timeout_s=30, on_change=lambda ns, name: changes.append((ns, name)))
    await cache.start()
    try:
        assert cache.synced
        assert cache.get(CONFIGMAPS, namespace, "before") is not None
        assert cache.get(CONFIGMAPS, namespace, "not-ours") is None  # the label selector is the server's
        assert cache.get(OPTIMIZED_MODELS, namespace, "m") is not None

        # Another client's object arrives through the watch, and its owner is named.
        await api.create(CONFIGMAPS, namespace, configmap("child", owned=True, owner=owner))
        await eventually(lambda: _async(cache.get(CONFIGMAPS, namespace, "child")), what="the watched ConfigMap")
        await eventually(lambda: _async((namespace, "m") in changes), what="the owner's change")

        # The cache's own client's write is there when the call returns, before any watch event.
        await client.create(CONFIGMAPS, namespace, configmap("mine", owned=True, owner=owner))
        assert cache.get(CONFIGMAPS, namespace, "mine") is not None
        assert [c["metadata"]["name"] for c in cache.list(CONFIGMAPS, namespace, names.owner_labels("m"))] in (
            ["child", "mine"],
            ["mine", "child"],
        )

        await api.delete(CONFIGMAPS, namespace, "child")
        await eventually(lambda: _async(cache.get(CONFIGMAPS, namespace, "child") is None), what="the deletion")
    finally:
        cache.stop()
        await client.close()
    # Stopping interrupts the blocked watch reads: no thread waits for the server's watch timeout.
    await asyncio.sleep(2)
    assert not [t for t in threading.enumerate() if t.name.startswith("honed-watch-") and namespace in t.name]


async def _async(value: Any) -> Any:
    return value


async def test_passes_read_memory_and_only_writes_reach_the_api_server(
    api: KubeClient, namespace: str, login: Login, settings: HonedSettings, tmp_path: Path
) -> None:
    uri = tmp_path / "model.onnx"
    uri.write_bytes(b"not read by the operator")
    await api.create(
        OPTIMIZED_MODELS, namespace, manifest("m", {"model": {"uri": f"file://{uri}"}, "targets": [{"pool": "cpu"}]})
    )
    operator = handlers.Operator(settings, login, write_repository, namespaces=[namespace])
    await operator.cache.start()
    try:
        started, read_before = requests(), reads()
        plan = await operator.run_pass(namespace, "m")
        assert plan is not None and [m["kind"] for m in plan.create] == ["ConfigMap", "Job"]
        # Its writes (ConfigMap, Job, status, Events) and no read at all.
        assert requests() - started >= 3 and reads() == read_before
        job = names.job_name("m", "cpu", plan.status["lastOptimization"]["id"])
        await eventually(lambda: _async(operator.cache.list(JOBS, namespace, names.owner_labels("m"))), what="the Job")
        # The Job controller answers (the Job's status, its pod): passes write what that changes...
        for _ in range(10):
            before = requests()
            await operator.run_pass(namespace, "m")
            if requests() == before:
                break
            await asyncio.sleep(0.5)
        # ...and once nothing changes, passes cost no request at all.
        before = requests()
        for _ in range(5):
            again = await operator.run_pass(namespace, "m")
            assert again is not None and again.create == [] and again.patch == []
        assert requests() == before, f"idle passes sent {requests() - before} requests"
        assert operator.cache.get(JOBS, namespace, job) is not None
    finally:
        operator.cache.stop()
        await operator.client.close()
