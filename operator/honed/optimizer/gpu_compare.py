"""How far a reduced-precision candidate's outputs are from the fp32 reference.

The GPU tests and benchmarks gate candidates with this when no labelled data is given:
per-sample cosine similarity between the flattened outputs (drop = 1 - the worst sample's
similarity, so larger is worse as for every honed metric) and the relative error
||out - ref|| / ||ref||. A non-finite output (fp16 overflow) fails outright.
"""

from __future__ import annotations

import math

import numpy as np


def agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, float | bool]:
    """Cosine drop and relative error of ``candidate`` against ``reference``, output by output."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} outputs against {len(reference)} reference outputs")
    worst_cos = 1.0
    worst_rel = 0.0
    finite = True
    for ref, out in zip(reference, candidate, strict=True):
        ref64 = np.asarray(ref, dtype=np.float64)
        out64 = np.asarray(out, dtype=np.float64)
        if ref64.shape != out64.shape:
            raise ValueError(f"output shape {out64.shape} differs from the reference's {ref64.shape}")
        if not np.isfinite(out64).all():
            finite = False
            continue
        rows_ref = ref64.reshape(ref64.shape[0], -1) if ref64.ndim else ref64.reshape(1, 1)
        rows_out = out64.reshape(rows_ref.shape)
        dots = (rows_ref * rows_out).sum(axis=1)
        norms = np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_out, axis=1)
        # Two zero rows agree; one zero row against a non-zero one does not.
        cos = np.where(
            norms > 0,
            dots / np.maximum(norms, 1e-300),
            np.where(np.linalg.norm(rows_ref, axis=1) == np.linalg.norm(rows_out, axis=1), 1.0, 0.0),
        )
        worst_cos = min(worst_cos, float(cos.min()))
        denom = float(np.linalg.norm(ref64))
        rel = float(np.linalg.norm(out64 - ref64)) / denom if denom > 0 else float(np.linalg.norm(out64))
        worst_rel = max(worst_rel, rel)
    if not finite:
        return {"finite": False, "cosine_drop": math.inf, "relative_error": math.inf}
    return {"finite": True, "cosine_drop": max(0.0, 1.0 - worst_cos), "relative_error": worst_rel}


def passes_gate(result: dict[str, float | bool], max_drop: float) -> bool:
    """The accuracy gate: finite outputs and a cosine drop no larger than ``max_drop``."""
    return bool(result["finite"]) and float(result["cosine_drop"]) <= max_drop
