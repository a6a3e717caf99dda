"""Latency-throughput plot (PNG): one line per candidate across the measured batch sizes."""

from __future__ import annotations

from pathlib import Path

from honed.optimizer.report import Report


def plot_report(report: Report, path: Path) -> Path | None:
    """Write the plot; returns None when matplotlib is not installed (the plot is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for cand in report.accepted():
        points = sorted((int(b), lat.p50, cand.throughput.get(b, 0.0)) for b, lat in cand.latency_by_batch_ms.items())
        if not points:
            continue
        style = "-o" if cand.name != report.winner else "-*"
        ax.plot(
            [p[1] for p in points],
            [p[2] for p in points],
            style,
            label=cand.name,
            linewidth=2.5 if cand.name == report.winner else 1.2,
        )
        for batch, lat, items in points:
            ax.annotate(f"b{batch}", (lat, items), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per call (ms, log)")
    ax.set_ylabel("throughput (items/s)")
    ax.set_title(f"{report.model.name}: latency vs throughput ({report.device.threads} threads)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
