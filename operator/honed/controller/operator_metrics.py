"""The operator's own Prometheus metrics (served on HONED_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from honed.controller.reconcile_data import Plan

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "honed_reconciles",
    "Reconcile passes by result (ok, error)",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "honed_reconcile_duration_seconds",
    "Time of one observe-reconcile-apply pass",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
OPTIMIZATIONS = Counter(
    "honed_optimizations",
    "Finished optimizations by outcome (succeeded, failed)",
    ["outcome"],
    registry=REGISTRY,
)
OPTIMIZATION_SECONDS = Histogram(
    "honed_optimization_duration_seconds",
    "Wall time from the first Job's creation to the winner's selection",
    buckets=(60, 300, 600, 1200, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
WINNER_SPEEDUP = Gauge(
    "honed_winner_speedup",
    "Speedup of the selected winner over the original model on its pool",
    ["namespace", "name"],
    registry=REGISTRY,
)
JOBS_CREATED = Counter(
    "honed_optimizer_jobs_created",
    "Optimizer Jobs created, by pool",
    ["pool"],
    registry=REGISTRY,
)

API_REQUESTS = Counter(
    "honed_api_requests",
    "Requests the operator's client sent to the Kubernetes API server (kopf's own watching excluded), "
    "by verb, resource and HTTP status (0: no answer)",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
API_THROTTLED_SECONDS = Counter(
    "honed_api_rate_limited_seconds",
    "Seconds requests waited for the client-side rate limit (HONED_API_QPS, HONED_API_BURST)",
    registry=REGISTRY,
)
CACHE_OBJECTS = Gauge(
    "honed_cache_objects",
    "Objects held in the operator's watch cache, by resource",
    ["resource"],
    registry=REGISTRY,
)
WATCH_RESTARTS = Counter(
    "honed_watch_restarts",
    "Watches of the cache that ended and were reopened, by resource and why (timeout, expired, error)",
    ["resource", "reason"],
    registry=REGISTRY,
)


def record_plan(plan: Plan, namespace: str, name: str) -> None:
    """Count what an applied pass did: Jobs created, optimizations finished, the winner's speedup."""
    for manifest in plan.create:
        if manifest["kind"] == "Job":
            JOBS_CREATED.labels(pool=manifest["metadata"]["labels"].get("honed.dev/pool", "")).inc()
    if plan.optimization_outcome is not None:
        OPTIMIZATIONS.labels(outcome=plan.optimization_outcome).inc()
        if plan.optimization_seconds is not None:
            OPTIMIZATION_SECONDS.observe(plan.optimization_seconds)
    if plan.winner_speedup is not None:
        WINNER_SPEEDUP.labels(namespace=namespace, name=name).set(plan.winner_speedup)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` from a daemon thread; returns at once."""
    start_http_server(port, addr=address, registry=REGISTRY)
