"""``honed crd`` and ``honed operator``: parsers and run functions (wired into honed.cli)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from honed.api.crd import CRD_FILE, render_crd, write_crds
from honed.controller.settings import HonedSettings, load_settings
from honed.errors import InputError

DEFAULT_CRD_DIR = Path("crds")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``honed crd`` and ``honed operator`` to the ``honed`` command."""
    crd = subparsers.add_parser(
        "crd",
        help="write the OptimizedModel CRD generated from honed's API models",
        description="Render the CustomResourceDefinition from honed.api into DIR/" + CRD_FILE + ".",
    )
    crd.add_argument("--out", type=Path, default=DEFAULT_CRD_DIR, help="directory to write (default: crds)")
    crd.add_argument("--stdout", action="store_true", help="print the YAML instead of writing it")
    crd.add_argument("--check", action="store_true", help="write nothing; exit 1 when DIR holds a different CRD (CI)")
    crd.add_argument("--reference", type=Path, metavar="DOCS", help="also write DOCS/crd-reference.md")
    crd.set_defaults(handler=run_crd)

    operator = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (configured by HONED_* environment variables)",
        description="Watch OptimizedModel resources: optimize on node pools, select, serve on Triton.",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="namespace to watch (repeatable); default: HONED_WATCH_NAMESPACES, else all",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    operator.set_defaults(handler=run_operator)


def run_crd(args: argparse.Namespace) -> int:
    """``honed crd``: write (or with ``--check`` compare) the CRD; exit code 1 when ``--check`` finds a drift."""
    text = render_crd()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    path = args.out / CRD_FILE
    if args.check:
        if not path.is_file() or path.read_text() != text:
            print(f"{path} differs from the API models; regenerate it with `honed crd --out {args.out}`")
            return 1
        print(f"{path} is up to date")
        return 0
    written = write_crds(args.out)
    print(f"wrote {written}")
    if getattr(args, "reference", None) is not None:
        from honed.api.reference import write_reference

        print(f"wrote {write_reference(args.reference)}")
    return 0


def watch_scope(args: argparse.Namespace, settings: HonedSettings) -> tuple[bool, list[str]]:
    """(clusterwide, namespaces) from the flags, falling back to HONED_WATCH_NAMESPACES."""
    if getattr(args, "all_namespaces", False):
        return True, []
    namespaces = list(getattr(args, "namespace", None) or settings.watch_namespaces)
    return (not namespaces), namespaces


def run_operator(args: argparse.Namespace) -> int:
    """``honed operator``: run the operator until SIGINT or SIGTERM; InputError when HONED_POOLS is empty."""
    import kopf  # the operator extra; `honed optimize` must work without it

    from honed.controller import handlers, operator_metrics
    from honed.controller.stored_repository import write_repository

    settings = load_settings()
    if not settings.pools:
        raise InputError("HONED_POOLS lists no node pools", hint="define pools in the chart's values")
    kopf.configure(verbose=settings.log_level == "DEBUG", quiet=settings.log_level in ("WARNING", "ERROR"))
    logging.getLogger("honed").setLevel(settings.log_level)
    clusterwide, namespaces = watch_scope(args, settings)
    operator_metrics.serve(settings.metrics_port)
    operator = handlers.Operator(
        settings, handlers.default_login, write_repository, namespaces=None if clusterwide else namespaces
    )
    kopf_settings = kopf.OperatorSettings()
    handlers.configure(kopf_settings, settings)
    kopf_settings.scanning.disabled = not settings.cluster_scanning
    # kopf installs its own SIGINT/SIGTERM handling and returns after a graceful stop.
    asyncio.run(
        kopf.operator(
            registry=handlers.build_registry(operator),
            settings=kopf_settings,
            clusterwide=clusterwide,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        )
    )
    return 0
