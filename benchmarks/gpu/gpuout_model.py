"""honed's Triton model.py, but handing Triton the outputs as GPU tensors (DLPack), not host arrays.

A serve_triton.py variant (no batching, batch-1 requests): the inputs go into the captured graph's
buffers as the runtime's ``run`` puts them, the graph replays, and each output is cloned on the
GPU and given to Triton through DLPack, so the python backend and Triton's core move it to the
host for the gRPC response instead of the runtime's ``.cpu()`` and the stub's copy into shared
memory. It only measures whether that path is cheaper.
"""

from __future__ import annotations

import os
import sys
from typing import Any

for _entry in reversed([entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from torch.utils.dlpack import to_dlpack  # type: ignore[attr-defined]  # noqa: E402

from honed.serving import triton_model as base  # noqa: E402


class TritonPythonModel(base.TritonPythonModel):
    def execute(self, requests: list[Any]) -> list[Any]:
        runner: Any = self.runner
        responses = []
        for request in requests:
            feed = self._feeds(request)
            arrays = [np.ascontiguousarray(feed[s.name], dtype=s.np_dtype()) for s in runner.inputs]
            n = arrays[0].shape[0]
            graph, static_in, static_out = runner._graphs[runner._bucket_for(n)]
            with torch.no_grad():
                for buf, arr in zip(static_in, arrays, strict=True):
                    buf[:n].copy_(torch.from_numpy(arr))
                graph.replay()
                outs = [out[:n].clone() for out in static_out]
            torch.cuda.current_stream().synchronize()
            tensors = [
                pb_utils.Tensor.from_dlpack(name, to_dlpack(out)) for name, out in zip(self.outputs, outs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
