"""Accuracy-aware int8 for ONNX Runtime: keep the layers quantization hurts most in fp32.

Plain QDQ int8 on real models often loses several points of top-1. Ranking compute nodes by how
much signal-to-quantization-noise their outputs lose, then excluding the worst few until the
accuracy gate passes, usually recovers accuracy while most of the graph stays int8.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

# What quantize hands to drop_of: the quantized model's path here, a stand-in in the tests.
Quantized = TypeVar("Quantized")

COMPUTE_OPS = {"Conv", "MatMul", "Gemm", "ConvTranspose", "Attention"}


def name_nodes(source: Path, target: Path) -> list[tuple[str, str, list[str], list[str]]]:
    """Give every node a stable name (quantizers exclude nodes by name); returns (name, op, in, out)."""
    import onnx

    model = onnx.load(str(source))
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    onnx.save_model(model, str(target))
    return [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


def rank_nodes(
    float_model: Path,
    qdq_model: Path,
    feeds: list[dict[str, np.ndarray]],
    work: Path,
    nodes: list[tuple[str, str, list[str], list[str]]],
) -> list[str]:
    """Compute nodes ordered from most to least damaged by quantization (SQNR lost across the node)."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types: the base is Any
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    aug_float, aug_qdq = work / "sens-float.onnx", work / "sens-qdq.onnx"
    modify_model_output_intermediate_tensors(str(float_model), str(aug_float))
    modify_model_output_intermediate_tensors(str(qdq_model), str(aug_qdq))
    float_acts = collect_activations(str(aug_float), Reader())
    qdq_acts = collect_activations(str(aug_qdq), Reader())
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    sqnr = {name: err.get("xmodel_err", float("inf")) for name, err in errors.items()}
    damage: list[tuple[float, str]] = []
    for name, op, inputs, outputs in nodes:
        if op not in COMPUTE_OPS or not outputs or outputs[0] not in sqnr:
            continue
        before = max((sqnr[i] for i in inputs if i in sqnr), default=float("inf"))
        after = sqnr[outputs[0]]
        lost = (before - after) if np.isfinite(before) else -after
        damage.append((lost, name))
    return [name for _, name in sorted(damage, reverse=True)]


def search_exclusions(
    ranked: list[str],
    quantize: Callable[[list[str]], Quantized],
    drop_of: Callable[[Quantized], float],
    max_drop: float,
    max_fraction: float = 0.25,
) -> list[str]:
    """Exclude 1, 2, 4, ... of the most damaged nodes until the drop fits; raises when it never does."""
    limit = max(1, int(len(ranked) * max_fraction))
    count, best = 1, (float("inf"), 0)
    while count <= limit:
        excluded = ranked[:count]
        drop = drop_of(quantize(excluded))
        best = min(best, (drop, count))
        if drop <= max_drop:
            return excluded
        count *= 2
    raise RuntimeError(f"int8 with up to {limit} layers kept in fp32 still drops {best[0]:.4f} > {max_drop}")
