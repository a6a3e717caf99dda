"""Pure helpers for status: conditions with stable transition times, events, merge-patch diffs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from honed.api.status import OWN_CONDITIONS, Condition, ConditionStatus, OptimizedModelStatus
from honed.controller.reconcile_data import Event

# How reconcile's parts set a condition of the status being built: (type, true?, reason, message).
SetCondition = Callable[[str, bool, str, str], None]

# Reasons that mean something needs a person's attention: they become Warning events.
# Deployed and Ready until an optimization selects a winner.
AWAITING_WINNER = "AwaitingWinner"
WARNING_REASONS = frozenset(
    {
        "InvalidSpec",
        "UnknownPool",
        "PoolWithoutPrice",
        "NoBackendForPool",
        "ModelUnreachable",
        "AllPoolsFailed",
        "NoCandidateWithinDrop",
        "NoCandidateWithinBudget",
        "NoCandidates",
        "PoolFailed",
        "PoolRemoved",
        "NotReady",
        "RepositoryWriteFailed",
        "RolloutStalled",
        "ReplicasUnavailable",
        "FallbackFromSLO",
        # Pods that cannot run (observe.pod_problem): a node, an image, a Secret or memory is missing.
        "Unschedulable",
        "ImageUnavailable",
        "ContainerConfigError",
        "FailedCreate",
        "CrashLoopBackOff",
        "OOMKilled",
        # Jobs that failed for a reason of their own (observe.job_failure_reason).
        "DeadlineExceeded",
        "InvalidInput",
        "TimeBudgetExhausted",
    }
)


def seconds_between(start: str, end: str) -> float | None:
    """Seconds from one RFC 3339 time to another; None when either does not parse."""
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None


def load_status(raw: dict[str, Any] | None) -> OptimizedModelStatus:
    """The stored status; one that does not parse (hand-edited) restarts from empty."""
    try:
        return OptimizedModelStatus.model_validate(raw or {})
    except ValidationError:
        return OptimizedModelStatus()


def set_condition(
    status: OptimizedModelStatus,
    type_: str,
    value: bool | ConditionStatus,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int | None,
) -> None:
    """Set one condition; its lastTransitionTime moves only when its status changes."""
    state: ConditionStatus = ("True" if value else "False") if isinstance(value, bool) else value
    old = status.condition(type_)
    since = old.last_transition_time if old is not None and old.status == state else now
    fresh = Condition(
        type=type_,
        status=state,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in status.conditions if c.type != type_]
    status.conditions = sorted([*others, fresh], key=_condition_order)


def _condition_order(cond: Condition) -> tuple[int, str]:
    own = OWN_CONDITIONS.index(cond.type) if cond.type in OWN_CONDITIONS else len(OWN_CONDITIONS)
    return own, cond.type


def transition_events(old: OptimizedModelStatus, new: OptimizedModelStatus) -> list[Event]:
    """One event per condition whose status or reason changed, and one per phase change.

    A new resource's first status says less: its Deployed and Ready conditions start out waiting
    for a winner, and its first phase repeats what the Optimized condition's event says, so
    neither makes an event. A thousand new resources would otherwise post four Events each, most
    of the requests their first pass sends.
    """
    events: list[Event] = []
    for cond in new.conditions:
        if cond.type not in OWN_CONDITIONS:
            continue
        before = old.condition(cond.type)
        if before is not None and (before.status, before.reason) == (cond.status, cond.reason):
            continue
        if before is None and cond.reason == AWAITING_WINNER:
            continue
        warning = cond.reason in WARNING_REASONS
        events.append(Event("Warning" if warning else "Normal", cond.reason, f"{cond.type}: {cond.message}"))
    if new.phase != old.phase and new.phase is not None and (old.phase is not None or not events):
        events.append(
            Event(
                "Warning" if new.phase == "Failed" else "Normal",
                f"Phase{new.phase}",
                f"phase {old.phase or 'none'} -> {new.phase}",
            )
        )
    return events


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch turning ``old`` into ``new`` (``{}`` when equal; null removes keys)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub != {}:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    return patch
