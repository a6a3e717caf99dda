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

from honed.serving.local_rollout import STATE_FILE
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


class Serving:
    """A `honed serve` process in the foreground, as a user runs it; its output is collected."""

    def __init__(self, *args: str | Path) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        ports = ["--http-port", self.http, "--grpc-port", self.grpc, "--metrics-port", self.metrics]
        self.process = subprocess.Popen(
            serve(*args, *map(str, ports)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    @property
    def text(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)

    def wait_ready(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while "Triton is ready" not in self.text:
            assert time.monotonic() < deadline and self.process.poll() is None, self.text
            with contextlib.suppress(queue.Empty):
                self.output.append(self.lines.get(timeout=1))
        return self.text

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        time.sleep(0.2)  # let the reader drain the last lines
        return code

    def shm_left(self) -> list[Path]:
        return [p for p in SHM_DIR.iterdir() if p.name.startswith(f"honed{self.process.pid}x")]


def test_serve_swap_refuse_and_stop(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    first = Serving(mlp_report(tmp_path / "r1", seed=0), "--repository", repository)
    try:
        text = first.wait_ready()
        assert "wrote mlp version 1 (onnx-fp32.onnxruntime, runtime)" in text
        assert f"http http://127.0.0.1:{first.http}" in text and "max_queue_delay" in text
        x = np.ones((1, FEATURES), np.float32)
        assert infer(first.client(), "mlp", x)[1] == "1"

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
        assert infer(first.client(), "mlp", x)[1] == "2"

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
        assert infer(first.client(), "mlp", x)[1] == "2"
    finally:
        code = first.stop()
    assert code == 0, first.text
    assert "Triton stopped" in first.text
    assert not first.shm_left()
    assert not (repository / STATE_FILE).exists()


def test_a_fresh_start_with_a_broken_new_version_serves_the_previous_one(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    written = subprocess.run(
        serve(mlp_report(tmp_path / "good"), "--repository", repository, "--write-only"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert written.returncode == 0 and "wrote mlp version 1" in written.stdout
    serving = Serving(mlp_report(tmp_path / "broken", broken=True), "--repository", repository)
    try:
        text = serving.wait_ready()
        assert "version 2 of model 'mlp' failed to load" in text
        assert "serving the previous version of mlp instead" in text
        assert infer(serving.client(), "mlp", np.ones((1, FEATURES), np.float32))[1] == "1"
    finally:
        code = serving.stop()
    assert code == 1, "the exit status says the requested version was not served"
    assert not serving.shm_left()
