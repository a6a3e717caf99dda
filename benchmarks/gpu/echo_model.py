"""A Triton python-backend model that answers zeros of its configured outputs and computes nothing.

serve_triton.py serves it beside the real model, with the same inputs and outputs (or tiny
outputs), to measure what the serving path costs by itself: the client, gRPC, Triton's core and
the python backend's IPC, with the tensors crossing it exactly as honed's model.py hands them over
(DLPack in and out).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

for _entry in reversed([entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from honed.serving.triton_model import to_triton  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [spec["name"] for spec in config["input"]]
        self.outputs = [
            (spec["name"], pb_utils.triton_string_to_numpy(spec["data_type"]), [int(d) for d in spec["dims"]])
            for spec in config["output"]
        ]
        self.zeros: dict[int, list[np.ndarray]] = {}

    def _zeros(self, batch: int) -> list[np.ndarray]:
        if batch not in self.zeros:
            lead = [batch] if self.batching else []
            self.zeros[batch] = [np.zeros(lead + dims, dtype) for _, dtype, dims in self.outputs]
        return self.zeros[batch]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            feeds = [np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name)) for name in self.inputs]
            batch = feeds[0].shape[0] if self.batching else 1
            arrays = self._zeros(batch)
            responses.append(
                pb_utils.InferenceResponse(
                    [to_triton(name, array) for (name, _, _), array in zip(self.outputs, arrays, strict=True)]
                )
            )
        return responses

    def finalize(self) -> None:
        self.zeros.clear()
