"""Kubernetes timestamps written and read in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from honed.api.timestamps import parse_timestamp, utc_timestamp


def test_utc_timestamps_are_rfc3339_to_the_second() -> None:
    at = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert utc_timestamp(at) == "2026-05-01T12:00:00Z"
    assert utc_timestamp(at.astimezone(timezone(timedelta(hours=2)))) == "2026-05-01T12:00:00Z"
    assert utc_timestamp(at.replace(tzinfo=None)) == "2026-05-01T12:00:00Z"
    assert utc_timestamp().endswith("Z")


def test_timestamps_read_back() -> None:
    assert parse_timestamp("2026-05-01T12:00:00Z") == datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert parse_timestamp(None) is None and parse_timestamp("") is None and parse_timestamp("yesterday") is None
