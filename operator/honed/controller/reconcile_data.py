"""What reconcile sees (``Observed``) and what it decides (``Plan``): plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from honed.api.status import PoolPhase
from honed.controller.settings import HonedSettings
from honed.optimizer.report import Report


@dataclass(frozen=True)
class PodProblem:
    """Why a pod does not run, or why an earlier one stopped: a status reason and the kubelet's words."""

    reason: str  # Unschedulable, ImageUnavailable, ContainerConfigError, FailedCreate, CrashLoopBackOff, OOMKilled
    message: str
    since: str | None = None  # RFC 3339: when the pod (or the Job, for FailedCreate) started waiting

    def describe(self) -> str:
        """``REASON: message`` for a condition message."""
        return f"{self.reason}: {self.message}" if self.message else self.reason


@dataclass(frozen=True)
class JobState:
    """One optimizer Job as the API server reports it (and its pod's termination message)."""

    name: str
    pool: str
    optimization: str
    phase: PoolPhase
    message: str = ""
    reason: str | None = (
        None  # a specific failure reason (OOMKilled, DeadlineExceeded, InvalidInput, Unschedulable...), when known
    )
    problem: PodProblem | None = None  # why a Pending or Running Job's pod does not run (or ran out)
    run: str = ""  # the store key segment its report goes to; "" for Jobs of operators before runs


@dataclass(frozen=True)
class DeploymentState:
    """The Triton Deployment as far as reconcile cares: what its pod template runs, and how its rollout goes."""

    version: int | None  # the model version of the pod template
    replicas: int  # desired (spec); which pods are ready comes from the pods themselves (PodState):
    # the Deployment's readyReplicas counts the previous version's pods during a rollout too
    rolled_out: bool  # the controller has seen the latest spec (observedGeneration >= generation)
    serving_config: str | None = None  # the pod template's serving-config hash
    pool: str | None = None  # the pod template's pool label
    node_selector: dict[str, str] = field(default_factory=dict)
    stalled: str | None = None  # why the rollout gave up (ProgressDeadlineExceeded), if it did
    problem: PodProblem | None = None  # the ReplicaSet cannot create pods (ReplicaFailure), if so


@dataclass(frozen=True)
class PodState:
    """One Triton pod: which version and serving config it runs, and whether it serves."""

    name: str
    version: int | None
    serving_config: str | None
    ready: bool
    problem: PodProblem | None = None
    # Why a pod that is not ready is not, when it is no problem (yet): a restart, a container starting.
    note: str = ""


@dataclass(frozen=True)
class ReportRead:
    """A pool's report.json, or why it could not be read."""

    uri: str
    report: Report | None = None
    error: str | None = None


@dataclass(frozen=True)
class ObjectRef:
    """The OptimizedModel an Event is about."""

    name: str
    namespace: str
    uid: str


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
    server_pods: tuple[PodState, ...] = ()  # the Triton pods of every version, terminating ones left out
    service: bool = False

    @property
    def ref(self) -> ObjectRef:
        """The observed OptimizedModel, for its Events."""
        return ObjectRef(self.name, self.namespace, self.uid)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the OptimizedModel (``apply.event_manifest`` builds it)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Patch:
    """A JSON merge patch of one child in the resource's namespace."""

    api_version: str
    kind: str
    name: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    """A child to delete (with its dependents: background propagation); already gone is fine."""

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
    # What pods may still load: the version the endpoint announces (a rollout of ``version`` may
    # stall and leave it serving). Pruning never removes it.
    serving_version: int | None = None


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
    # Why the spec cannot be acted on (the message also in the Optimized condition); the handlers
    # turn it into kopf.PermanentError so kopf does not retry what only a spec change fixes.
    invalid_spec: str | None = None
    # For the operator's metrics: set when this pass finished an optimization.
    optimization_outcome: Literal["succeeded", "failed"] | None = None
    optimization_seconds: float | None = None
    winner_speedup: float | None = None
