"""Fixtures of the end-to-end test: kmock and the operator (as in the integration tests) and real Triton."""

from tests.fixtures.triton import start_triton, triton_install
from tests.integration.operator.harness import api, cluster, start_operator

__all__ = ["api", "cluster", "start_operator", "start_triton", "triton_install"]
