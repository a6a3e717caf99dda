"""Fixtures of the end-to-end test: envtest and the operator (as in the integration tests) and real Triton."""

from tests.fixtures.triton import start_triton, triton_install
from tests.integration.operator.harness import api, login, start_operator

__all__ = ["api", "login", "start_operator", "start_triton", "triton_install"]
