"""What the I/O side hands to pure code and to kopf: a pass's outcome, a failed repository write."""

from __future__ import annotations

import kopf
import pytest

from honed.controller import handlers
from honed.controller.reconcile import reconcile, repository_write_failed
from honed.controller.reconcile_data import Patch, Plan
from tests.unit.test_reconcile import SETTINGS, SPEC, observed


def test_an_invalid_spec_is_a_permanent_error_after_the_pass_wrote_why() -> None:
    plan = reconcile({**SPEC, "search": {"batchSizes": [0]}}, observed())
    assert plan.status["phase"] == "Failed"  # the pass still writes the status
    with pytest.raises(kopf.PermanentError, match=r"spec\.search\.batchSizes\[0\]"):
        handlers.outcome(plan)


def test_a_valid_spec_and_a_gone_resource_finish_the_handler() -> None:
    assert reconcile(SPEC, observed()).invalid_spec is None
    handlers.outcome(reconcile(SPEC, observed()))
    handlers.outcome(None)


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
