"""Triton python-backend model serving a honed artifact with the artifact's own runtime.

honed copies this file as ``model.py`` into every version directory of the runtime packaging,
next to ``artifact/`` (the candidate's files and ``honed-artifact.json``). The runtime is the
one that was benchmarked, loaded with ``honed.optimizer.artifact.load_runner``.

All requests of one ``execute`` call (one dynamic batch) go through ONE runtime call:
inputs are concatenated along the batch axis and the outputs split back per request. Requests
whose non-batch dimensions differ cannot share a call and run in groups of equal shape.

Tensors cross the python-backend boundary through DLPack, not ``as_numpy``/``Tensor(name,
array)``: the stub shipped with Triton 2.51 was built against NumPy 1.x and misreads NumPy 2
arrays (wrong data in, wrong byte sizes out), while DLPack is independent of NumPy's ABI.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

# Triton's python-backend stub does not read PYTHONPATH (seen with the 2.51 stub: the variable is
# in its environment, its sys.path lacks the entries), so what honed's launcher puts there (honed
# itself where it is not installed, the directory of module:factory models) would not import.
# Its entries go first on sys.path, in order, as Python would have put them.
for _entry in reversed([entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402  # provided by Triton's python backend

from honed.optimizer.artifact import load_runner, read_meta  # noqa: E402
from honed.optimizer.homedir import prepare_runtime_environment  # noqa: E402
from honed.optimizer.machine import effective_cpus  # noqa: E402
from honed.serving.tuning import instance_threads  # noqa: E402

# Triton renames a consumed capsule "used_dlpack", which NumPy's capsule destructor does not
# recognise (it then prints a ValueError per response). Triton has already taken ownership, so
# giving the capsule the standard consumed name keeps NumPy quiet without leaking anything.
_CONSUMED = b"used_dltensor"
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


def to_triton(name: str, array: np.ndarray) -> Any:
    """``array`` as Triton output tensor ``name``, handed over through DLPack (copied only if not contiguous)."""
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _CONSUMED)
    return tensor


def _threads(config: dict[str, Any], params: dict[str, str]) -> int:
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    configured = int(params["threads"]) if params.get("threads") else None
    return instance_threads(configured, instances, effective_cpus())


class TritonPythonModel:
    """The python backend's model: a honed artifact, run by its own runtime.

    The requests of one ``execute`` call run as one runtime call where their shapes allow.
    """

    def initialize(self, args: dict[str, str]) -> None:
        """Load the version's artifact, its runtime on this instance's share of the container's CPUs."""
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        artifact = Path(args["model_repository"]) / args["model_version"] / params.get("artifact", "artifact")
        # Triton pods often run with a read-only root filesystem; the runtime imported next
        # would otherwise try (and warn about) its cache directories under HOME.
        prepare_runtime_environment(cleanup=False)
        meta = read_meta(artifact)
        self.runner = load_runner(artifact, threads=_threads(config, params))
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [spec.name for spec in meta.inputs]
        self.outputs = [spec.name for spec in meta.outputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order.

        With batching on, requests whose samples have the same shape run as one runtime call; a call that
        fails answers each of its requests with the error instead of failing the model.
        """
        feeds = [self._feeds(request) for request in requests]
        responses: list[Any] = [None] * len(requests)
        for group in self._groups(feeds):
            try:
                results = self._run([feeds[i] for i in group])
            except Exception as exc:  # one failing batch must answer its requests, not kill the model
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                for i in group:
                    responses[i] = pb_utils.InferenceResponse(error=error)
                continue
            for i, outputs in zip(group, results, strict=True):
                responses[i] = pb_utils.InferenceResponse(
                    [to_triton(name, array) for name, array in zip(self.outputs, outputs, strict=True)]
                )
        return responses

    def _feeds(self, request: Any) -> dict[str, np.ndarray]:
        return {name: np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name)) for name in self.inputs}

    def _groups(self, feeds: list[dict[str, np.ndarray]]) -> list[list[int]]:
        if not self.batching:
            return [[i] for i in range(len(feeds))]
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, feed in enumerate(feeds):
            groups.setdefault(tuple(feed[name].shape[1:] for name in self.inputs), []).append(i)
        return list(groups.values())

    def _run(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        if len(feeds) == 1:
            return [self.runner.run(feeds[0])]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        batch = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
        outputs = self.runner.run(batch)
        bounds = np.cumsum(sizes)[:-1]
        pieces = [np.split(output, bounds) for output in outputs]
        return [[piece[k] for piece in pieces] for k in range(len(feeds))]

    def finalize(self) -> None:
        """Release the runtime."""
        del self.runner
