"""Client-side load on a served model: concurrent callers, latency percentiles, throughput.

Used by the serving benchmark and the demo, and handy to check a fresh deployment by hand.
Each caller is a thread with its own gRPC client sending batch-1 requests back to back, so
``concurrency`` is the number of requests in flight.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from honed.optimizer.tensors import TRITON_DTYPES, TensorSpec
from honed.serving.server import TritonControl
from honed.serving.triton_metrics import model_traffic

Feeds = dict[str, np.ndarray]


def grpc_inputs(feed: dict[str, np.ndarray]) -> list[Any]:
    """One request's tensors for tritonclient's gRPC API, typed from the arrays' dtypes."""
    import tritonclient.grpc as grpcclient

    tensors = []
    for name, array in feed.items():
        tensor = grpcclient.InferInput(name, list(array.shape), TRITON_DTYPES[array.dtype.name][5:])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def sample_feeds(specs: list[TensorSpec], count: int, *, seed: int = 0, variable_dim: int = 128) -> list[Feeds]:
    """``count`` distinct batch-1 requests; variable non-batch dimensions get ``variable_dim``."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for spec in specs:
            shape = [1] + [d if d > 0 else variable_dim for d in spec.shape[1:]]
            dtype = spec.np_dtype()
            if np.issubdtype(dtype, np.floating):
                feed[spec.name] = rng.standard_normal(shape).astype(dtype)
            elif "mask" in spec.name:
                feed[spec.name] = np.ones(shape, dtype)
            elif dtype == np.bool_:
                feed[spec.name] = rng.integers(0, 2, shape).astype(dtype)
            else:  # token ids and the like: small values valid for any vocabulary
                feed[spec.name] = rng.integers(0, 100, shape).astype(dtype)
        feeds.append(feed)
    return feeds


@dataclass(frozen=True)
class LoadResult:
    """A load test's outcome: requests answered and failed, items/s, latency percentiles (ms), the first error."""

    concurrency: int
    seconds: float
    requests: int
    errors: int
    items_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_error: str = ""


def drive(
    grpc_url: str, model: str, feeds: list[Feeds], *, concurrency: int, seconds: float, warmup_s: float = 1.0
) -> LoadResult:
    """Keep ``concurrency`` requests in flight for ``warmup_s + seconds``; measure the last ``seconds``."""
    import tritonclient.grpc as grpcclient

    start = time.perf_counter() + 0.2  # let every caller connect before the clock starts
    window = (start + warmup_s, start + warmup_s + seconds)
    done: list[list[tuple[float, float]]] = [[] for _ in range(concurrency)]
    errors: list[str] = []

    def caller(index: int) -> None:
        client = grpcclient.InferenceServerClient(grpc_url)
        prepared = []
        for feed in feeds:
            prepared.append(grpc_inputs(feed))
        i = index
        while time.perf_counter() < start:
            time.sleep(0.001)
        while (now := time.perf_counter()) < window[1]:
            try:
                client.infer(model, prepared[i % len(prepared)])
            except Exception as exc:  # counted and reported, whatever the cause
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                end = time.perf_counter()
                done[index].append((end, (end - now) * 1000))
            i += concurrency
        client.close()

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Throughput counts what completed inside the window; requests straddling its start are warm.
    inside = [ms for calls in done for end, ms in calls if window[0] <= end <= window[1]]
    latencies = np.array(inside) if inside else np.array([np.nan])
    return LoadResult(
        concurrency=concurrency,
        seconds=seconds,
        requests=len(inside),
        errors=len(errors),
        items_per_s=len(inside) / seconds,
        p50_ms=float(np.percentile(latencies, 50)),
        p90_ms=float(np.percentile(latencies, 90)),
        p99_ms=float(np.percentile(latencies, 99)),
        first_error=errors[0] if errors else "",
    )


@dataclass(frozen=True)
class Exercise:
    """What Triton's own metrics say about a burst of traffic: batching and cache hits."""

    load: LoadResult
    average_batch: float
    cache_hits: float
    cache_misses: float

    def describe(self) -> str:
        """One line for a person: throughput, latency, errors, Triton's average batch, cache hits and misses."""
        return (
            f"{self.load.requests} requests at concurrency {self.load.concurrency}: "
            f"{self.load.items_per_s:.0f}/s, p50 {self.load.p50_ms:.2f} ms, p99 {self.load.p99_ms:.2f} ms, "
            f"{self.load.errors} errors; Triton ran batches of {self.average_batch:.1f} on average; "
            f"cache {self.cache_hits:.0f} hits / {self.cache_misses:.0f} misses"
        )


def exercise(
    control: TritonControl,
    model: str,
    specs: list[TensorSpec],
    *,
    concurrency: int = 8,
    seconds: float = 3.0,
    distinct: int = 64,
    repeats: int = 20,
) -> Exercise:
    """Distinct requests at ``concurrency`` (batching), then one request ``repeats`` times (cache)."""
    import tritonclient.grpc as grpcclient

    before = model_traffic(control.metrics_text(), model)
    feeds = sample_feeds(specs, distinct, seed=int(time.time()))
    load = drive(control.endpoints.grpc, model, feeds, concurrency=concurrency, seconds=seconds, warmup_s=0.0)
    client = grpcclient.InferenceServerClient(control.endpoints.grpc)
    tensors = grpc_inputs(feeds[0])
    for _ in range(repeats):
        client.infer(model, tensors)
    client.close()
    time.sleep(0.2)  # Triton counts a request just after answering it
    after = model_traffic(control.metrics_text(), model)
    executions = after.executions - before.executions
    inferences = after.inferences - before.inferences
    return Exercise(
        load,
        inferences / executions if executions else 0.0,
        after.cache_hits - before.cache_hits,
        after.cache_misses - before.cache_misses,
    )
