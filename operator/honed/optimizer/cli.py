"""`honed optimize` and `honed report` argument parsing and entry points."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from honed.api.durations import DURATION_FORM, format_duration, parse_duration
from honed.api.spec import Metric
from honed.errors import InputError
from honed.optimizer.options import OBJECTIVES, OptimizeOptions
from honed.optimizer.tensors import parse_input_option


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def time_budget(text: str) -> float:
    """Seconds in ``--time-budget``: a duration (``honed.api.durations``), or a bare number of seconds."""
    given = text.strip()
    try:
        return parse_duration(float(given) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", given) else given)
    except ValueError:
        raise InputError(f"time budget {text!r} is not a duration", hint=DURATION_FORM) from None


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``honed optimize`` and ``honed report`` to the CLI's subcommands."""
    p = sub.add_parser(
        "optimize",
        help="search runtimes and precisions for the fastest accurate candidate",
        description="Convert MODEL, build candidates (backend x precision), check each against "
        "the original on DATA, time them and write DIR/report.json + artifacts.",
    )
    p.add_argument("model", nargs="?", help="an .onnx file, a TorchScript file, or module:factory for PyTorch")
    p.add_argument("--request", type=Path, help="JSON file with all options (used by the operator's Jobs)")
    p.add_argument("--data", type=Path, help=".npz with one array per input (+ optional 'labels')")
    p.add_argument("--metric", choices=get_args(Metric))
    # No defaults here: a flag left out takes OptimizeOptions' default, the one place it is defined.
    p.add_argument("--max-metric-drop", type=float, help=f"default {_default('max_metric_drop')}")
    p.add_argument("--objective", choices=OBJECTIVES, help=f"default {_default('objective')}")
    p.add_argument("--latency-budget-ms", type=float)
    p.add_argument("--batch-sizes", type=_int_list, help=f"default {_default('batch_sizes')}")
    p.add_argument("--precisions", type=_str_list, help=f"default {_default('precisions')}")
    p.add_argument("--backends", type=_str_list, help="default: every one the device supports")
    p.add_argument(
        "--time-budget",
        help=f"e.g. 90s, 10m, 1h30m, or seconds; default {format_duration(float(_default('time_budget_s')))}",
    )
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DTYPE:SHAPE",
        help="input spec, e.g. input_ids:int64:batch,128 or h0:float32:2,batch,64 ('batch' marks the batch axis; "
        "repeatable)",
    )
    p.add_argument("--threads", type=int, help="threads per candidate (default: physical cores)")
    p.add_argument("--device", choices=["cpu", "cuda"], help=f"default {_default('device')}")
    p.add_argument(
        "--measure-seconds",
        type=float,
        help=f"timed seconds per candidate and batch size; default {_default('measure_seconds')}",
    )
    p.add_argument(
        "--exhaustive",
        action="store_true",
        default=None,
        help="build every candidate, also those the figures measured so far say cannot win (by default "
        "they are skipped, and the report lists each with the figures)",
    )
    p.add_argument("--out", default=_default("out"), help="output directory, or a store URI (file://, s3://, pvc://)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=run_optimize)

    r = sub.add_parser("report", help="print the candidate table of a report")
    r.add_argument("report", type=Path, help="report.json or the directory holding it")
    r.add_argument("--json", action="store_true", help="print the winner as JSON instead of the table")
    r.set_defaults(handler=run_report)


def _default(name: str) -> str:
    default = OptimizeOptions.model_fields[name].get_default(call_default_factory=True)
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)


def options_from_args(args: argparse.Namespace) -> OptimizeOptions:
    """The typed options from the flags, or from ``--request`` (the operator's Jobs) plus ``--out``."""
    given: dict[str, Any] = {
        "model": args.model,
        "data": None if args.data is None else str(args.data),
        "metric": args.metric,
        "max_metric_drop": args.max_metric_drop,
        "objective": args.objective,
        "latency_budget_ms": args.latency_budget_ms,
        "batch_sizes": args.batch_sizes,
        "precisions": args.precisions,
        "backends": args.backends,
        "time_budget_s": None if args.time_budget is None else time_budget(args.time_budget),
        "out": args.out,
        "inputs": [parse_input_option(text) for text in args.input],
        "device": args.device,
        "measure_seconds": args.measure_seconds,
        "threads": args.threads,
        "exhaustive": args.exhaustive,
    }
    given = {key: value for key, value in given.items() if value is not None}
    try:
        if args.request is not None:
            from honed.api.request import load_request

            local = {key: given[key] for key in ("out", "measure_seconds", "threads", "exhaustive") if key in given}
            return OptimizeOptions.from_request(load_request(args.request), **local)
        if not given.get("model"):
            raise InputError(
                "no model given", hint="honed optimize MODEL (an .onnx, TorchScript file or module:factory)"
            )
        return OptimizeOptions.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "options"
        got = f" (got {first['input']!r})" if len(first["loc"]) > 1 else ""  # which list entry is wrong
        raise InputError(f"{field}: {first['msg']}{got}", hint="see honed optimize --help") from None


# `honed optimize` stopped by SIGTERM (128 + 15, what a shell reports for it).
TERMINATED_EXIT_CODE = 143


class Terminated(BaseException):
    """SIGTERM arrived: the Job's activeDeadlineSeconds passed, or its pod was deleted or evicted.

    A BaseException, so that no ``except Exception`` of a candidate's step swallows it: the search
    stops where it is, no report is written (a partial one would read as a finished search).
    """


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` while the search runs.

    In a Job's pod ``honed`` is PID 1, which the kernel shields from signals it does not handle:
    without a handler it would ignore the kubelet's SIGTERM and run on to the grace period's SIGKILL.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_children(wait_s: float = 5.0) -> None:
    """SIGTERM to this process's children, waiting a little for them to go.

    The children are the candidates' workers, one perhaps still starting, which would print a
    traceback once its parent's pipe closes. The multiprocessing resource tracker ignores SIGTERM
    and ends by itself once this process exits.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return
    me = os.getpid()

    def children() -> list[int]:
        found = []
        for stat in proc.glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
                tracker = b"resource_tracker" in (stat.parent / "cmdline").read_bytes()
                if int(ppid) == me and state != "Z" and not tracker:
                    found.append(int(stat.parent.name))
        return found

    for pid in children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    until = time.monotonic() + wait_s
    while time.monotonic() < until and children():
        time.sleep(0.05)


def run_optimize(args: argparse.Namespace) -> int:
    """``honed optimize``: fetch remote inputs, run the search, print the table, publish the results.

    Returns:
        The exit code: 0 with a winner, 1 without one (the report is written either way).
    """
    from honed.optimizer import remote
    from honed.optimizer.homedir import prepare_runtime_environment

    # Before any runtime is imported: they pick their cache and settings directories on import.
    prepare_runtime_environment()
    try:
        with _stop_on_sigterm():
            return _optimize(args)
    except InputError as exc:
        remote.write_termination_message(f"error: {exc}")
        raise
    except Terminated:
        why = "stopped by SIGTERM (the Job's deadline passed, or its pod was deleted) before the report was written"
        remote.write_termination_message(why)
        _stop_children()
        print(f"honed: {why}", file=sys.stderr)
        return TERMINATED_EXIT_CODE


def _optimize(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from honed.optimizer import remote

    out_uri = str(args.out)
    publish_to = out_uri if remote.is_remote(out_uri) else None
    args.out = Path(tempfile.mkdtemp(prefix="honed-run-")) if publish_to else Path(remote.local_path(out_uri))
    try:
        # Fetched inputs are only read during the run: a laptop's /tmp must not keep a copy of every
        # model it optimized.
        with tempfile.TemporaryDirectory(prefix="honed-inputs-") as inputs_dir:
            return _optimize_in(args, publish_to, Path(inputs_dir))
    finally:
        if publish_to:
            shutil.rmtree(args.out, ignore_errors=True)


def _optimize_in(args: argparse.Namespace, publish_to: str | None, inputs_dir: Path) -> int:
    from honed.optimizer import remote
    from honed.optimizer.pipeline import optimize
    from honed.optimizer.plot import plot_report
    from honed.optimizer.progress import Progress
    from honed.optimizer.table import print_report

    make_out_dir(args.out)
    options = options_from_args(args)
    if remote.is_remote(options.model):
        options.model = str(remote.fetch(options.model, inputs_dir, "model"))
    if options.data is not None and remote.is_remote(options.data):
        options.data = str(remote.fetch(options.data, inputs_dir, "data"))
    report = optimize(options, Progress(quiet=args.quiet))
    if not args.no_plot:
        plot_report(report, options.out / "latency-throughput.png")
    print_report(report)
    if publish_to:
        remote.publish(options.out, publish_to)
    print(f"report: {publish_to or options.out}/report.json")
    winner = report.winner_candidate()
    if winner is None:
        remote.write_termination_message(f"no winner: {report.notes[-1] if report.notes else 'no candidate'}")
        return 1
    remote.write_termination_message(
        f"winner {winner.name}: {winner.speedup or 1:.2f}x vs {report.baseline.name}, "
        f"p50 {winner.latency_ms.p50 if winner.latency_ms else 0:.3f} ms at batch 1"
    )
    return 0


def make_out_dir(out: Path) -> None:
    """Create --out before any work, so a bad path fails at once and names the option."""
    if out.exists() and not out.is_dir():
        raise InputError(
            f"--out {out} is an existing file, not a directory",
            hint=f"name a directory for the report and artifacts (created if missing), e.g. --out {out}.d",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # A parent of --out is a file: mkdir cannot go through it.
        raise InputError(
            f"--out {out} cannot be created: a parent path is a file",
            hint="name a directory whose parents are directories",
        ) from None
    except OSError as exc:
        raise InputError(
            f"--out {out} cannot be created ({exc.strerror or exc})", hint="name a directory you can write to"
        ) from None


def run_report(args: argparse.Namespace) -> int:
    """``honed report``: print a report's table, or its winner as JSON (``null`` without one)."""
    from honed.optimizer.report import load_report
    from honed.optimizer.table import print_report

    report = load_report(args.report)
    if args.json:
        winner = report.winner_candidate()
        print(json.dumps(None if winner is None else winner.model_dump(), indent=2))
    else:
        print_report(report)
    return 0
