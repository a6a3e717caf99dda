"""`honed operator` as deployed: its own process, kubeconfig login, /metrics, /healthz, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from honed.controller.kube import OPTIMIZED_MODELS, KubeClient
from tests.integration.operator.harness import eventually, jobs_of, manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except OSError:
        return 0, ""


async def test_operator_process_serves_metrics_and_health_and_stops_on_sigterm(
    api: KubeClient, namespace: str, k8s_kubeconfig: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"only checked for existence by the operator")
    metrics_port, health_port = free_port(), free_port()
    env = {
        **os.environ,
        # The default login: kopf's piggybacking on the kubernetes client, reading KUBECONFIG.
        "KUBECONFIG": str(k8s_kubeconfig),
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
        "HONED_POOLS": json.dumps([{"name": "cpu", "image": "honed/optimizer-cpu:test"}]),
        "HONED_ARTIFACT_STORE": f"file://{tmp_path}/store",
        "HONED_WATCH_NAMESPACES": namespace,
        "HONED_METRICS_PORT": str(metrics_port),
        "HONED_HEALTH_PORT": str(health_port),
        "HONED_LOG_LEVEL": "INFO",
    }
    code = (
        "import argparse, sys; from honed.controller.cli import run_operator; "
        "sys.exit(run_operator(argparse.Namespace(all_namespaces=False, namespace=None)))"
    )
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:

        async def healthy() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"the operator exited: {log.read_text()}")
            status, _ = await asyncio.to_thread(http_get, f"http://127.0.0.1:{health_port}/healthz")
            return status == 200

        await eventually(healthy, timeout=30, what="/healthz")
        spec = {"model": {"uri": f"file://{model}"}, "targets": [{"pool": "cpu"}]}
        await api.create(OPTIMIZED_MODELS, namespace, manifest("proc", spec))

        async def one_job() -> list[dict[str, Any]]:
            return await jobs_of(api, namespace, "proc")

        await eventually(one_job, timeout=30, what="the Job")

        async def counted() -> str | None:
            # The Job can appear before the reconcile pass that created it has been counted.
            status, text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200
            return text if 'honed_reconciles_total{result="ok"}' in text else None

        text = await eventually(counted, timeout=30, what="the reconcile counter")
        assert 'honed_optimizer_jobs_created_total{pool="cpu"} 1.0' in text
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=30)
    assert returncode == 0, log.read_text()
