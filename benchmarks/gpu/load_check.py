"""Load one torch CUDA artifact in this (new) process and time it: the deployability proof.

Run by run.py with empty compiler cache directories, so any speed found here comes from the
artifact itself (its saved compiler cache), not from what the build left on the machine.
Prints one JSON line: load seconds, cache hits and misses, p50 per batch, outputs' agreement.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from honed.optimizer.artifact import read_meta
from honed.optimizer.backends import torch_cuda
from honed.optimizer.gpu_timing import summarize_ms
from honed.optimizer.validate import NonFiniteOutputError, compare


def agreement(expected: list[np.ndarray], got: list[np.ndarray]) -> dict[str, Any]:
    """How far this process's outputs are from the build process's, by the gate's scores (both 0 when identical)."""
    try:
        return {metric: compare(metric, expected, got, None).drop for metric in ("cosine", "max_abs_diff")}
    except NonFiniteOutputError as exc:
        return {"non_finite": str(exc)}


def progress(started: float, msg: str) -> None:
    print(f"[load_check] {time.perf_counter() - started:7.1f} s {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("feeds", type=Path, help="npz with feeds_<batch>_<input> and expected_<batch>_<i>")
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[load_check] %(relativeCreated)7.0f ms %(message)s"))
    logging.getLogger("honed").addHandler(handler)
    logging.getLogger("honed").setLevel(logging.INFO)

    started = time.perf_counter()
    meta = read_meta(args.artifact)
    progress(started, f"loading {meta.precision} {meta.variant}")
    runner = torch_cuda.load(meta, args.artifact, None)
    load_seconds = time.perf_counter() - started
    from honed.optimizer.backends.torch_cuda_runner import TorchCudaRunner  # loaded by now: costs no time

    assert isinstance(runner, TorchCudaRunner), "a built candidate, not the as-given baseline"
    progress(started, f"loaded: warm-up by batch {runner.warmup_seconds}, cache {runner.cache_info}")
    result: dict[str, Any] = {
        "load_seconds": round(load_seconds, 2),
        "cache": runner.cache_info,
        "warmup_seconds": runner.warmup_seconds,
        "batches": {},
    }
    with np.load(args.feeds) as data:
        batches = sorted({int(k.split("_")[1]) for k in data.files if k.startswith("feeds_")})
        for batch in batches:
            feeds = {s.name: data[f"feeds_{batch}_{s.name}"] for s in meta.inputs}
            expected = [data[f"expected_{batch}_{i}"] for i in range(len(meta.outputs))]
            got = runner.run(feeds)
            times = runner.time_batch(feeds, args.iters)
            progress(started, f"batch {batch} timed")
            result["batches"][str(batch)] = {
                "latency_ms": summarize_ms(times),
                "agreement_with_build_process": agreement(expected, got),
            }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
