"""`honed serve` end to end: start, swap a second report in, refuse a broken one, stop cleanly."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from honed.serving.deploy import STATE_FILE
from honed.serving.server import SHM_DIR
from tests.fixtures.serving_artifacts import FEATURES, mlp_report
from tests.fixtures.traffic import infer

pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def serve(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "honed.serving.cli", "serve", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_serve_swap_refuse_and_stop(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    http, grpc, metrics = free_ports(3)
    ports = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    first = subprocess.Popen(
        serve(mlp_report(tmp_path / "r1", seed=0), "--repository", repository, *ports),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert first.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in first.stdout], daemon=True).start()  # type: ignore[union-attr]
    output = []
    try:
        deadline = time.monotonic() + 90
        while not any("Triton is ready" in line for line in output):
            assert time.monotonic() < deadline and first.poll() is None, "".join(output)
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=1))
        text = "".join(output)
        assert "wrote mlp version 1 (onnx-fp32.onnxruntime, runtime)" in text
        assert f"http http://127.0.0.1:{http}" in text and "max_queue_delay" in text
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        x = np.ones((1, FEATURES), np.float32)
        assert infer(client, "mlp", x)[1] == "1"

        # A second report of the same model is swapped into the running server.
        second = subprocess.run(
            serve(mlp_report(tmp_path / "r2", seed=1), "--repository", repository),
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert "mlp version 2 now serves" in second.stdout and "retired version 1" in second.stdout
        assert infer(client, "mlp", x)[1] == "2"

        # A broken one is refused with Triton's reason, and version 2 keeps answering.
        broken = subprocess.run(
            serve(mlp_report(tmp_path / "r3", broken=True), "--repository", repository),
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        assert broken.returncode == 4
        assert "version 3 of model 'mlp' failed to load; version 2 keeps serving" in broken.stderr
        assert "Traceback" not in broken.stderr
        assert infer(client, "mlp", x)[1] == "2"
    finally:
        first.send_signal(signal.SIGTERM)
        code = first.wait(60)
    time.sleep(0.2)
    while not lines.empty():
        output.append(lines.get())
    assert code == 0, "".join(output)
    assert "Triton stopped" in "".join(output)
    assert not [p for p in SHM_DIR.iterdir() if p.name.startswith(f"honed{first.pid}x")]
    assert not (repository / STATE_FILE).exists()
