"""Deterministic names, labels and store keys of everything an OptimizedModel owns.

Names are functions of the resource and the optimization id only, so a restarted operator
finds the Jobs it already made instead of creating twins.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from honed.api.spec import OptimizedModelSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
OWNER = "honed.dev/optimizedmodel"
POOL = "honed.dev/pool"
OPTIMIZATION = "honed.dev/optimization"
MODEL_VERSION = "honed.dev/model-version"
SERVING_CONFIG = "honed.dev/serving-config"
# Setting or changing this annotation on an OptimizedModel starts a new optimization with the
# same spec; ``REASON:anything`` records REASON (SLOViolation, TrafficShift) as the cause.
REOPTIMIZE = "honed.dev/reoptimize"
REOPTIMIZE_REASONS = ("SLOViolation", "TrafficShift", "Requested")
# On an optimizer Job: the run (store key segment) it writes its report to.
RUN = "honed.dev/run"
# On a Job the operator gave up on (its pod waited too long; the Job is suspended): ``REASON: message``.
FAILED = "honed.dev/failed"
# The feedback loop adds what live traffic looked like: ``SLOViolation:TIME batchSizes=1,8 ...``.
_OBSERVED_BATCH_SIZES = re.compile(r"\bbatchSizes=([0-9,]+)")

MAX_NAME = 63  # Job and Service names end up in labels and DNS labels


def short_hash(value: Any, length: int = 10) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value`` as canonical JSON: stable across runs."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:length]


def bounded(name: str, limit: int = MAX_NAME) -> str:
    """``name`` if it fits, else a prefix plus a hash of the whole (still unique, still stable)."""
    name = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    if len(name) <= limit:
        return name
    suffix = short_hash(name, 8)
    return f"{name[: limit - len(suffix) - 1].rstrip('-')}-{suffix}"


def optimization_id(spec: OptimizedModelSpec, annotations: dict[str, str]) -> str:
    """Hash of what shapes the search; serving and feedback changes do not re-optimize."""
    shaping = spec.model_dump(mode="json", include={"model", "validation", "search", "targets"})
    return short_hash({"spec": shaping, "reoptimize": annotations.get(REOPTIMIZE, "")})


def reoptimize_reason(annotations: dict[str, str]) -> str | None:
    """The cause a reoptimize annotation records: its known ``REASON:`` prefix, else Requested; None without one."""
    value = annotations.get(REOPTIMIZE)
    if not value:
        return None
    head = value.split(":", 1)[0]
    return head if head in REOPTIMIZE_REASONS else "Requested"


def reoptimize_pending(annotations: dict[str, str], status: dict[str, Any]) -> bool:
    """Whether the reoptimize annotation asks for something the latest optimization did not start from.

    Mirrors reconcile: a value (or its removal) unlike ``status.lastOptimization.request`` starts one.
    """
    requested = annotations.get(REOPTIMIZE) or None
    started_from = (status.get("lastOptimization") or {}).get("request") or None
    return requested != started_from


def observed_batch_sizes(annotations: dict[str, str]) -> list[int] | None:
    """The batch sizes the feedback loop asked the next optimization to benchmark, if any."""
    match = _OBSERVED_BATCH_SIZES.search(annotations.get(REOPTIMIZE, ""))
    sizes = sorted({int(b) for b in match.group(1).split(",") if b and int(b) > 0}) if match else []
    return sizes or None


def job_name(owner: str, pool: str, optimization: str) -> str:
    """The optimizer Job (and its ConfigMap) of one pool in one optimization."""
    return bounded(f"{owner}-opt-{pool}-{optimization[:6]}")


def server_name(owner: str) -> str:
    """The name of the Triton Deployment and of its Service."""
    return bounded(f"{owner}-triton")


def triton_model_name(owner: str) -> str:
    """The model's name in Triton (repository directory, inference URLs, metrics): the resource's own."""
    return owner


def owner_labels(owner: str) -> dict[str, str]:
    """The labels of every child: managed-by honed (what the cache watches) and the owner (what it indexes by)."""
    return {MANAGED_BY: "honed", PART_OF: "honed", OWNER: bounded(owner)}


def resource_key(namespace: str, owner: str) -> str:
    """Store key under which everything of one resource lives (removed when it is deleted)."""
    return f"{namespace}/{owner}"


def run_id(optimization: str, started_at: str) -> str:
    """The store key segment of one run of ``optimization``, started at ``started_at`` (RFC 3339).

    The same spec optimized again (re-applied, or reverted to) is a new run, so its reports go to a
    new store key and never overwrite the earlier ones.
    """
    try:
        stamp = datetime.fromisoformat(started_at).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    except ValueError:
        stamp = re.sub(r"[^0-9]", "", started_at)[:14]
    return f"{optimization}-{stamp}"


def optimization_key(namespace: str, owner: str, run: str, pool: str) -> str:
    """Store key of one pool's report and artifacts in one optimization run."""
    return f"{resource_key(namespace, owner)}/optimizations/{run}/{pool}"


def repository_key(namespace: str, owner: str) -> str:
    """Store key of the Triton model repository serving this resource."""
    return f"{resource_key(namespace, owner)}/repository"
