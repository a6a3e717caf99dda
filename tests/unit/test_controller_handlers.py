"""What the I/O side hands to pure code and to kopf: which handlers run passes, how many at once, a failed write."""

from __future__ import annotations

import asyncio

import kopf

from honed.controller import handlers
from honed.controller.reconcile import repository_write_failed
from honed.controller.reconcile_data import Patch, Plan
from honed.controller.settings import HonedSettings
from tests.unit.test_reconcile import SETTINGS, observed


def test_the_daemon_runs_every_pass_and_kopf_runs_no_change_handler() -> None:
    """A change handler would repeat the daemon's pass and make kopf patch its diff-base and
    progress annotations after each, outside honed's rate limit; kopf keeps only its finalizer."""
    operator = handlers.Operator(HonedSettings(), login=lambda: None, write_repository=lambda *_: None)  # type: ignore[arg-type,return-value]
    registry = handlers.build_registry(operator)
    assert [h.reason for h in registry._changing.get_all_handlers()] == [kopf.Reason.DELETE]
    assert registry._watching.get_all_handlers() == []
    assert [h.fn.__name__ for h in registry._spawning.get_all_handlers()] == ["keep_reconciling"]
    # Nor does kopf keep a diff base: it would patch the resource after every change.
    settings = kopf.OperatorSettings()
    handlers.configure(settings, SETTINGS)
    body = kopf.Body({"metadata": {"name": "m", "annotations": {"a": "b"}}, "spec": {"x": 1}})
    patch = kopf.Patch()
    storage = settings.persistence.diffbase_storage
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch and storage.fetch(body=body) is None


async def test_at_most_max_concurrent_reconciles_passes_run_at_once() -> None:
    operator = handlers.Operator(
        HonedSettings(max_concurrent_reconciles=2),
        login=lambda: None,  # type: ignore[arg-type,return-value]
        write_repository=lambda *_: None,
    )
    running, most = 0, 0

    async def model(namespace: str, name: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    operator.model = model  # type: ignore[method-assign]
    results = await asyncio.gather(*(operator.run_pass("ns", f"m{i}") for i in range(10)))
    assert results == [None] * 10 and most == 2


def test_watches_time_out_so_a_dead_connection_is_noticed() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings, SETTINGS.model_copy(update={"watch_timeout_s": 120}))
    # An integer: the API server answers 400 to timeoutSeconds=120.0.
    assert settings.watching.server_timeout == 120 and isinstance(settings.watching.server_timeout, int)
    assert settings.watching.client_timeout is not None and settings.watching.client_timeout > 120.0
    assert settings.watching.connect_timeout is not None


def test_a_failed_repository_write_keeps_the_deployment_and_says_why() -> None:
    obs = observed()
    plan = Plan(
        create=[{"kind": "Deployment"}, {"kind": "Service"}],
        patch=[Patch("apps/v1", "Deployment", "om-triton", {}), Patch("v1", "Service", "om", {})],
        status={"phase": "Deploying"},
    )
    after = repository_write_failed(plan, obs, "version 2: no space left on device")
    assert [m["kind"] for m in after.create] == ["Service"]
    assert [p.kind for p in after.patch] == ["Service"]
    deployed = next(c for c in after.status["conditions"] if c["type"] == "Deployed")
    assert (deployed["status"], deployed["reason"]) == ("False", "RepositoryWriteFailed")
    assert "no space left" in deployed["message"] and after.status["phase"] == "Deploying"
    assert [(e.type, e.reason) for e in after.events] == [("Warning", "RepositoryWriteFailed")]
    assert plan.create[0]["kind"] == "Deployment"  # pure: the plan it was given is unchanged
