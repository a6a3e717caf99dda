"""Triton-shaped metric series for N served models, for Prometheus to scrape during the benchmark.

The feedback loop asks Prometheus about each served model (``honed.feedback.prometheus``). With no
series for a model it stops after its first query ("no Triton series"); a model that really serves
has them, and then every query of a window runs. No Triton runs here (the models' Jobs never
finish), so this endpoint exposes, for every model, the series a Triton 2.51 with summary
latencies exposes, labelled with the model's namespace as the usual relabelling does. The values
never change: every rate is 0, so the policy judges each window Idle and decides nothing (no
re-optimization, no retune) while every query is still made.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_cache_num_hits_per_model",
    "nv_cache_num_misses_per_model",
    "nv_cache_hit_duration_per_model",
    "nv_cache_miss_duration_per_model",
)
SUMMARIES = (
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
)
QUANTILES = ("0.5", "0.9", "0.99")


def exposition(models: Iterable[tuple[str, str]]) -> str:
    """Prometheus text for ``(namespace, model)`` pairs, version 1 of each."""
    lines: list[str] = []
    pairs = list(models)
    for name in COUNTERS:
        lines.append(f"# TYPE {name} counter")
        lines.extend(f'{name}{{namespace="{ns}",model="{model}",version="1"}} 1000' for ns, model in pairs)
    lines.append("# TYPE nv_inference_request_failure counter")
    lines.extend(
        f'nv_inference_request_failure{{namespace="{ns}",model="{model}",version="1",reason="OTHER"}} 0'
        for ns, model in pairs
    )
    lines.append("# TYPE nv_inference_pending_request_count gauge")
    lines.extend(
        f'nv_inference_pending_request_count{{namespace="{ns}",model="{model}",version="1"}} 0' for ns, model in pairs
    )
    for name in SUMMARIES:
        lines.append(f"# TYPE {name} summary")
        for ns, model in pairs:
            labels = f'namespace="{ns}",model="{model}",version="1"'
            lines.extend(f'{name}{{{labels},quantile="{q}"}} 1500' for q in QUANTILES)
            lines.append(f"{name}_sum{{{labels}}} 1500000")
            lines.append(f"{name}_count{{{labels}}} 1000")
    return "\n".join(lines) + "\n"


def series_per_model() -> int:
    return len(COUNTERS) + 2 + len(SUMMARIES) * (len(QUANTILES) + 2)


class SeriesServer:
    """Serves ``exposition(models)`` at http://127.0.0.1:PORT/metrics in a thread."""

    def __init__(self, models: Iterable[tuple[str, str]]) -> None:
        body = exposition(models).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # one line per scrape would drown the benchmark's output

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="triton-series", daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
