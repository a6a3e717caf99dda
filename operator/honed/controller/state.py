"""What reconcile sees (``Observed``) and what it decides (``Plan``): plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from honed.api.status import PoolPhase
from honed.optimizer.report import Report
from honed.settings import HonedSettings


@dataclass(frozen=True)
class JobState:
    """One optimizer Job as the API server reports it (and its pod's termination message)."""

    name: str
    pool: str
    optimization: str
    phase: PoolPhase
    message: str = ""


@dataclass(frozen=True)
class DeploymentState:
    version: int | None
    applied: str | None  # hash of the manifest honed last applied
    replicas: int  # desired (spec)
    ready_replicas: int
    updated_replicas: int  # pods of the latest template
    total_replicas: int  # pods of any template: old ones remain while a rollout is unfinished
    rolled_out: bool  # the controller has seen the latest spec (observedGeneration >= generation)
    node_selector: dict[str, str] = field(default_factory=dict)
    stalled: str | None = None  # why the rollout gave up (ProgressDeadlineExceeded), if it did


@dataclass(frozen=True)
class ReportRead:
    """A pool's report.json, or why it could not be read."""

    uri: str
    report: Report | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observed:
    """Everything reconcile needs, gathered by ``observe`` before it runs."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    annotations: dict[str, str]
    status: dict[str, Any]
    settings: HonedSettings
    now: str
    jobs: dict[str, JobState] = field(default_factory=dict)  # by name; every optimization's Jobs
    configmaps: frozenset[str] = frozenset()
    reports: dict[str, ReportRead] = field(default_factory=dict)  # by pool, current optimization
    model_error: str | None = None  # the model URI was checked and cannot be read
    repository_versions: frozenset[int] = frozenset()  # every model version number used so far
    repository_ready: frozenset[int] = frozenset()  # versions written completely to the store
    deployment: DeploymentState | None = None
    service: bool = False


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Patch:
    api_version: str
    kind: str
    name: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class RepositoryWrite:
    """Put the winner into the Triton model repository as ``version``."""

    version: int
    pool: str
    candidate: str
    report_uri: str  # report.json of the winner's pool (artifacts are relative to it)
    repository_uri: str  # the store URI of the model repository
    model_name: str
    serving: dict[str, Any]  # spec.serving (snake_case), for config.pbtxt


@dataclass
class Plan:
    """What to change, applied in this order: repository, creates, patches, deletes, status, events."""

    repository: RepositoryWrite | None = None
    create: list[dict[str, Any]] = field(default_factory=list)
    patch: list[Patch] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # the whole new status
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # For the operator's metrics: set when this pass finished an optimization.
    optimization_outcome: Literal["succeeded", "failed"] | None = None
    optimization_seconds: float | None = None
    winner_speedup: float | None = None
