"""Kubernetes-style durations (``90s``, ``20m``, ``1h30m``) as written in the OptimizedModel spec."""

from __future__ import annotations

import re

# The same pattern goes into the CRD schema, so the API server rejects what this module rejects.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError naming the accepted form."""
    if not re.fullmatch(DURATION_PATTERN, text.strip()):
        raise ValueError(f"{text!r} is not a duration; write it like 90s, 20m or 1h30m")
    return sum(float(value) * _UNIT_SECONDS[unit] for value, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest ``XhYmZs`` form of whole ``seconds`` (for messages and defaults)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"
