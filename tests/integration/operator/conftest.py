"""Fixtures of the operator's kmock tests (the harness itself is in operator_harness.py)."""

from tests.integration.operator.harness import api, cluster, settings, start_operator

__all__ = ["api", "cluster", "settings", "start_operator"]
