"""How long should Triton's dynamic batcher hold a request for company? Queue delays compared, served.

The winner of a `honed optimize` report is served as `honed serve` would (runtime packaging, response
cache off), once per queue delay, all in one Triton: no delay, a tenth of the winner's batch-1 p50
(the rule honed used on CPUs before), and four times that. tritonclient gRPC callers keep 1, 8
and 32 requests in flight; each round visits every delay at every concurrency (the order rotated),
and the ratios to no delay are taken per round, medians quoted. Writes queue-delay.{json,md}.

    python benchmarks/serving/queue_delay.py --report DIR --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from honed.optimizer.report import load_report
from honed.serving.load import drive, sample_feeds
from honed.serving.local_rollout import roll_out
from honed.serving.repository import select_candidate, write_version
from honed.serving.server import TritonServer
from honed.serving.tuning import ServingOptions

CONCURRENCY = (1, 8, 32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, required=True, help="a `honed optimize` output directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    report = load_report(args.report)
    candidate, _ = select_candidate(report, args.report)
    batch1 = candidate.latency_ms.p50 if candidate.latency_ms else 1.0
    tenth = round(batch1 * 100)  # us: a tenth of the batch-1 p50 in ms
    delays = {"none": 0, "tenth": tenth, "4x tenth": 4 * tenth}
    feeds = sample_feeds(report.model.inputs, 32, seed=0)
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="honed-bench-delay-") as tmp:
        versions = {
            label: write_version(
                args.report,
                Path(tmp),
                model=f"delay{delay}",
                options=ServingOptions(response_cache=False, max_queue_delay_us=delay),
            )
            for label, delay in delays.items()
        }
        with TritonServer(Path(tmp), http_port=0, grpc_port=0, metrics_port=0) as server:
            for version in versions.values():
                roll_out(server, version)
            for label in delays:  # warm every shape before anything counts
                drive(server.endpoints.grpc, f"delay{delays[label]}", feeds, concurrency=32, seconds=1.0)
            for round_ in range(args.rounds):
                for concurrency in CONCURRENCY:
                    order = list(delays)[round_ % 3 :] + list(delays)[: round_ % 3]
                    for label in order:
                        point = drive(
                            server.endpoints.grpc,
                            f"delay{delays[label]}",
                            feeds,
                            concurrency=concurrency,
                            seconds=args.seconds,
                            warmup_s=0.5,
                        )
                        runs.setdefault((label, concurrency), []).append((point.items_per_s, point.p50_ms))
                        print(
                            f"  round {round_ + 1} {label} ({delays[label]} us) c={concurrency}: "
                            f"{point.items_per_s:.1f}/s p50 {point.p50_ms:.2f} ms",
                            flush=True,
                        )
    load.append(os.getloadavg()[0])
    rows: list[dict[str, Any]] = []
    for concurrency in CONCURRENCY:
        base = runs[("none", concurrency)]
        for label, delay in delays.items():
            mine = runs[(label, concurrency)]
            rows.append(
                {
                    "concurrency": concurrency,
                    "delay": label,
                    "delay_us": delay,
                    "items_per_s": statistics.median(items for items, _ in mine),
                    "p50_ms": statistics.median(p50 for _, p50 in mine),
                    "items_vs_none": statistics.median(m[0] / b[0] for m, b in zip(mine, base, strict=True)),
                    "p50_vs_none": statistics.median(m[1] / b[1] for m, b in zip(mine, base, strict=True)),
                }
            )
    result = {
        "model": report.model.name,
        "candidate": candidate.name,
        "cpu": report.device.cpu,
        "batch1_p50_ms": batch1,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "load_average": load,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "queue-delay.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Queue delay, served: {result['model']} ({result['candidate']})",
        "",
        f"CPU: {result['cpu']}; batch-1 p50 in the report {batch1:.2f} ms; {args.rounds} rounds of "
        f"{args.seconds:g} s per point, delays rotated; load average {load[0]:.1f} -> {load[1]:.1f}.",
        "",
        "| in flight | queue delay | items/s | p50 ms | items/s vs no delay | p50 vs no delay |",
        "|---:|---|---:|---:|---:|---:|",
        *(
            f"| {r['concurrency']} | {r['delay']} ({r['delay_us']} us) | {r['items_per_s']:.1f} | {r['p50_ms']:.2f} | "
            f"{r['items_vs_none']:.3f}x | {r['p50_vs_none']:.3f}x |"
            for r in rows
        ),
    ]
    (args.out / "queue-delay.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
