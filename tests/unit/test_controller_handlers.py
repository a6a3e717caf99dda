"""How a pass's outcome reaches kopf: permanent for an invalid spec, watch timeouts from settings."""

from __future__ import annotations

import kopf
import pytest

from honed.controller import handlers
from honed.controller.reconcile import reconcile
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
    handlers.configure(settings, SETTINGS.model_copy(update={"watch_timeout_s": 120.0}))
    assert settings.watching.server_timeout == 120.0
    assert settings.watching.client_timeout is not None and settings.watching.client_timeout > 120.0
    assert settings.watching.connect_timeout is not None
