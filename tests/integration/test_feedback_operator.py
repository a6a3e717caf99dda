"""The operator's feedback pass against a real API server (envtest), a real Prometheus and a real Triton.

The resource is put in the state reconcile leaves a served winner in; the test then runs the
pass the feedback daemon runs every interval and reads what it wrote through the API.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from honed.controller import handlers, names
from honed.controller.kube import EVENTS, OPTIMIZED_MODELS, KubeClient
from honed.controller.settings import HonedSettings
from honed.controller.stored_repository import write_repository
from tests.fixtures.feedback import MODEL, Bench, Traffic
from tests.integration.operator.harness import Login, api, login, manifest, pools

pytestmark = pytest.mark.slow
__all__ = ["api", "login"]  # fixtures used by the tests below

NAME = "mlp-om"
INTERVAL_S = 3.0


def spec(p99_ms: float) -> dict[str, Any]:
    return {
        "model": {"uri": "file:///models/mlp.onnx"},
        "targets": [{"pool": "cpu"}],
        "feedback": {"enabled": True, "p99LatencyMs": p99_ms, "interval": "3s", "cooldown": "10m"},
    }


def served(bench: Bench) -> dict[str, Any]:
    """The status reconcile writes once the winner serves (the fields the loop reads)."""
    stamp = "2026-01-01T00:00:00Z"
    version = bench.written.version
    return {
        "phase": "Serving",
        "winner": {
            "pool": "cpu",
            "name": bench.written.candidate,
            "backend": "onnxruntime",
            "precision": "fp32",
            "optimization": "o1",
            "version": version,
            "report": "r",
            "artifact": "a",
        },
        "endpoint": {"http": "h", "grpc": "g", "metrics": "m", "model": MODEL, "version": version},
        "conditions": [
            {"type": "Deployed", "status": "True", "reason": "RolledOut", "message": "", "lastTransitionTime": stamp}
        ],
    }


async def _om(api: KubeClient, namespace: str) -> dict[str, Any]:
    body = await api.get(OPTIMIZED_MODELS, namespace, NAME)
    assert body is not None
    return body


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


@pytest.fixture
def operator(login: Login, bench: Bench, tmp_path: Path) -> handlers.Operator:
    settings = HonedSettings(
        pools=pools(), artifact_store=f"file://{tmp_path}/store", prometheus_url=bench.prometheus.url
    )
    return handlers.Operator(settings, login, write_repository)


async def test_a_breach_is_recorded_and_reoptimizes_then_a_blind_prometheus_is_reported(
    bench: Bench, api: KubeClient, namespace: str, operator: handlers.Operator
) -> None:
    # Series carry the pod's namespace in a cluster; the file_sd target gets it as a label.
    bench.prometheus.set_targets([f"127.0.0.1:{bench.triton.endpoints.metrics_port}"], {"namespace": namespace})
    bench.prometheus.wait_for(f'nv_inference_count{{model="{MODEL}",namespace="{namespace}"}}')
    body = manifest(NAME, spec(p99_ms=1.0))  # a budget no request on this machine meets
    await api.create(OPTIMIZED_MODELS, namespace, body)
    await api.patch(OPTIMIZED_MODELS, namespace, NAME, {"status": served(bench)}, subresource="status")

    with Traffic(bench.grpc, concurrency=4) as traffic:
        await asyncio.sleep(INTERVAL_S)
        delays = []
        for _ in range(3):
            started = time.monotonic()
            delays.append(await operator.feedback_pass(namespace, NAME))
            om = await _om(api, namespace)
            if names.REOPTIMIZE in (om["metadata"].get("annotations") or {}):
                break
            await asyncio.sleep(max(0.0, INTERVAL_S - (time.monotonic() - started)))
    assert traffic.errors == []
    assert delays[0] == INTERVAL_S
    slo_met = _condition(om, "SLOMet")
    assert (slo_met["status"], slo_met["reason"]) == ("False", "LatencyOverBudget")
    assert _condition(om, "MetricsUnavailable")["status"] == "False"
    decision = om["status"]["feedback"]["lastDecision"]
    assert decision["action"] == "Reoptimize" and decision["numbers"]["budgetMs"] == 1.0
    requested = om["metadata"]["annotations"][names.REOPTIMIZE]
    assert names.reoptimize_reason(om["metadata"]["annotations"]) == "SLOViolation"
    assert names.observed_batch_sizes(om["metadata"]["annotations"]), requested
    assert _condition(om, "Deployed")["reason"] == "RolledOut", "the operator's conditions are left alone"

    bench.prometheus.stop()
    assert await operator.feedback_pass(namespace, NAME) == INTERVAL_S
    om = await _om(api, namespace)
    blind = _condition(om, "MetricsUnavailable")
    assert (blind["status"], blind["reason"]) == ("True", "PrometheusUnreachable")
    assert bench.prometheus.url.removeprefix("http://") in blind["message"]
    assert _condition(om, "SLOMet")["status"] == "Unknown"
    assert om["metadata"]["annotations"][names.REOPTIMIZE] == requested, "no action without metrics"

    events = await operator.client.list(EVENTS, namespace, {})
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == NAME]
    assert {"SLOViolated", "Reoptimize", "MetricsUnavailable"} <= set(reasons), reasons
    await operator.client.close()
