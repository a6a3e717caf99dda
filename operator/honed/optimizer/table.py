"""The console table (backend, precision, p50, p99, throughput, size, metric drop, verdict, speedup)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from honed.optimizer.report import Candidate, Report


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return "-"


def _ms(cand: Candidate, key: str) -> str:
    return "-" if cand.latency_ms is None else f"{getattr(cand.latency_ms, key):.3f}"


def build_table(report: Report) -> Table:
    """The candidate table: status, latency and throughput per batch size, metric drop, speedup, size."""
    batches = [str(b) for b in report.settings.batch_sizes]
    table = Table(
        title=f"honed: {report.model.source} on {report.device.cpu} ({report.device.threads} threads)",
        title_justify="left",
    )
    for column in ("candidate", "backend", "precision", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    for b in batches:
        table.add_column(f"items/s @{b}", justify="right")
    for column in ("size", "metric drop", "verdict", "speedup"):
        table.add_column(column, justify="right" if column in ("size", "speedup", "metric drop") else "left")
    order = sorted(
        report.candidates,
        key=lambda c: (c.status != "accepted", c.latency_ms.p50 if c.latency_ms else float("inf")),
    )
    for cand in order:
        verdict: str = cand.status
        if cand.name == report.winner:
            verdict = "[bold green]WINNER[/]"
        elif cand.name == report.baseline.name:
            verdict = f"{cand.status} (baseline)"
        drop = "-" if cand.metric is None else f"{cand.metric.drop:.4f}"
        precision = f"{cand.precision} ({cand.variant})" if cand.variant and cand.backend != "torch" else cand.precision
        speed = "-" if cand.speedup is None else f"{cand.speedup:.2f}x"
        table.add_row(
            cand.name,
            cand.backend,
            precision,
            _ms(cand, "p50"),
            _ms(cand, "p99"),
            *[f"{cand.throughput[b]:.1f}" if b in cand.throughput else "-" for b in batches],
            _size(cand.size_bytes),
            drop,
            verdict,
            speed,
        )
    return table


def print_report(report: Report, console: Console | None = None) -> None:
    """Print the table and, under it, why each candidate lost, what was skipped and the notes."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # logs and CI: never squash the table into 80 columns
    console.print(build_table(report))
    for cand in report.candidates:
        if cand.status != "accepted" and cand.reason:
            console.print(f"  [yellow]{cand.name}[/]: {cand.reason}", highlight=False)
    for skip in report.skipped:
        console.print(f"  [dim]skipped {skip.name}: {skip.reason}[/]", highlight=False)
    for note in report.notes:
        console.print(f"  note: {note}", highlight=False)
    if report.baseline.settings:
        shown = ", ".join(f"{key}={value}" for key, value in report.baseline.settings.items())
        console.print(f"  baseline {report.baseline.name} ran as: {shown}", highlight=False)
    winner = report.winner_candidate()
    if winner is not None and winner.name == report.baseline.name:
        console.print(
            f"winner: the baseline [bold]{winner.name}[/] itself: no candidate beat it within the constraints "
            f"(artifact: {winner.artifact})",
            highlight=False,
        )
    elif winner is not None:
        console.print(
            f"winner: [bold]{winner.name}[/] {winner.speedup or 1:.2f}x faster than "
            f"{report.baseline.name} at batch 1 (artifact: {winner.artifact})",
            highlight=False,
        )
    else:
        console.print("[red]no winner[/]: no candidate met the constraints", highlight=False)
