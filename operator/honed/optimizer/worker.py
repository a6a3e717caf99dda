"""Candidate worker processes: each candidate builds and runs in its own process.

ONNX Runtime, OpenVINO and PyTorch thread pools in one process on a small machine distort
timings by up to 40x, and a crashing runtime must not take the search down. The parent talks
to a worker over a pipe with small commands; a timeout or crash becomes the candidate's reason.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import re
import resource
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np


class WorkerFailure(Exception):
    """The worker reported an error, crashed or timed out; the message is the candidate's reason."""


def summarize(exc: BaseException) -> str:
    """One readable line from a runtime's exception (C++ runtimes lead with a source location)."""
    from honed.optimizer.failures import clean

    # Drop ONNX Runtime's C++ location and signature first, so the 400 characters kept are its message.
    lines = [clean(line) for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not re.match(r"^(Exception from |Check '|src/|\S+\.(cpp|hpp|h):\d+)", line)]
    text = " ".join((useful or lines)[:2])
    return f"{type(exc).__name__}: {text}"[:400]


def _thread_env(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Inductor's compile pool would outlive a killed worker and compete with the timed runtime.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def _redirect_output(log_path: Path | None) -> None:
    """Runtimes print progress bars and advice from C++ and Python; keep them out of the user's console."""
    if log_path is None:
        return
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _serve(conn: Connection, threads: int, log_path: Path | None = None) -> None:
    _redirect_output(log_path)
    _thread_env(threads)
    # Runtimes log advice through the root logger; the parent reports what matters per candidate.
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    state: dict[str, Any] = {"warm": set()}
    while True:
        try:
            command, args = conn.recv()
        except EOFError:
            return
        if command == "exit":
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", _HANDLERS[command](state, threads, *args)))
        except Exception as exc:
            conn.send(("error", summarize(exc), traceback.format_exc(limit=6)))


def _build(state: dict[str, Any], threads: int, plan: Any, ctx: Any, out_dir: Path) -> float:
    from honed.optimizer.backends import backend_module

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = backend_module(plan.backend, plan.device).build(plan, ctx, out_dir)
    meta.write(out_dir)
    return time.perf_counter() - start


def _load(state: dict[str, Any], threads: int, artifact: Path, data_path: Path) -> float:
    from honed.optimizer.artifact import load_runner, read_meta

    start = time.perf_counter()
    state["runner"] = load_runner(artifact, threads=threads)
    meta = read_meta(artifact)
    state["inputs"], state["outputs"] = meta.inputs, meta.outputs
    with np.load(data_path) as data:
        state["feeds"] = {spec.name: data[spec.name] for spec in state["inputs"]}
    return time.perf_counter() - start


def _predict(state: dict[str, Any], threads: int, batch: int, out_path: Path) -> int:
    from honed.optimizer.data import batches, samples_first

    runner = state["runner"]
    chunks: list[list[np.ndarray]] = [
        samples_first(runner.run(call), state["outputs"]) for call in batches(state["feeds"], state["inputs"], batch)
    ]
    outputs = [
        np.concatenate([chunk[i] for chunk in chunks])
        if chunks[0][i].ndim
        else np.stack([chunk[i] for chunk in chunks])
        for i in range(len(chunks[0]))
    ]
    # Keyed by output name: the accuracy gate matches a candidate's outputs to the original's by name.
    named = {spec.name: output for spec, output in zip(state["outputs"], outputs, strict=True)}
    np.savez(out_path, **named)  # type: ignore[arg-type]
    return len(outputs)


def _time(
    state: dict[str, Any], threads: int, batch: int, seconds: float, min_iters: int, max_iters: int
) -> list[float]:
    """Latencies in ms of single calls at ``batch``; warm-up calls run untimed.

    Three the first time a batch size runs (compiles, allocations), one at the start of every
    later slot: it is the first call after another candidate's process had the CPU, paying for
    cold caches and sleeping threads, and in short interleaved slots that cost reads as the
    candidate's own.
    """
    from honed.optimizer.data import tile_to

    runner = state["runner"]
    feeds = tile_to(state["feeds"], state["inputs"], batch)
    for _ in range(1 if batch in state["warm"] else 3):
        runner.run(feeds)
    state["warm"].add(batch)
    if hasattr(runner, "time_batch"):
        return list(runner.time_batch(feeds, max(min_iters, min(max_iters, 50))))
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < max_iters and (len(samples) < min_iters or time.perf_counter() < deadline):
        start = time.perf_counter()
        runner.run(feeds)
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def _stats(state: dict[str, Any], threads: int) -> dict[str, int | None]:
    runner = state.get("runner")
    gpu = runner.peak_gpu_bytes() if runner is not None and hasattr(runner, "peak_gpu_bytes") else None
    return {
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_bytes": gpu,
    }


def _settings(state: dict[str, Any], threads: int) -> dict[str, Any]:
    """How the loaded runner runs (for the report); runtimes that say nothing give {}."""
    runner = state.get("runner")
    return dict(runner.settings()) if runner is not None and hasattr(runner, "settings") else {}


_HANDLERS: dict[str, Any] = {
    "build": _build,
    "load": _load,
    "predict": _predict,
    "time": _time,
    "stats": _stats,
    "settings": _settings,
}


@dataclass
class Worker:
    """Parent-side handle of one worker process."""

    process: Any
    conn: Connection
    label: str
    log_path: Path | None = None

    @classmethod
    def start(cls, label: str, threads: int, log_path: Path | None = None) -> Worker:
        """Spawn worker process ``honed-<label>``, its runtimes on ``threads`` threads, its output to ``log_path``."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(child, threads, log_path), name=f"honed-{label}", daemon=True)
        process.start()
        child.close()
        return cls(process=process, conn=parent, label=label, log_path=log_path)

    def call(self, command: str, *args: Any, timeout: float) -> Any:
        """Run ``command`` in the worker and return its result.

        Raises:
            WorkerFailure: the command raised, timed out (the worker is then killed), or the worker
                died (the message ends with the last line it logged).
        """
        try:
            self.conn.send((command, args))
            if not self.conn.poll(timeout):
                self.kill()
                raise WorkerFailure(f"{command} timed out after {timeout:.0f}s")
            reply = self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise WorkerFailure(f"worker crashed during {command} ({why}){self._last_words()}") from None
        if reply[0] == "error":
            raise WorkerFailure(reply[1])
        return reply[1]

    def _last_words(self) -> str:
        """The last line the runtime printed before dying, which usually says why."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return f": {lines[-1][:300]}" if lines else ""

    def kill(self) -> None:
        """Kill the worker process now, if it still runs."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)

    def close(self) -> None:
        """Ask the worker to exit, wait for it, and kill it if it has not."""
        if self.process.is_alive():
            with contextlib.suppress(WorkerFailure):
                self.call("exit", timeout=10)
            # Let it exit on its own: a kill now would leak the runtime's semaphores.
            self.process.join(timeout=15)
        self.kill()
