"""Durations, the one grammar honed reads everywhere (manifests, ``spec.feedback``, the CLI).

A duration is a number of seconds (a Python ``int`` or ``float``), or a string of one or more
``<number><unit>`` parts with units ``ms``, ``s``, ``m``, ``h``: ``250ms``, ``90s``, ``20m``,
``1.5h``, ``1h30m`` — Kubernetes' spelling, without signs, spaces or bare numbers in strings.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

# The same pattern goes into the CRD schema, so the API server rejects what this module rejects
# (tests/unit/test_durations.py checks both ways on samples).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DURATION_FORM = "write it like 90s, 20m or 1h30m"

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float) -> float:
    """Seconds in ``value`` (a number of seconds or a duration string); raises ValueError naming the form."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {DURATION_FORM}")
    if isinstance(value, int | float):
        return float(value)
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration; {DURATION_FORM}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(value))


def check_positive(seconds: float) -> float:
    """``seconds`` if above zero: a zero budget or interval asks for the impossible."""
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


# A positive duration read into seconds, for pydantic models whose fields take numbers or duration strings.
Seconds = Annotated[float, BeforeValidator(parse_duration), AfterValidator(check_positive)]


def format_duration(seconds: float) -> str:
    """The shortest ``XhYmZs`` form of whole ``seconds`` (for messages and defaults)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"
