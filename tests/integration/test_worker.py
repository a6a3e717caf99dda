"""Candidate workers: errors, crashes and timeouts become reasons, never a crashed search."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from honed.optimizer.worker import Worker, WorkerFailure

pytestmark = pytest.mark.slow


def test_an_error_in_the_worker_is_reported_with_its_message(tmp_path: Path) -> None:
    worker = Worker.start("t", threads=1, log_path=tmp_path / "log")
    try:
        with pytest.raises(WorkerFailure, match=r"honed-artifact\.json"):
            worker.call("load", tmp_path, tmp_path / "data.npz", timeout=60)
        # The worker survives its own errors and answers the next command.
        assert worker.call("stats", timeout=30)["peak_rss_bytes"] > 0
    finally:
        worker.close()
    assert not worker.process.is_alive()


def test_a_crash_names_the_signal(tmp_path: Path) -> None:
    worker = Worker.start("t", threads=1, log_path=tmp_path / "log")
    worker.call("stats", timeout=60)
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.join(10)
    with pytest.raises(WorkerFailure, match="signal 9"):
        worker.call("stats", timeout=30)
    worker.close()


def test_a_timeout_kills_the_worker(tmp_path: Path) -> None:
    worker = Worker.start("t", threads=1)
    worker.call("stats", timeout=60)
    os.kill(worker.process.pid, signal.SIGSTOP)  # a hung runtime
    with pytest.raises(WorkerFailure, match="timed out"):
        worker.call("stats", timeout=1)
    assert not worker.process.is_alive()
