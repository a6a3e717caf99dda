"""Kubernetes timestamps (``metav1.Time``): RFC 3339 in UTC to the second, like ``2026-05-01T12:00:00Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_timestamp(at: datetime | None = None) -> str:
    """``at`` (default: now) as Kubernetes writes times; a naive ``at`` is taken to be UTC."""
    moment = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: str | None) -> datetime | None:
    """The time in a Kubernetes timestamp (or any ISO 8601 one); None when missing or unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
