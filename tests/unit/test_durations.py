"""One duration grammar: the function and the CRD's pattern accept the same strings."""

from __future__ import annotations

import re

import pytest
import yaml

from honed.api.crd import crd_manifest
from honed.api.durations import DURATION_PATTERN, parse_duration

SAMPLES = [
    "90s", "20m", "1h", "1h30m", "250ms", "1.5h", "0s", "0.5s", "1h1m1s1ms", "10m10m", "007s",
    "", "7", "45.0", "soon", "5 minutes", "-1m", "+1m", "1d", "1w", "1us", "1ns", "1H", "1.s", ".5s",
    "1h 30m", " 90s", "90s\n", "ms", "1e3s", "1_000s", "h1", "1hm",
]  # fmt: skip


def _parses(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def _crd_patterns() -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "pattern" in node and "0-9]+(" in str(node["pattern"]):
                found.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(yaml.safe_dump(crd_manifest())))
    return found


@pytest.mark.parametrize("text", SAMPLES)
def test_the_pattern_and_the_function_agree(text: str) -> None:
    assert bool(re.fullmatch(DURATION_PATTERN, text)) == _parses(text)


def test_the_crd_carries_the_function_pattern() -> None:
    assert _crd_patterns() == {DURATION_PATTERN}


def test_numbers_are_seconds_and_bools_are_not() -> None:
    assert parse_duration(45) == 45.0 and parse_duration(0.25) == 0.25
    with pytest.raises(ValueError, match="like 90s, 20m or 1h30m"):
        parse_duration(True)
