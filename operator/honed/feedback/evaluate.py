"""The entry the operator's feedback timer calls: observation in, everything to record out.

``evaluate`` is pure. The timer (controller) fetches the observation with
``PrometheusClient.window``, calls ``evaluate``, then: writes ``state`` to ``status.feedback``,
sets ``conditions`` (adding lastTransitionTime where the status changed), posts ``events``, and
applies ``decision`` (Retune / Reoptimize / Fallback; Keep needs nothing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from honed.api.spec import Feedback
from honed.feedback.decisions import Decision, Keep, Number
from honed.feedback.judge import Verdict
from honed.feedback.policy import decide
from honed.feedback.policy_inputs import DecisionRecord, Deployment, FeedbackState, Option
from honed.feedback.window import MetricsUnavailable, MetricWindow, Observation

EVENT_MESSAGE_LIMIT = 1000  # Kubernetes caps Event messages at 1 KiB


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Condition(_Camel):
    """A condition the feedback loop owns; the controller adds lastTransitionTime when it is written."""

    type: Literal["SLOMet", "MetricsUnavailable"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


class Event(_Camel):
    """A Kubernetes Event to post on the OptimizedModel; ``message`` is already cut to the 1 KiB limit."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


class Evaluation(_Camel):
    """Everything one evaluation asks the controller to record and apply (see the module docstring)."""

    decision: Decision
    state: FeedbackState
    conditions: list[Condition]
    events: list[Event]


def _numbers_text(numbers: dict[str, Number]) -> str:
    return ", ".join(f"{k}={v}" for k, v in numbers.items() if v is not None)


def _event_message(text: str, numbers: dict[str, Number]) -> str:
    message = f"{text} [{_numbers_text(numbers)}]" if numbers else text
    return message[:EVENT_MESSAGE_LIMIT]


def _record(decision: Decision, now: datetime) -> DecisionRecord:
    return DecisionRecord(
        action=decision.action,
        reason=decision.reason,
        message=decision.summary(),
        at=now,
        numbers=decision.numbers,
    )


def _unavailable(observation: MetricsUnavailable, state: FeedbackState, now: datetime) -> Evaluation:
    no_series = "has no Triton series" in observation.reason
    decision = Keep(reason=f"no metrics, serving continues unchanged: {observation.reason}")
    events = []
    if state.metrics_available is not False:
        events.append(Event(type="Warning", reason="MetricsUnavailable", message=observation.reason))
    return Evaluation(
        decision=decision,
        state=state.model_copy(update={"metrics_available": False, "last_decision": _record(decision, now)}),
        conditions=[
            Condition(
                type="MetricsUnavailable",
                status="True",
                reason="NoTritonSeries" if no_series else "PrometheusUnreachable",
                message=observation.reason,
            ),
            Condition(type="SLOMet", status="Unknown", reason="MetricsUnavailable", message=observation.reason),
        ],
        events=events,
    )


def _slo_events(verdict: Verdict, before: bool | None) -> list[Event]:
    if verdict.status == "False" and before is not False:
        return [Event(type="Warning", reason="SLOViolated", message=verdict.message)]
    if verdict.status == "True" and before is False:
        return [Event(type="Normal", reason="SLORestored", message=verdict.message)]
    return []


def evaluate(
    observation: Observation,
    slo: Feedback,
    deployment: Deployment,
    options: list[Option],
    state: FeedbackState,
    now: datetime,
) -> Evaluation:
    """Judge one observation and decide; see the module docstring for what the caller applies."""
    if isinstance(observation, MetricsUnavailable):
        return _unavailable(observation, state, now)
    assert isinstance(observation, MetricWindow)
    result = decide(observation, slo, deployment, options, state, now)
    decision, verdict = result.decision, result.verdict
    events: list[Event] = []
    if state.metrics_available is False:
        events.append(Event(type="Normal", reason="MetricsAvailable", message="Prometheus answers again"))
    events += _slo_events(verdict, state.slo_met)
    if not isinstance(decision, Keep):
        events.append(
            Event(
                type="Normal",
                reason=decision.action,
                message=_event_message(decision.summary(), decision.numbers),
            )
        )
    slo_met = {"True": True, "False": False}.get(verdict.status, state.slo_met)
    new_state = result.state.model_copy(
        update={"metrics_available": True, "slo_met": slo_met, "last_decision": _record(decision, now)}
    )
    return Evaluation(
        decision=decision,
        state=new_state,
        conditions=[
            Condition(
                type="MetricsUnavailable",
                status="False",
                reason="MetricsAvailable",
                message="Prometheus answers",
            ),
            Condition(type="SLOMet", status=verdict.status, reason=verdict.reason, message=verdict.message),
        ],
        events=events,
    )
