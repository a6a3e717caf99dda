"""Start, drive and stop a local Triton Inference Server on a model repository.

Used by ``honed serve``, the serving tests, the feedback-loop tests and the operator's e2e test.
The public surface is small on purpose:

- ``TritonServer(repository, http_port=..., ...)``: a context manager; ``start()`` waits until
  the server is ready, ``stop()`` sends SIGTERM (SIGKILL after ``stop_timeout_s``) and removes any
  shared-memory segment the server left behind;
- ``load_model(name)`` / ``unload_model(name)`` through Triton's HTTP model-repository API
  (``tritonclient.http``);
  a failed load raises ``ModelLoadError`` carrying Triton's own reason;
- ``model_states(name)``, ``is_model_ready(name, version)``, ``metrics_text()``, ``log_tail()``;
- ``endpoints`` (HTTP, gRPC and metrics addresses) once started.

``TritonControl(endpoints)`` offers the same model-control calls for a server started elsewhere
(another `honed serve`, a Triton pod reached through a port-forward).

Ports given as 0 are picked free at start, which is what tests want. The control calls go
through ``tritonclient.http`` with one client per call: its gevent-based clients are not
thread-safe, and the load generator and tests call from several threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from honed.errors import EnvironmentProblem, HonedError
from honed.serving.config import config_json
from honed.serving.install import TritonInstall, find_triton, prepare_backends
from honed.serving.ports import claim_ports

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
SHM_DIR = Path("/dev/shm")


class ModelLoadError(HonedError):
    """Triton refused to load a model; the message carries Triton's reason."""


class PortsTaken(EnvironmentProblem):
    """Triton could not bind one of its ports."""


@dataclass(frozen=True)
class Endpoints:
    """Where a Triton listens: a host and its HTTP, gRPC and metrics ports."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http(self) -> str:
        """``host:port`` as tritonclient.http expects it."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        """``host:port`` as tritonclient.grpc expects it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """The HTTP API's base URL."""
        return f"http://{self.http}"

    @property
    def metrics_url(self) -> str:
        """The URL of Triton's Prometheus metrics."""
        return f"http://{self.host}:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class ModelState:
    """One row of Triton's repository index: a model version and its load state."""

    name: str
    version: str
    state: str  # READY | UNAVAILABLE | LOADING | UNLOADING
    reason: str = ""


class TritonControl:
    """Model control and health over Triton's HTTP API (``tritonclient.http``), for any running Triton."""

    def __init__(self, endpoints: Endpoints, *, load_timeout_s: float = 600.0) -> None:
        """Control the Triton at ``endpoints``; a model load may take up to ``load_timeout_s`` seconds."""
        self._endpoints: Endpoints | None = endpoints
        self.load_timeout_s = load_timeout_s

    @property
    def endpoints(self) -> Endpoints:
        """Where the server listens; RuntimeError for a TritonServer not started yet."""
        if self._endpoints is None:
            raise RuntimeError("the server has not been started")
        return self._endpoints

    def is_live(self) -> bool:
        """Whether Triton says it is live; False when it does not answer."""
        return self._answers(lambda client: bool(client.is_server_live()))

    def is_ready(self) -> bool:
        """Whether Triton says it is ready; False when it does not answer."""
        return self._answers(lambda client: bool(client.is_server_ready()))

    def load_model(self, name: str, config: str | None = None) -> None:
        """Load (or reload) ``name``; Triton keeps the loaded model serving if the reload fails.

        ``config`` (config.pbtxt text) is used instead of the repository's config.pbtxt.
        """
        from tritonclient.utils import InferenceServerException

        with self._client(self.load_timeout_s) as client:
            try:
                client.load_model(name, config=None if config is None else config_json(config))
            except InferenceServerException as exc:
                raise ModelLoadError(f"Triton could not load model {name!r}: {_reason(exc)}") from None

    def unload_model(self, name: str) -> None:
        """Unload ``name``; ModelLoadError when Triton refuses."""
        from tritonclient.utils import InferenceServerException

        with self._client(self.load_timeout_s) as client:
            try:
                client.unload_model(name)
            except InferenceServerException as exc:
                raise ModelLoadError(f"Triton could not unload model {name!r}: {_reason(exc)}") from None

    def model_states(self, name: str | None = None) -> list[ModelState]:
        """Triton's repository index, for ``name`` only when given; EnvironmentProblem when it fails."""
        from tritonclient.utils import InferenceServerException

        with self._client(30.0) as client:
            try:
                rows = client.get_model_repository_index() or []
            except InferenceServerException as exc:
                raise EnvironmentProblem(f"Triton's repository index failed: {_reason(exc)}") from None
        return [
            ModelState(r["name"], str(r.get("version", "")), r.get("state", ""), r.get("reason", ""))
            for r in rows
            if name is None or r["name"] == name
        ]

    def is_model_ready(self, name: str, version: str | int | None = None) -> bool:
        """Whether ``version`` of ``name`` is ready (None: the one Triton's policy picks); False without an answer."""
        version_text = "" if version is None else str(version)
        return self._answers(lambda client: bool(client.is_model_ready(name, version_text)))

    def metrics_text(self) -> str:
        """Triton's Prometheus metrics text; OSError (URLError) when it does not answer."""
        with urllib.request.urlopen(self.endpoints.metrics_url, timeout=10) as response:
            return str(response.read().decode())

    @contextlib.contextmanager
    def _client(self, timeout_s: float) -> Iterator[Any]:
        """A client for one call: tritonclient's clients are not thread-safe, and callers use threads."""
        import tritonclient.http

        try:
            client = tritonclient.http.InferenceServerClient(
                self.endpoints.http, connection_timeout=min(timeout_s, 5.0), network_timeout=timeout_s
            )
        except OSError as exc:
            raise EnvironmentProblem(f"Triton at {self.endpoints.http_url} did not answer: {exc}") from None
        try:
            yield client
        except OSError as exc:
            raise EnvironmentProblem(f"Triton at {self.endpoints.http_url} did not answer: {exc}") from None
        finally:
            client.close()

    def _answers(self, ask: Callable[[Any], bool]) -> bool:
        """``ask(client)``, or False when Triton does not answer (health probes never raise)."""
        from tritonclient.utils import InferenceServerException

        try:
            with self._client(5.0) as client:
                return ask(client)
        except (EnvironmentProblem, InferenceServerException):
            return False


class TritonServer(TritonControl):
    """A tritonserver process on ``repository`` with explicit model control.

    Flags follow what works with the pip-shipped server: explicit model control, the local
    response cache, summary latencies in the metrics, a unique python-backend shared-memory
    prefix (so parallel servers never share segments) and loopback addresses by default.
    """

    def __init__(
        self,
        repository: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        log_path: Path | None = None,
        install: TritonInstall | None = None,
        startup_timeout_s: float = 60.0,
        load_timeout_s: float = 600.0,
        stop_timeout_s: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Configure the server; nothing runs before ``start``, and ports given as 0 are picked then."""
        self.repository = Path(repository).resolve()
        self.host = host
        self._ports = (http_port, grpc_port, metrics_port)
        self.cache_bytes = cache_bytes
        self._log_path = log_path
        self._given_log_path = log_path
        self._install = install
        self.startup_timeout_s = startup_timeout_s
        self.load_timeout_s = load_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = list(extra_args)
        self.shm_prefix = f"honed{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._work: Path | None = None
        self._endpoints: Endpoints | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> TritonServer:
        """Start the server (see ``start``)."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()

    @property
    def pid(self) -> int | None:
        """The server process's id; None before ``start`` and after ``stop``."""
        return None if self._proc is None else self._proc.pid

    @property
    def log_path(self) -> Path:
        """The server's log file; RuntimeError when none was given and the server has not started."""
        if self._log_path is None:
            raise RuntimeError("the server has not been started")
        return self._log_path

    def running(self) -> bool:
        """Whether the server process is running."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> TritonServer:
        """Start tritonserver and wait until it is ready; returns the server.

        Ports given as 0 are picked free, and picked again (three tries) when another process takes one
        before Triton binds it.

        Raises:
            EnvironmentProblem: no Triton is installed, or it exited or did not become ready in time
                (``PortsTaken`` when its ports were in use).
            RuntimeError: the server is already started.
        """
        if self._proc is not None:
            raise RuntimeError("the server is already started")
        # Models are written into the repository later; an empty one is a fine start.
        self.repository.mkdir(parents=True, exist_ok=True)
        install = self._install or find_triton()
        # Ports picked free (0) can be taken by someone else before Triton binds them; pick again.
        attempts = 3 if 0 in self._ports else 1
        for attempt in range(attempts):
            try:
                return self._start_once(install)
            except PortsTaken:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, install: TritonInstall) -> TritonServer:
        self._endpoints = Endpoints(self.host, *claim_ports(self.host, self._ports))
        self._work = Path(tempfile.mkdtemp(prefix="honed-triton-"))
        try:
            log_path = self._given_log_path or self._work / "tritonserver.log"
            self._log_path = log_path
            backends = prepare_backends(install, self._work)
            command = [str(install.binary), *self._arguments(install, backends)]
            with open(log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=_server_environment(install),
                    start_new_session=True,
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _arguments(self, install: TritonInstall, backends: Path) -> list[str]:
        ep = self.endpoints
        args = [
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={ep.host}",
            f"--http-port={ep.http_port}",
            f"--grpc-address={ep.host}",
            f"--grpc-port={ep.grpc_port}",
            f"--metrics-address={ep.host}",
            f"--metrics-port={ep.metrics_port}",
            "--allow-gpu-metrics=false",
            "--metrics-config=summary_latencies=true",
            # A stuck request must not hold shutdown for Triton's default 30 s.
            "--exit-timeout-secs=10",
        ]
        if self.cache_bytes > 0:
            args += [
                f"--cache-config=local,size={self.cache_bytes}",
                f"--cache-directory={install.caches_dir}",
            ]
        return args + self.extra_args

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise self._exit_problem(code)
            if self.is_ready():
                return
            time.sleep(0.1)
        raise EnvironmentProblem(
            f"tritonserver did not become ready within {self.startup_timeout_s:.0f} s",
            hint=f"its log ends with:\n{self.log_tail(8)}",
        )

    def _exit_problem(self, code: int) -> EnvironmentProblem:
        tail = self.log_tail(12)
        if "already in use" in tail or "Address in use" in tail:
            ep = self.endpoints
            return PortsTaken(
                f"tritonserver could not bind its ports on {ep.host} "
                f"(http {ep.http_port}, grpc {ep.grpc_port}, metrics {ep.metrics_port}): address in use",
                hint="pick other ports (--http-port/--grpc-port/--metrics-port) or stop the other server",
            )
        return EnvironmentProblem(
            f"tritonserver exited with code {code} while starting",
            hint=f"its log ends with:\n{tail}",
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log, start-up tables left out; empty without a log."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace").splitlines()
        # Triton prints wide tables at start; they say nothing about a failure.
        useful = [line for line in text if not line.startswith(("+", "|"))]
        return "\n".join(useful[-lines:])

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL the process group if needed; remove leftover shm segments."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            # The python backend's stubs are in the server's session; none may outlive it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for segment in leftover_segments(self.shm_prefix):
            segment.unlink(missing_ok=True)
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None


def _reason(error: Exception) -> str:
    """Triton's own words from a tritonclient error (its JSON ``error`` field)."""
    message = getattr(error, "message", None)
    text = message() if callable(message) else str(error)
    return str(text or "").strip() or "no reason given"


def leftover_segments(prefix: str) -> list[Path]:
    """Shared-memory segments whose name starts with ``prefix`` (the python backend's regions)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def _server_environment(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(p) for p in install.lib_dirs]
    # The stub links libpython3.X.so: give it this interpreter's own, or it may pick a system one
    # of another patch release whose C extensions (ssl, ...) this interpreter's stdlib cannot load.
    libpython = Path(str(sysconfig.get_config_var("LIBDIR") or "")) / str(sysconfig.get_config_var("INSTSONAME") or "")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libpython.is_file():
        libs.insert(0, str(libpython.parent))
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    # The python backend's stub finds packages through the first python on PATH: make it this
    # interpreter's environment, and let it import what the starting process imports: the same
    # honed, and modules beside the working directory (model factories named as module:function).
    # The stub itself ignores PYTHONPATH; honed's model.py puts these entries on sys.path.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    honed_root = str(Path(__file__).resolve().parents[2])
    paths = [honed_root, os.getcwd(), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env
