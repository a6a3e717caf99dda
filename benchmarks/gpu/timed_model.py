"""honed's Triton model.py with clocks around its parts, for serve_triton.py's split of a request.

It runs honed's own ``TritonPythonModel`` unchanged and records, per ``execute`` call: the whole
call, reading the inputs (DLPack to NumPy), the runtime's ``run``, handing the outputs over
(``to_triton``), and the gap since the previous call returned (at concurrency 1: everything the
request spends outside model.py, in the python backend, Triton's core, gRPC and the client).
Medians go to the JSON file named by the config parameter ``timing_path`` every 50 calls or 0.5 s.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

for _entry in reversed([entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

from honed.serving import triton_model as base  # noqa: E402

PARTS = ("execute", "feeds", "run", "outputs", "gap")


class TritonPythonModel(base.TritonPythonModel):
    def initialize(self, args: dict[str, str]) -> None:
        super().initialize(args)
        config = json.loads(args["model_config"])
        self.timing_path = config["parameters"]["timing_path"]["string_value"]
        self.samples: dict[str, list[float]] = {part: [] for part in PARTS}
        self.current: dict[str, float] = {}
        self.last_end: float | None = None
        self.last_dump = time.perf_counter()
        run = self.runner.run
        convert = base.to_triton

        def timed_run(feeds: Any) -> Any:
            started = time.perf_counter()
            try:
                return run(feeds)
            finally:
                self.current["run"] += time.perf_counter() - started

        def timed_to_triton(name: str, array: Any) -> Any:
            started = time.perf_counter()
            try:
                return convert(name, array)
            finally:
                self.current["outputs"] += time.perf_counter() - started

        self.runner.run = timed_run  # type: ignore[method-assign]
        base.to_triton = timed_to_triton  # execute looks the module's to_triton up at each call

    def _feeds(self, request: Any) -> Any:
        started = time.perf_counter()
        try:
            return super()._feeds(request)
        finally:
            self.current["feeds"] += time.perf_counter() - started

    def execute(self, requests: list[Any]) -> list[Any]:
        started = time.perf_counter()
        self.current = {"feeds": 0.0, "run": 0.0, "outputs": 0.0}
        responses = super().execute(requests)
        end = time.perf_counter()
        for part, seconds in self.current.items():
            self.samples[part].append(seconds)
        self.samples["execute"].append(end - started)
        if self.last_end is not None:
            self.samples["gap"].append(started - self.last_end)
        self.last_end = end
        if len(self.samples["execute"]) % 50 == 0 or end - self.last_dump > 0.5:
            self.dump()
            self.last_dump = end
        return responses

    def dump(self) -> None:
        # The last 2,000 calls: this model is only ever driven at concurrency 1.
        medians = {
            f"{part}_us": round(statistics.median(values[-2000:]) * 1e6, 1)
            for part, values in self.samples.items()
            if values
        }
        record = {"calls": len(self.samples["execute"]), **medians}
        with open(self.timing_path, "w") as handle:
            json.dump(record, handle)

    def finalize(self) -> None:
        self.dump()
        super().finalize()
