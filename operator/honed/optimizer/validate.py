"""The accuracy gate's scores: a candidate's outputs against the original's on the validation data.

``honed.optimizer.gate`` turns a score into the accept/reject verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from honed.errors import InputError
from honed.optimizer.report import MetricResult

METRICS = ("top1", "accuracy", "cosine", "max_abs_diff", "rmse")


class NonFiniteOutputError(ValueError):
    """A candidate output holds NaN or inf where the original's is finite (an fp16 overflow, a broken kernel).

    No metric scores such outputs honestly (cosine would read NaN as a perfect match), so the
    gate rejects the candidate outright.
    """


def default_metric(first_output_shape: list[int], has_labels: bool, synthesized: bool) -> str:
    """top1 for classifier-shaped outputs with real data, else a closeness metric."""
    if has_labels:
        return "top1"
    if not synthesized and len(first_output_shape) == 2 and first_output_shape[-1] not in (1,):
        return "top1"
    return "cosine"


def check_metric(metric: str, has_labels: bool) -> None:
    """Raise ``InputError`` naming the fix when ``metric`` is unknown or needs labels the data lacks."""
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r} is unknown", hint=f"use one of {', '.join(METRICS)}")
    if metric == "accuracy" and not has_labels:
        raise InputError("--metric accuracy needs labels", hint="add a 'labels' array to --data, or use top1")


@dataclass(frozen=True)
class PaddingMask:
    """Which positions of token sequences are real (1) and which are padding (0), per sample.

    Attributes:
        input: the model input the mask was read from (``attention_mask`` in Hugging Face models).
        keep: ``[samples, positions]`` booleans, True where the position holds a real token.
    """

    input: str
    keep: np.ndarray

    def applies_to(self, output: np.ndarray) -> bool:
        """Whether ``output`` (samples first) is per position: its first two axes are the mask's."""
        return output.ndim >= 2 and output.shape[:2] == self.keep.shape

    def zero_padding(self, output: np.ndarray) -> np.ndarray:
        """``output`` with its padded positions set to 0, so no metric reads them."""
        keep = self.keep.reshape(self.keep.shape + (1,) * (output.ndim - 2))
        return np.where(keep, output, np.zeros((), dtype=output.dtype))


MASK_NAMES = ("attention_mask", "input_mask", "mask")


def padding_mask(feeds: Mapping[str, np.ndarray]) -> PaddingMask | None:
    """The padding mask among a model's inputs (samples first), or None when it has none.

    An input counts as one when its name says mask, it is ``[samples, positions]`` of integers or
    booleans holding only 0 and 1, and the data pads at least one position. Outputs at padded
    positions are whatever the model computed for a pad token: every consumer of such outputs
    (pooling, token classification, a loss) leaves them out, and int8 can move them far without
    changing anything a user sees, so the gate leaves them out too.
    """
    candidates = [
        name
        for name, array in feeds.items()
        if "mask" in name.lower() and array.ndim == 2 and array.dtype.kind in "iub" and array.size
    ]
    candidates.sort(key=lambda name: MASK_NAMES.index(name.lower()) if name.lower() in MASK_NAMES else len(MASK_NAMES))
    for name in candidates:
        array = feeds[name]
        if not np.isin(array, (0, 1)).all():
            continue
        keep = array.astype(bool)
        if keep.all() or not keep.any(axis=1).all():
            continue  # no padding to leave out, or a sample with no real position (then not a padding mask)
        return PaddingMask(name, keep)
    return None


def _predictions(output: np.ndarray) -> np.ndarray:
    output = output.reshape(len(output), -1) if output.ndim > 1 else output.reshape(-1, 1)
    if output.shape[1] == 1:
        return (output[:, 0] > 0.5).astype(np.int64) if output.min() >= 0 else (output[:, 0] > 0).astype(np.int64)
    predicted: np.ndarray = np.argmax(output, axis=1)
    return predicted


def _label_accuracy(output: np.ndarray, labels: np.ndarray) -> float:
    labels = labels.reshape(len(labels), -1)
    labels = labels[:, 0] if labels.shape[1] == 1 else np.argmax(labels, axis=1)
    return float(np.mean(_predictions(output) == labels))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    # Where the original's outputs hold inf, inf * 0 and inf / inf give NaN: the gate rejects that score.
    with np.errstate(invalid="ignore"):
        denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        dots = np.sum(a * b, axis=1)
        # Two all-zero rows are identical; one zero row against a non-zero one is orthogonal.
        both_zero = denom == 0
        sims = np.where(both_zero, np.where(np.all(a == b, axis=1), 1.0, 0.0), dots / np.where(both_zero, 1, denom))
    return float(np.mean(sims))


def _check_finite(reference: list[np.ndarray], candidate: list[np.ndarray]) -> None:
    for index, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        if cand.dtype.kind not in "fc":  # integers, booleans and strings are always finite
            continue
        new = ~np.isfinite(cand) & np.isfinite(ref) if ref.dtype.kind in "fc" else ~np.isfinite(cand)
        count = int(np.count_nonzero(new))
        if count:
            raise NonFiniteOutputError(
                f"output {index} has {count} NaN or inf values of {cand.size} where the original's are finite"
            )


def compare(
    metric: str,
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    labels: np.ndarray | None,
    mask: PaddingMask | None = None,
) -> MetricResult:
    """Score ``candidate`` against ``reference`` outputs, matched by position.

    ``drop`` grows as the candidate gets worse; ``labels`` (one per sample) make top1 and
    accuracy score against the labels instead of the original's predictions. With ``mask``,
    outputs that are per position are compared at real positions only (padding left out).

    Raises:
        NonFiniteOutputError: a candidate output holds NaN or inf where the original's is finite.
        ValueError: the output counts or shapes differ from the original's.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"candidate produced {len(candidate)} outputs, the original {len(reference)}")
    for ref, cand in zip(reference, candidate, strict=True):
        if ref.shape != cand.shape:
            raise ValueError(f"output shape {list(cand.shape)} differs from the original's {list(ref.shape)}")
    kept: list[int] | None = None  # per output: how many values the comparison reads, 0 = all
    if mask is not None:
        kept = [int(mask.keep.sum()) * r[0, 0].size if mask.applies_to(r) else 0 for r in reference]
        reference = [mask.zero_padding(r) if mask.applies_to(r) else r for r in reference]
        candidate = [mask.zero_padding(c) if mask.applies_to(c) else c for c in candidate]
    _check_finite(reference, candidate)
    result = _score(metric, reference, candidate, labels, kept)
    if mask is not None and kept and any(kept):
        result.masked_by = mask.input
    return result


def _score(
    metric: str,
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    labels: np.ndarray | None,
    kept: list[int] | None,
) -> MetricResult:
    ref0, cand0 = reference[0], candidate[0]
    if metric in ("top1", "accuracy") and labels is not None:
        base = _label_accuracy(ref0, labels)
        value = _label_accuracy(cand0, labels)
        return MetricResult(name=metric, value=value, drop=max(0.0, base - value), reference=base)
    if metric == "top1":
        agreement = float(np.mean(_predictions(ref0) == _predictions(cand0)))
        return MetricResult(name="top1-agreement", value=agreement, drop=1.0 - agreement, reference=1.0)
    if metric == "cosine":
        sim = min(_cosine(r, c) for r, c in zip(reference, candidate, strict=True))
        return MetricResult(name="cosine", value=sim, drop=max(0.0, 1.0 - sim), reference=1.0)
    with np.errstate(invalid="ignore"):  # inf - inf where both hold inf: NaN, rejected by the gate
        diffs = [np.abs(r.astype(np.float64) - c.astype(np.float64)) for r, c in zip(reference, candidate, strict=True)]
    if metric == "max_abs_diff":
        value = float(max(d.max() if d.size else 0.0 for d in diffs))
    else:
        # Padded positions (zero in both) do not count towards the mean.
        counts = [n or d.size for n, d in zip(kept or [0] * len(diffs), diffs, strict=True)]
        value = float(max(np.sqrt(np.sum(d**2) / n) if n else 0.0 for d, n in zip(diffs, counts, strict=True)))
    return MetricResult(name=metric, value=value, drop=value, reference=0.0)


def compare_named(
    metric: str,
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    labels: np.ndarray | None,
    mask: PaddingMask | None = None,
) -> MetricResult:
    """``compare`` with outputs matched by name, in the reference's order (its first output is the one top1 reads)."""
    if set(reference) != set(candidate):
        missing = [name for name in reference if name not in candidate]
        extra = [name for name in candidate if name not in reference]
        raise ValueError(
            f"candidate outputs {list(candidate)} do not match the original's {list(reference)}"
            + (f": missing {missing}" if missing else "")
            + (f", unexpected {extra}" if extra else "")
        )
    return compare(metric, list(reference.values()), [candidate[name] for name in reference], labels, mask)
