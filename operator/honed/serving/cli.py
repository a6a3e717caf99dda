"""`honed serve DIR`: serve a report's winner on a local Triton, or swap it into a running one.

``add_parser(sub)`` registers the sub-command on honed's CLI and ``run(args)`` executes it;
errors are HonedError subclasses (the CLI prints them and exits non-zero).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from honed.errors import HonedError, InputError
from honed.optimizer.report import load_report
from honed.serving.install import find_triton
from honed.serving.local_rollout import (
    VersionRejected,
    forget_server,
    record_server,
    repository_lock,
    roll_out,
    running_server,
)
from honed.serving.ports import claim_ports
from honed.serving.repository import (
    PACKAGINGS,
    WrittenVersion,
    discard_version,
    select_candidate,
    served_version,
    version_config_name,
    write_version,
)
from honed.serving.server import DEFAULT_CACHE_BYTES, TritonServer
from honed.serving.tuning import ServingOptions

REPOSITORY_ENV = "HONED_MODEL_REPOSITORY"
LOG_FILE = "tritonserver.log"  # beside the models; Triton ignores files at the repository root


def default_repository() -> Path:
    """The repository without --repository: ``$HONED_MODEL_REPOSITORY``, else one in the XDG data directory."""
    if os.environ.get(REPOSITORY_ENV):
        return Path(os.environ[REPOSITORY_ENV])
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "honed" / "model-repository"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``honed serve`` to the CLI's subcommands; returns its parser."""
    parser = sub.add_parser(
        "serve",
        help="serve an optimization report's winner on Triton",
        description="Write the winner of DIR/report.json as a new version in a Triton model repository "
        "and serve it: start a local Triton (until Ctrl-C/SIGTERM), or, when `honed serve` "
        "already runs on that repository, swap the new version in and exit.",
    )
    parser.add_argument("report", type=Path, metavar="DIR", help="directory holding report.json (or the file)")
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help=f"Triton model repository (default: ${REPOSITORY_ENV} or ~/.local/share/honed/model-repository)",
    )
    parser.add_argument("--name", help="model name in the repository (default: the report's model name)")
    parser.add_argument("--candidate", help="serve this accepted candidate instead of the winner")
    parser.add_argument(
        "--packaging",
        choices=PACKAGINGS,
        default="runtime",
        help="runtime: python backend running the winner's runtime (default here); "
        "native: Triton's own backend, for NGC Triton images",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--cache-mb",
        type=int,
        default=DEFAULT_CACHE_BYTES // 2**20,
        help="response cache size in MiB (default %(default)s)",
    )
    parser.add_argument("--no-response-cache", action="store_true", help="do not cache responses")
    parser.add_argument("--no-dynamic-batching", action="store_true", help="run requests one by one")
    parser.add_argument("--max-queue-delay-us", type=int, help="override the derived queue delay")
    parser.add_argument("--max-batch-size", type=int, help="override the derived max batch size")
    parser.add_argument("--instances", type=int, help="model instances (default 1)")
    parser.add_argument("--write-only", action="store_true", help="write the new version into the repository and exit")
    parser.set_defaults(handler=run)
    return parser


def options_from(args: argparse.Namespace) -> ServingOptions:
    """The serving options from the flags; InputError naming the flag for a port or count out of range."""
    for flag in ("http_port", "grpc_port", "metrics_port"):
        if not 0 <= getattr(args, flag) <= 65535:
            raise InputError(
                f"--{flag.replace('_', '-')} {getattr(args, flag)} is not a port",
                hint="use 1-65535, or 0 to pick a free one",
            )
    for flag in ("max_queue_delay_us", "max_batch_size", "instances"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "max_queue_delay_us" else 1):
            raise InputError(
                f"--{flag.replace('_', '-')} {value} is out of range",
                hint="use a positive number (the queue delay may be 0)",
            )
    return ServingOptions(
        response_cache=not args.no_response_cache,
        dynamic_batching=not args.no_dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us,
        max_batch_size=args.max_batch_size,
        instances=args.instances,
    )


def run(args: argparse.Namespace) -> int:
    """``honed serve``: write the report's winner as a new version in the repository, and serve it.

    When a ``honed serve`` already runs on the repository, the version is rolled out there and this
    returns; otherwise a local Triton serves it until SIGINT or SIGTERM. ``--write-only`` only writes.

    Returns:
        The exit code: 1 when the first version failed to load or Triton exited on its own, else 0.
    """
    repository = (args.repository or default_repository()).resolve()
    options = options_from(args)
    # The report is the user's input: check it first, so its problem is the one reported.
    report_dir = args.report if args.report.is_dir() else args.report.parent
    select_candidate(load_report(args.report), report_dir, args.candidate)
    with repository_lock(repository):
        running = None if args.write_only else running_server(repository)
        if not args.write_only and running is None:
            # A missing binary or a busy port is reported before anything is written.
            find_triton()
            claim_ports(args.host, (args.http_port, args.grpc_port, args.metrics_port))
        written = write_version(
            args.report,
            repository,
            model=args.name,
            packaging=args.packaging,
            candidate=args.candidate,
            options=options,
        )
        _say(
            f"wrote {written.model} version {written.version} ({written.candidate}, {written.packaging}) "
            f"to {written.model_dir}"
        )
        for note in written.notes:
            _say(f"  {note}")
        if args.write_only:
            if not written.promoted:
                _say(
                    f"  not loaded yet, so config.pbtxt keeps serving version {served_version(written.model_dir)}; "
                    f"a Triton started with --model-config-name={version_config_name(written.version)} "
                    f"tries version {written.version} with its own config"
                )
            return 0
        if running is not None:
            result = roll_out(running, written)
            _say(
                f"{written.model} version {result.version} now serves on {running.endpoints.http_url}"
                + (f"; retired version {', '.join(map(str, result.retired))}" if result.retired else "")
            )
            return 0
        # Signals only set a flag from here on: a Ctrl-C while Triton starts must still stop it.
        stop = threading.Event()
        handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        server = TritonServer(
            repository,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            cache_bytes=args.cache_mb * 2**20,
            log_path=repository / LOG_FILE,
        )
        try:
            try:
                server.start()
            except HonedError as exc:
                discard_version(written, f"the server did not start: {exc.message}")
                raise
            failed = _first_roll_out(server, written)
            pid = server.pid
            assert pid is not None
            record_server(repository, pid, server.endpoints)
        except BaseException:
            server.stop()
            _restore(handlers)
            raise
    try:
        code = _serve_until_stopped(server, stop, failed)
    finally:
        server.stop()
        _restore(handlers)
        forget_server(repository, pid)
    _say("Triton stopped")
    return code


def _restore(handlers: dict[signal.Signals, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _first_roll_out(server: TritonServer, written: WrittenVersion) -> bool:
    """Load the new version on a fresh server; if Triton refuses it, serve the previous version.

    Returns True when the new version failed (the exit status then says so), raises when
    nothing can be served.
    """
    try:
        roll_out(server, written)
        return False
    except VersionRejected as exc:
        if served_version(written.model_dir) is None:
            raise
        _say(f"error: {exc}")
        try:
            server.load_model(written.model)  # config.pbtxt names the last version known to load
        except HonedError:
            raise exc from None
        _say(f"serving the previous version of {written.model} instead")
        return True


def _serve_until_stopped(server: TritonServer, stop: threading.Event, failed: bool) -> int:
    ep = server.endpoints
    _say(f"Triton is ready: http {ep.http_url}  grpc {ep.grpc}  metrics {ep.metrics_url}")
    _say(f"log: {server.log_path}; Ctrl-C or SIGTERM stops it")
    while not stop.wait(0.5):
        if not server.running():
            _say(f"error: tritonserver exited unexpectedly; its log ends with:\n{server.log_tail(10)}")
            return 1
    return 1 if failed else 0


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m honed.serving.cli serve DIR``), same behaviour as `honed serve`."""
    parser = argparse.ArgumentParser(prog="honed")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except HonedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
