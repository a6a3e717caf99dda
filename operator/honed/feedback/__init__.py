"""The feedback loop: Triton metrics from Prometheus drive retuning, re-optimization and fallback.

``PrometheusClient.windows`` observes (every model in one set of queries), ``evaluate`` decides
(pure); the controller applies.
"""

from honed.feedback.decisions import Decision, Fallback, Keep, Reoptimize, Retune
from honed.feedback.evaluate import Condition, Evaluation, Event, evaluate
from honed.feedback.policy_inputs import Deployment, FeedbackState, Option, options_from_report
from honed.feedback.prometheus import ModelKey, PrometheusClient
from honed.feedback.window import MetricsUnavailable, MetricWindow, Observation

__all__ = [
    "Condition",
    "Decision",
    "Deployment",
    "Evaluation",
    "Event",
    "Fallback",
    "FeedbackState",
    "Keep",
    "MetricWindow",
    "MetricsUnavailable",
    "ModelKey",
    "Observation",
    "Option",
    "PrometheusClient",
    "Reoptimize",
    "Retune",
    "evaluate",
    "options_from_report",
]
