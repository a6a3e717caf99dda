"""Where runtimes may write their caches and settings: $HOME, or a private temp dir when it is read-only.

ONNX Runtime's Linux wheels (1.31) also report usage to Microsoft unless told not to, and leave a
``.ses`` session file in the temp dir of every process that imports them. An optimizer Job or a
Triton model in a customer's cluster must not phone home on their behalf, so
``prepare_runtime_environment`` turns that off (``ORT_DISABLE_TELEMETRY=1``) unless the user set
the variable. OpenVINO's telemetry asks for consent first and never gets it non-interactively.

Runtimes write beside the user's home without being asked: ONNX Runtime persists a telemetry
device id under ``$XDG_CACHE_HOME`` (``~/.cache``), OpenVINO's telemetry (through NNCF) creates
``~/intel``, matplotlib wants ``~/.config/matplotlib`` and ``~/.cache/matplotlib``, torch and
Hugging Face cache under ``~/.cache``. In a container with a read-only root filesystem (or a
HOME that does not exist) each of them warns, and some retry on every import. When HOME is not
writable, ``use_writable_home`` points all of them at one private directory under the temp dir,
before any runtime is imported; child processes (candidate workers) inherit it. Credentials that
tools look up under the real HOME stay where they are.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

# Tools that find their files through these variables get the private directory.
REDIRECTED = {
    "XDG_CACHE_HOME": ".cache",
    "XDG_CONFIG_HOME": ".config",
    "MPLCONFIGDIR": ".config/matplotlib",
}
# Files read from the real HOME that must keep working when HOME moves (s3:// stores).
KEPT = {"AWS_SHARED_CREDENTIALS_FILE": ".aws/credentials", "AWS_CONFIG_FILE": ".aws/config"}


def writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (tried, not inferred: root ignores mode bits)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def prepare_runtime_environment(environ: MutableMapping[str, str] | None = None, *, cleanup: bool = True) -> None:
    """Call before any runtime is imported: telemetry off, and a writable home (``use_writable_home``)."""
    env = os.environ if environ is None else environ
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")
    use_writable_home(env, cleanup=cleanup)


def use_writable_home(environ: MutableMapping[str, str] | None = None, *, cleanup: bool = True) -> Path | None:
    """Point HOME and the cache/config variables at a private temp dir when HOME is not writable.

    Returns the directory used, or None when HOME is writable (nothing changes). Variables the
    user set to a writable place are kept.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or "/nonexistent")
    if home.is_dir() and writable(home):
        return None
    private = Path(tempfile.mkdtemp(prefix="honed-home-"))
    if cleanup:
        atexit.register(shutil.rmtree, private, ignore_errors=True)
    for var, relative in KEPT.items():
        if var not in env and (home / relative).is_file():
            env[var] = str(home / relative)
    for var, relative in REDIRECTED.items():
        current = env.get(var)
        if current and Path(current).is_dir() and writable(Path(current)):
            continue
        target = private / relative
        target.mkdir(parents=True, exist_ok=True)
        env[var] = str(target)
    # OpenVINO's telemetry only knows Path.home(), which is $HOME.
    env["HOME"] = str(private)
    return private
