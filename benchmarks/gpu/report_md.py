"""results.json -> results.md: the picks against their targets, then every candidate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from honed.optimizer.gate import Verdict


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _drop(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1e}"


def gate_entry(result: Verdict) -> dict[str, Any]:
    """What results.json keeps of the accuracy gate's verdict on a candidate (``metric`` None: outputs not finite)."""
    metric = None if result.metric is None else result.metric.model_dump()
    return {"accepted": result.accepted, "metric": metric, "reason": result.reason}


def gate_drop(gate: dict[str, Any]) -> float | None:
    """The metric drop in a results.json gate entry; None when there is none.

    Results written before the benchmarks used the engine's gate hold ``cosine_drop`` instead:
    the worst sample's cosine drop, where the engine's cosine metric averages over samples.
    """
    metric = gate.get("metric")
    return metric["drop"] if metric else gate.get("cosine_drop")


def write_markdown(results: dict[str, Any], path: Path) -> None:
    env = results.get("environment", {})
    lines = [
        "# GPU benchmark: honed's pick vs eager fp32",
        "",
        f"GPU {env.get('gpu')} (sm {env.get('capability')}), driver {env.get('driver')}, "
        f"torch {env.get('torch')} (CUDA {env.get('cuda_runtime')}), triton {env.get('triton')}, "
        f"cuDNN {env.get('cudnn')}, transformers {env.get('transformers')}.",
        "",
        results.get("method", ""),
        "",
        "| model | batch | eager fp32 p50 ms | honed pick | pick p50 ms | speedup | target | items/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, model in results.get("models", {}).items():
        for batch, pick in model.get("picks", {}).items():
            target = pick.get("target")
            met = "" if target is None else (" (met)" if pick["speedup"] >= target else " (missed)")
            lines.append(
                f"| {name} | {batch} | {_fmt(pick['baseline_p50_ms'])} | {pick['candidate']} | "
                f"{_fmt(pick['p50_ms'])} | {pick['speedup']:.2f}x | "
                f"{_fmt(target, 1)}x{met} | {_fmt(pick['throughput'], 0)} |"
            )
    for name, model in results.get("models", {}).items():
        batches = list(model.get("picks", {}))
        lines += [
            "",
            f"## {name}: every candidate",
            "",
            "| candidate | status | cosine drop | "
            + " | ".join(f"p50 ms b{b}" for b in batches)
            + " | build s | peak GPU MiB |",
            "|---|---|---|" + "---|" * len(batches) + "---|---|",
        ]
        base = model.get("baseline", {}).get("latency_ms", {})
        lines.append(
            "| eager fp32 nn.Module (baseline) | - | 0 | "
            + " | ".join(_fmt(base.get(b, {}).get("p50")) for b in batches)
            + " | - | - |"
        )
        for cand in model.get("candidates", []):
            lat = cand.get("latency_ms", {})
            gate = cand.get("gate", {})
            peak = cand.get("peak_gpu_bytes")
            lines.append(
                f"| {cand['name']} | {cand.get('status')} | {_drop(gate_drop(gate))} | "
                + " | ".join(_fmt(lat.get(b, {}).get("p50")) for b in batches)
                + f" | {_fmt(cand.get('build_seconds'), 1)} | {_fmt(peak / 2**20 if peak else None, 0)} |"
            )
        for skip in model.get("skipped", []):
            lines.append(f"| {skip['name']} | skipped: {skip['reason']} |" + " |" * (len(batches) + 3))
        fresh = model.get("fresh_process", {})
        if fresh:
            lines += ["", "Picked artifacts loaded in a new process with empty compiler caches:", ""]
            for cand, res in fresh.items():
                if not res.get("ok"):
                    lines.append(f"- {cand}: FAILED (rc {res.get('returncode')})")
                    continue
                p50s = ", ".join(f"b{b} {v['latency_ms']['p50']:.3f} ms" for b, v in res["batches"].items())
                cache = res.get("cache", {})
                hits = "FX graph cache {} hit / {} miss".format(
                    cache.get("fxgraph_cache_hit"), cache.get("fxgraph_cache_miss")
                )
                note = f" ({res['note']})" if res.get("note") else ""
                lines.append(f"- {cand}: load {res['load_seconds']} s, {hits}, {p50s}{note}")
    lines += _reload_section(results.get("reload_check"))
    aoti = results.get("aoti_check")
    if aoti:
        lines += ["", "## AOTInductor", "", aoti.get("note", ""), "", f"`{json.dumps(aoti.get('result'))}`"]
    path.write_text("\n".join(lines) + "\n")


def _reload_section(reload: dict[str, Any] | None) -> list[str]:
    """The new-process check of a later run (the deployability proof), when results carry one."""
    if not reload:
        return []
    lines = [
        "",
        "## Loading the picked artifact in a new process",
        "",
        reload.get("note", ""),
        "",
        "| model | artifact | build s | new-process load s | cache | batch | p50 ms at build | p50 ms new process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, model in reload.get("models", {}).items():
        for cand, res in model.get("fresh_process", {}).items():
            if not res.get("ok"):
                lines.append(f"| {name} | {cand} | - | FAILED | - | - | - | - |")
                continue
            built: dict[str, Any] = next((c for c in model.get("candidates", []) if c["name"] == cand), {})
            cache = res.get("cache", {})
            hits = f"{cache.get('fxgraph_cache_hit')} hit / {cache.get('fxgraph_cache_miss')} miss"
            for batch, val in res["batches"].items():
                at_build = built.get("latency_ms", {}).get(batch, {}).get("p50")
                lines.append(
                    f"| {name} | {cand} | {_fmt(built.get('build_seconds'), 1)} | {res['load_seconds']} | "
                    f"{hits} | {batch} | {_fmt(at_build)} | {_fmt(val['latency_ms']['p50'])} |"
                )
    return lines
