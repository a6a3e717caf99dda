"""Backend registry: each entry is a module following ``backends.base.Backend``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from honed.optimizer.backends import onnxruntime, onnxruntime_cuda, openvino, tensorrt, torch, torch_cuda
    from honed.optimizer.backends.base import Backend

    # mypy checks every backend module against the contract here (a module can implement a protocol).
    _CONTRACT: tuple[Backend, ...] = (onnxruntime, openvino, torch, onnxruntime_cuda, torch_cuda, tensorrt)

# Order matters only for display; selection is by measurement.
BACKEND_MODULES: dict[str, str] = {
    "onnxruntime": "honed.optimizer.backends.onnxruntime",
    "openvino": "honed.optimizer.backends.openvino",
    "torch": "honed.optimizer.backends.torch",
}
# Modules that serve GPU device plans; a missing module just means no GPU candidates.
GPU_BACKEND_MODULES: dict[str, str] = {
    "onnxruntime": "honed.optimizer.backends.onnxruntime_cuda",
    "torch": "honed.optimizer.backends.torch_cuda",
    "tensorrt": "honed.optimizer.backends.tensorrt",
}


def backend_module(name: str, device: str = "cpu") -> Backend:
    """The module of backend ``name`` for ``device``, imported now; KeyError when it has none there."""
    table = GPU_BACKEND_MODULES if device == "cuda" else BACKEND_MODULES
    return cast("Backend", importlib.import_module(table[name]))


def device_backends(device: str) -> list[str]:
    """Backends that have a module for ``device`` (whether their runtime is installed or not)."""
    return sorted(GPU_BACKEND_MODULES if device == "cuda" else BACKEND_MODULES)


def known_backends() -> list[str]:
    """Every backend name, on any device."""
    return sorted(set(BACKEND_MODULES) | set(GPU_BACKEND_MODULES))
