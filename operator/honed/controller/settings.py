"""The operator's settings: one typed object read from ``HONED_*`` environment variables.

The Helm chart renders these from its values; every field says what it is for. Complex fields
(``HONED_POOLS``) are JSON; ``HONED_WATCH_NAMESPACES`` is a comma-separated list.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from honed.errors import InputError

PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class Toleration(BaseModel):
    """A Kubernetes toleration, passed through to the pool's pods."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Pool(BaseModel):
    """A node pool the platform team offers for optimization and serving (from the chart's values)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40, description="what targets name")
    node_selector: dict[str, str] = Field(default_factory=dict, description="labels of the pool's nodes")
    tolerations: list[Toleration] = Field(default_factory=list, description="taints the pods tolerate")
    resources: dict[str, Any] = Field(
        default_factory=dict,
        description="requests/limits of an optimizer pod; a whole node is best, timings share the CPU",
    )
    serving_resources: dict[str, Any] | None = Field(
        None, description="requests/limits of a Triton pod on this pool; defaults to resources"
    )
    image: str = Field(description="optimizer image for this pool's device (optimizer-cpu, optimizer-gpu)")
    image_pull_policy: PullPolicy | None = Field(
        None, description="pull policy of the optimizer image; unset: Kubernetes' default for the tag"
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="what `honed optimize --device` targets")
    price_per_hour: float | None = Field(None, ge=0, description="node price per hour; needed by the cost objective")

    def pod_resources(self, *, serving: bool = False) -> dict[str, Any]:
        """A copy of the optimizer pod's requests/limits, or with ``serving`` a Triton pod's."""
        return dict(self.serving_resources if serving and self.serving_resources is not None else self.resources)


class HonedSettings(BaseSettings):
    """Everything the operator is configured with. Each field is read from ``HONED_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="HONED_", extra="ignore", populate_by_name=True)

    pools: list[Pool] = Field(
        default_factory=list,
        description="HONED_POOLS: JSON list of pools (name, nodeSelector, tolerations, resources, "
        "servingResources, image, device cpu|cuda, pricePerHour)",
    )
    artifact_store: str = Field(
        "file:///var/lib/honed/store",
        description="HONED_ARTIFACT_STORE: where reports, artifacts and model repositories go: "
        "s3://bucket/prefix in clusters, pvc://CLAIM/prefix for a shared volume, file:// in tests",
    )
    artifact_secret: str | None = Field(
        None,
        description="HONED_ARTIFACT_SECRET: Secret with the store's credentials (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...); the chart puts a copy in every watched namespace",
    )
    triton_image: str = Field(
        "nvcr.io/nvidia/tritonserver:24.10-py3",
        description="HONED_TRITON_IMAGE: the Triton Inference Server image that serves winners",
    )
    triton_image_pull_policy: PullPolicy | None = Field(
        None,
        description="HONED_TRITON_IMAGE_PULL_POLICY: Always, IfNotPresent or Never (images loaded onto the "
        "nodes, no registry); unset: Kubernetes' default for the tag",
    )
    triton_packaging: Literal["native", "runtime"] = Field(
        "native",
        description="HONED_TRITON_PACKAGING: native = Triton's own backends (NGC images); runtime = "
        "Triton's python backend running the winner with honed's runtimes (an image with honed installed)",
    )
    optimizer_service_account: str | None = Field(
        None, description="HONED_OPTIMIZER_SERVICE_ACCOUNT: service account of the optimizer Jobs"
    )
    watch_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="HONED_WATCH_NAMESPACES: comma-separated namespaces to watch; empty = all",
    )
    prometheus_url: str | None = Field(
        None, description="HONED_PROMETHEUS_URL: Prometheus that scrapes Triton (for the feedback loop)"
    )
    metrics_port: int = Field(8080, ge=1, le=65535, description="HONED_METRICS_PORT: the operator's /metrics")
    health_port: int = Field(8081, ge=1, le=65535, description="HONED_HEALTH_PORT: liveness probe /healthz")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="HONED_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR"
    )
    resync_interval_s: float = Field(
        600.0,
        gt=0,
        description="HONED_RESYNC_INTERVAL_S: every resource is reconciled at least this often even when "
        "nothing it owns changed; changes themselves reach the operator through watches at once",
    )
    api_qps: float = Field(
        100.0,
        gt=0,
        description="HONED_API_QPS: requests per second the operator sends to the API server on average "
        "(client-side token bucket, as client-go's; kopf's own watching excluded)",
    )
    api_burst: int = Field(
        200, ge=1, description="HONED_API_BURST: requests the operator may send at once above HONED_API_QPS"
    )
    # Whole seconds: the API server parses a watch's timeoutSeconds as an integer (400 otherwise).
    watch_timeout_s: int = Field(
        600,
        gt=0,
        description="HONED_WATCH_TIMEOUT_S: the API server ends each watch request after this long and kopf "
        "opens a new one; the client gives up a minute later, so a connection that died silently is noticed",
    )
    cluster_scanning: bool = Field(
        True,
        description="HONED_CLUSTER_SCANNING: follow namespaces and CRDs that appear while running (needs "
        "cluster-wide list/watch on namespaces and CRDs); false = resolve them once at start",
    )
    pod_uid: int | None = Field(
        10001,
        ge=1,
        description="HONED_POD_UID: uid, gid and fsGroup of the optimizer and Triton pods (honed's images run "
        "as 10001; fsGroup makes writable claims writable); empty = the image's USER, which must then be "
        "numeric and not root (the pods always run with runAsNonRoot)",
    )
    pending_timeout_s: float = Field(
        600.0,
        gt=0,
        description="HONED_PENDING_TIMEOUT_S: how long an optimizer pod may wait for a node, its image or its "
        "configuration (Secrets) before its pool fails with the reason",
    )
    pvc_mount_root: str = Field(
        "/mnt/honed",
        description="HONED_PVC_MOUNT_ROOT: where pvc:// claims are mounted (pvc://CLAIM/x -> ROOT/CLAIM/x), "
        "in the operator and in the pods it creates",
    )

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("pod_uid", mode="before")
    @classmethod
    def _empty_uid(cls, value: object) -> object:
        # The chart renders an unset value as "": let the image decide.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _pools_unique(self) -> HonedSettings:
        names = [pool.name for pool in self.pools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def pool(self, name: str) -> Pool | None:
        """The pool of that name; None when it is not configured."""
        return next((pool for pool in self.pools if pool.name == name), None)

    def pool_names(self) -> list[str]:
        """The configured pools' names, in HONED_POOLS order."""
        return [pool.name for pool in self.pools]


def load_settings(**overrides: Any) -> HonedSettings:
    """Read the settings; a bad variable becomes an InputError naming it, never a traceback."""
    try:
        return HonedSettings(**overrides)
    except SettingsError as exc:
        # pydantic-settings names the field in its message when a JSON variable does not parse.
        raise InputError(str(exc), hint="HONED_POOLS is a JSON list; check the chart's values") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        variable = f"HONED_{loc[0].upper()}" if loc else "HONED_*"
        where = "" if len(loc) < 2 else f" at {'.'.join(loc[1:])}"
        raise InputError(
            f"{variable}{where}: {error['msg']}", hint="fix the operator's environment (the chart's values)"
        ) from None
