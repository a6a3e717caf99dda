"""Fixtures shared by the test suites; each lives in tests/fixtures/ next to what it starts."""

pytest_plugins = [
    "tests.fixtures.triton",
    "tests.fixtures.prometheus",
    "tests.fixtures.feedback",
    "tests.fixtures.k8s",
]
