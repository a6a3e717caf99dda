"""`python -m honed.demo`: train the digits CNN, optimize it, then serve the winner on Triton."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from honed.errors import HonedError


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when a winner was found (and, unless --no-serve, Triton served it well)."""
    parser = argparse.ArgumentParser(prog="honed-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--time-budget", default="8m")
    parser.add_argument("--no-serve", action="store_true", help="stop after optimizing")
    args = parser.parse_args(argv)
    os.environ.setdefault("HONED_DEMO_DIR", str(args.out / "model"))

    from honed.demo import digits
    from honed.optimizer.cli import time_budget
    from honed.optimizer.options import OptimizeOptions
    from honed.optimizer.pipeline import optimize
    from honed.optimizer.plot import plot_report
    from honed.optimizer.progress import Progress
    from honed.optimizer.table import print_report

    progress = Progress()
    try:
        progress.step("training a CNN on scikit-learn's handwritten digits (real data, ~10 s)")
        model, accuracy = digits.train()
        weights = digits.cache_dir() / "digits_cnn.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        import torch

        torch.save(model.state_dict(), weights)
        data = digits.write_validation(args.out / "model" / "digits_val.npz")
        progress.step(f"trained: validation accuracy {accuracy:.3f}; optimizing honed.demo.digits:trained_cnn")
        options = OptimizeOptions(
            model="honed.demo.digits:trained_cnn",
            data=str(data),
            max_metric_drop=0.005,
            time_budget_s=time_budget(args.time_budget),
            out=args.out / "optimized",
        )
        report = optimize(options, progress)
        plot_report(report, options.out / "latency-throughput.png")
        print_report(report)
        if report.winner is None:
            return 1
        if args.no_serve:
            return 0
        from honed.demo.serve import serve_and_probe

        return serve_and_probe(options.out, args.out / "triton", data, progress)
    except HonedError as exc:
        print(f"honed demo: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
