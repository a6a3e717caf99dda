"""Fixtures of the operator's tests against envtest (the harness itself is in harness.py)."""

from tests.integration.operator.harness import api, login, settings, start_operator

__all__ = ["api", "login", "settings", "start_operator"]
