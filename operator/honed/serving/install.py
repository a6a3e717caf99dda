"""Find a tritonserver binary and give it a backend directory with a working python backend.

Two sources, in order: ``HONED_TRITONSERVER`` (a binary, or a directory holding
``bin/tritonserver``, as in NGC images under /opt/tritonserver), then the server shipped inside
the ``nvidia-pytriton`` wheel, then ``tritonserver`` on PATH. The wheel ships the python backend
without its stub: the stub for the running Python version is copied into a private backend
directory (site-packages is never modified).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from honed.errors import EnvironmentProblem

TRITON_ENV = "HONED_TRITONSERVER"
STUB = "triton_python_backend_stub"
_FIX = (
    "run `make setup` (installs nvidia-pytriton==0.7.0, which ships tritonserver 2.51) "
    f"or set {TRITON_ENV}=/path/to/tritonserver"
)


@dataclass(frozen=True)
class TritonInstall:
    """Where a tritonserver install keeps its binary, backends, caches, shared libraries and python stubs."""

    binary: Path
    backends_dir: Path
    caches_dir: Path
    lib_dirs: tuple[Path, ...] = ()
    stubs_dir: Path | None = None  # python_backend_stubs/3.X/ when backends/python lacks its stub

    @property
    def has_python_stub(self) -> bool:
        """Whether the python backend's directory already holds its stub."""
        return (self.backends_dir / "python" / STUB).is_file()


def find_triton() -> TritonInstall:
    """Locate Triton or raise one EnvironmentProblem saying how to get it."""
    configured = os.environ.get(TRITON_ENV)
    if configured:
        return _from_binary(Path(configured), source=TRITON_ENV)
    wheel = _from_pytriton_wheel()
    if wheel is not None:
        return wheel
    on_path = shutil.which("tritonserver")
    if on_path:
        return _from_binary(Path(on_path), source="PATH")
    raise EnvironmentProblem("no tritonserver binary found", hint=_FIX)


def _from_binary(path: Path, *, source: str) -> TritonInstall:
    binary = path / "bin" / "tritonserver" if path.is_dir() else path
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise EnvironmentProblem(f"{source} points at {path}, which is not an executable tritonserver", hint=_FIX)
    root = binary.resolve().parent.parent
    stubs = root / "python_backend_stubs"
    return TritonInstall(
        binary=binary,
        backends_dir=root / "backends",
        caches_dir=root / "caches",
        lib_dirs=(),
        stubs_dir=stubs if stubs.is_dir() else None,
    )


def _from_pytriton_wheel() -> TritonInstall | None:
    # find_spec locates the package without importing it (pytriton's own imports pin numpy 1.x).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    libs = package.parent / "nvidia_pytriton.libs"
    return TritonInstall(
        binary=binary,
        backends_dir=root / "backends",
        caches_dir=root / "caches",
        lib_dirs=(libs,) if libs.is_dir() else (),
        stubs_dir=root / "python_backend_stubs",
    )


def prepare_backends(install: TritonInstall, work_dir: Path) -> Path:
    """Return a backend directory whose python backend has a stub for this Python."""
    if install.has_python_stub or not (install.backends_dir / "python").is_dir():
        return install.backends_dir
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stubs_dir / version / STUB if install.stubs_dir else None
    if stub is None or not stub.is_file():
        shipped = sorted(p.name for p in install.stubs_dir.iterdir()) if install.stubs_dir else []
        raise EnvironmentProblem(
            f"Triton's python backend has no stub for Python {version} (stubs for: {', '.join(shipped) or 'none'})",
            hint="run honed with one of those Python versions, or point "
            f"{TRITON_ENV} at a Triton whose backends/python holds {STUB}",
        )
    target = work_dir / "backends"
    shutil.copytree(install.backends_dir, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, target / "python" / STUB)
    return target
