"""Roll a freshly written version out on a running Triton, keeping the old one if it fails.

The new version is loaded with its OWN config (Triton's load API takes a config in place of
config.pbtxt), which names only that version: Triton loads it, swaps traffic to it once it is
READY (its warmup requests passed) and only then unloads the previous version; a failed load
leaves the previous version serving untouched. Only then is config.pbtxt pointed at the new
version, so a restarted server never loads a version that did not load here. A version that
fails is moved aside with its config, and config.pbtxt still names the version that serves.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.errors import HonedError
from honed.serving.repository import (
    WrittenVersion,
    discard_version,
    promote_version,
    prune_versions,
    write_version,
)
from honed.serving.server import Endpoints, ModelLoadError, TritonControl, TritonServer
from honed.serving.tuning import ServingOptions

STATE_FILE = ".honed-server.json"
LOCK_FILE = ".honed.lock"


class VersionRejected(HonedError):
    """Triton refused the new version; says which version (if any) keeps serving and why."""

    exit_code = 4


@dataclass(frozen=True)
class RollOut:
    """A version now serving, the versions it took over from, and those pruned from the repository."""

    model: str
    version: int
    retired: tuple[int, ...]
    pruned: tuple[int, ...]


def roll_out(control: TritonControl, written: WrittenVersion, *, keep_versions: int = 2) -> RollOut:
    """Load ``written`` on the server; on failure restore the repository and raise VersionRejected."""
    before = ready_versions(control, written.model)
    try:
        control.load_model(written.model, config=written.config_text)
        if not control.is_model_ready(written.model, written.version):
            raise ModelLoadError(f"version {written.version} is not ready after loading")
    except ModelLoadError as exc:
        reason = exc.message
        discard_version(written, reason)
        # Triton appends the python stack ("At: ..."); the full text stays in failure.txt.
        reason = reason.split("\n\nAt:")[0].strip()
        serving = ready_versions(control, written.model)
        keeps = f"version {max(serving)} keeps serving" if serving else "no version of it is serving"
        raise VersionRejected(
            f"version {written.version} of model {written.model!r} failed to load; {keeps}. Triton said: {reason}",
            hint=f"the refused files are in {written.model_dir / f'failed-{written.version}'}",
        ) from None
    promote_version(written)
    retired = tuple(v for v in before if v != written.version)
    # The versions that served until now loaded here: keep them, a rollback can reload them.
    pruned = tuple(prune_versions(written.model_dir, keep_versions, protect=before))
    return RollOut(written.model, written.version, retired, pruned)


def ready_versions(control: TritonControl, model: str) -> list[int]:
    """The versions of ``model`` that Triton reports READY, ascending."""
    return sorted(int(s.version) for s in control.model_states(model) if s.state == "READY" and s.version.isdigit())


@contextmanager
def repository_lock(repository: Path) -> Iterator[None]:
    """Serialise writers of one repository (two `honed serve` runs racing for version numbers)."""
    repository.mkdir(parents=True, exist_ok=True)
    with open(repository / LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_server(repository: Path, pid: int, endpoints: Endpoints) -> None:
    """Tell later `honed serve` runs on this repository which server already serves it."""
    state = {
        "pid": pid,
        "host": endpoints.host,
        "http_port": endpoints.http_port,
        "grpc_port": endpoints.grpc_port,
        "metrics_port": endpoints.metrics_port,
    }
    (repository / STATE_FILE).write_text(json.dumps(state) + "\n")


def forget_server(repository: Path, pid: int) -> None:
    """Remove the repository's record of server ``pid``, if the record is still that server's."""
    path = repository / STATE_FILE
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass  # no record, or an unreadable one: nothing names this server, so nothing to forget


def running_server(repository: Path) -> TritonControl | None:
    """The live server a previous `honed serve` started on this repository, if it still runs."""
    path = repository / STATE_FILE
    try:
        state = json.loads(path.read_text())
        pid = int(state["pid"])
        endpoints = Endpoints(
            state["host"], int(state["http_port"]), int(state["grpc_port"]), int(state["metrics_port"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else; its HTTP answer decides
    control = TritonControl(endpoints)
    return control if control.is_live() else None


@contextmanager
def serve_report(
    report: Path,
    repository: Path,
    *,
    model: str | None = None,
    options: ServingOptions | None = None,
    **server_options: Any,
) -> Iterator[tuple[TritonServer, WrittenVersion]]:
    """Write ``report``'s winner as a new version, start Triton on the repository and load it.

    For demos and tests: ``with serve_report(dir, repo, http_port=0) as (server, written): ...``;
    ``server_options`` go to TritonServer (ports 0 = pick free ones). Stops the server on exit.
    """
    with repository_lock(repository):
        written = write_version(report, repository, model=model, options=options)
    with TritonServer(repository, **server_options) as server:
        roll_out(server, written)
        yield server, written
