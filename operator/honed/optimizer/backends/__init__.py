"""Backend registry: each entry is a module following ``backends.base``'s contract."""

from __future__ import annotations

import importlib
from types import ModuleType

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


def backend_module(name: str, device: str = "cpu") -> ModuleType:
    table = GPU_BACKEND_MODULES if device == "cuda" else BACKEND_MODULES
    return importlib.import_module(table[name])


def device_backends(device: str) -> list[str]:
    """Backends that have a module for ``device`` (whether their runtime is installed or not)."""
    return sorted(GPU_BACKEND_MODULES if device == "cuda" else BACKEND_MODULES)


def known_backends() -> list[str]:
    return sorted(set(BACKEND_MODULES) | set(GPU_BACKEND_MODULES))
