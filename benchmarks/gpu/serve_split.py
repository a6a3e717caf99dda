"""Where a batch-1 request through Triton spends its time: helpers for serve_triton.py.

- ``model_stats``/``stats_per_request``: Triton's statistics extension (``/v2/models/NAME/stats``)
  before and after a load point, as microseconds per request in the queue, compute_input,
  compute_infer (for the python backend: the round trip to the stub and model.py's execute) and
  compute_output, and ``success`` (the whole request inside the server);
- ``echo_config``: a config for ``echo_model.py``, which answers zeros and computes nothing;
- ``drive_raw``: one caller on gRPC's generated stub with a request built once (what tritonclient's
  Python adds is the difference to ``honed.serving.load.drive``);
- ``drive_shm``: one tritonclient caller whose outputs Triton writes into a registered system
  shared-memory region instead of the gRPC response (what moving the outputs over gRPC costs);
- ``runtime_parts``: the runtime alone taken apart (copies in, replay, copies out) and the same
  work through pinned host buffers.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from honed.optimizer.tensors import TRITON_DTYPES, TensorSpec

Feeds = dict[str, np.ndarray]
STAGES = ("queue", "compute_input", "compute_infer", "compute_output", "success")


def model_stats(http_url: str, model: str) -> dict[str, Any]:
    """Triton's cumulative statistics for ``model`` (its first version listed)."""
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=10) as response:
        stats: dict[str, Any] = json.loads(response.read())["model_stats"][0]
    return stats


def stats_per_request(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Microseconds per request in each stage between two ``model_stats`` readings, and executions."""
    out: dict[str, float] = {}
    for stage in STAGES:
        count = int(after["inference_stats"][stage]["count"]) - int(before["inference_stats"][stage]["count"])
        ns = int(after["inference_stats"][stage]["ns"]) - int(before["inference_stats"][stage]["ns"])
        out[f"{stage}_us"] = round(ns / count / 1000, 1) if count else float("nan")
    out["requests"] = int(after["inference_stats"]["success"]["count"]) - int(
        before["inference_stats"]["success"]["count"]
    )
    out["executions"] = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    return out


def _dims(spec: TensorSpec, batching: bool) -> list[int]:
    dims = spec.shape[1:] if batching else spec.shape
    return [d if d > 0 else 1 for d in dims]


def echo_config(
    name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], *, max_batch_size: int, small: bool
) -> str:
    """config.pbtxt for echo_model.py: the real inputs; the real outputs, or one float each when ``small``."""
    batching = max_batch_size > 0
    lines = [f'name: "{name}"', 'backend: "python"', f"max_batch_size: {max_batch_size}"]
    for spec in inputs:
        dims = ", ".join(str(d) for d in (spec.shape[1:] if batching else spec.shape))
        lines.append(f'input {{ name: "{spec.name}" data_type: {TRITON_DTYPES[spec.dtype]} dims: [ {dims} ] }}')
    for spec in outputs:
        dims = "1" if small else ", ".join(str(d) for d in _dims(spec, batching))
        lines.append(f'output {{ name: "{spec.name}" data_type: {TRITON_DTYPES[spec.dtype]} dims: [ {dims} ] }}')
    lines.append("instance_group { count: 1 kind: KIND_CPU }")
    return "\n".join(lines) + "\n"


def _percentiles(latencies: list[float], seconds: float, errors: list[str]) -> dict[str, Any]:
    values = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "requests": len(latencies),
        "items_per_s": len(latencies) / seconds,
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def _timed_loop(call: Callable[[int], None], seconds: float, warmup_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    window = (start + warmup_s, start + warmup_s + seconds)
    i = 0
    while (now := time.perf_counter()) < window[1]:
        try:
            call(i)
        except Exception as exc:  # counted and reported, whatever the cause
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            end = time.perf_counter()
            if end >= window[0]:
                latencies.append((end - now) * 1000)
        i += 1
    return _percentiles(latencies, seconds, errors)


def drive_raw(grpc_url: str, model: str, feeds: list[Feeds], *, seconds: float, warmup_s: float) -> dict[str, Any]:
    """One caller on gRPC's generated stub, each request built once; outputs read as NumPy views."""
    import grpc  # type: ignore[import-untyped]
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    channel = grpc.insecure_channel(
        grpc_url, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    )
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    requests = []
    for feed in feeds:
        request = service_pb2.ModelInferRequest(model_name=model)
        for name, array in feed.items():
            tensor = request.inputs.add()
            tensor.name = name
            tensor.datatype = TRITON_DTYPES[array.dtype.name][5:]
            tensor.shape.extend(array.shape)
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
        requests.append(request)

    def call(i: int) -> None:
        response = stub.ModelInfer(requests[i % len(requests)])
        for raw in response.raw_output_contents:
            np.frombuffer(raw, dtype=np.uint8)

    try:
        return _timed_loop(call, seconds, warmup_s)
    finally:
        channel.close()


def drive_shm(
    grpc_url: str,
    model: str,
    feeds: list[Feeds],
    outputs: list[TensorSpec],
    *,
    seconds: float,
    warmup_s: float,
) -> dict[str, Any]:
    """One tritonclient caller with Triton writing the batch-1 outputs into system shared memory."""
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm

    from honed.serving.load import grpc_inputs

    shapes = [[1, *_dims(spec, True)] for spec in outputs]
    sizes = [
        int(np.prod(shape)) * np.dtype(spec.np_dtype()).itemsize for spec, shape in zip(outputs, shapes, strict=True)
    ]
    region = f"honed-out-{uuid.uuid4().hex[:8]}"
    handle = shm.create_shared_memory_region(region, f"/{region}", sum(sizes))
    client = grpcclient.InferenceServerClient(grpc_url)
    client.register_system_shared_memory(region, f"/{region}", sum(sizes))
    requested = []
    offset = 0
    for spec, size in zip(outputs, sizes, strict=True):
        out = grpcclient.InferRequestedOutput(spec.name)
        out.set_shared_memory(region, size, offset)
        requested.append(out)
        offset += size
    prepared = [grpc_inputs(feed) for feed in feeds]

    def call(i: int) -> None:
        client.infer(model, prepared[i % len(prepared)], outputs=requested)
        at = 0
        for spec, shape, size in zip(outputs, shapes, sizes, strict=True):
            shm.get_contents_as_numpy(handle, spec.np_dtype(), shape, offset=at)
            at += size

    try:
        return _timed_loop(call, seconds, warmup_s)
    finally:
        client.unregister_system_shared_memory(region)
        client.close()
        shm.destroy_shared_memory_region(handle)


def _median_ms(step: Callable[[], object], seconds: float) -> float:
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def runtime_parts(runner: Any, feed: Feeds, seconds: float) -> dict[str, float]:
    """The torch CUDA runner's batch-1 ``run`` taken apart, each part timed alone (median ms).

    ``run``: the whole call; ``copy_in``: the inputs from pageable host arrays into the captured
    graph's buffers; ``replay``: the graph and a synchronize; ``copy_out``: the outputs to new
    host arrays (``.cpu().numpy()``); ``pinned_run``: what ``run`` does, with the inputs staged
    through pinned host buffers, the outputs copied into pinned buffers without blocking, one
    synchronize and a NumPy copy of each output.
    """
    import torch

    specs = runner.inputs
    arrays = [np.ascontiguousarray(feed[s.name], dtype=s.np_dtype()) for s in specs]
    n = arrays[0].shape[0]
    graph, static_in, static_out = runner._graphs[runner._bucket_for(n)]
    host_in = [torch.empty(buf.shape, dtype=buf.dtype, pin_memory=True) for buf in static_in]
    host_out = [torch.empty(out.shape, dtype=out.dtype, pin_memory=True) for out in static_out]
    stream = torch.cuda.current_stream()

    def copy_in() -> None:
        for buf, arr in zip(static_in, arrays, strict=True):
            buf[:n].copy_(torch.from_numpy(arr))
        stream.synchronize()

    def replay() -> None:
        graph.replay()
        stream.synchronize()

    def copy_out() -> None:
        [o[:n].cpu().numpy() for o in static_out]

    def pinned_run() -> None:
        for host, buf, arr in zip(host_in, static_in, arrays, strict=True):
            host[:n].numpy()[...] = arr
            buf[:n].copy_(host[:n], non_blocking=True)
        graph.replay()
        for host, out in zip(host_out, static_out, strict=True):
            host[:n].copy_(out[:n], non_blocking=True)
        stream.synchronize()
        [host[:n].numpy().copy() for host in host_out]

    with torch.no_grad():
        return {
            "run_ms": _median_ms(lambda: runner.run(feed), seconds),
            "copy_in_ms": _median_ms(copy_in, seconds / 2),
            "replay_ms": _median_ms(replay, seconds / 2),
            "copy_out_ms": _median_ms(copy_out, seconds / 2),
            "pinned_run_ms": _median_ms(pinned_run, seconds),
        }
