import math

import numpy as np
import pytest

from honed.errors import InputError
from honed.optimizer.gate import verdict
from honed.optimizer.validate import (
    NonFiniteOutputError,
    check_metric,
    compare,
    compare_named,
    default_metric,
    padding_mask,
)


def test_top1_with_labels_reports_lost_accuracy() -> None:
    ref = np.eye(4, dtype=np.float32)
    cand = ref.copy()
    cand[0] = [0, 1, 0, 0]  # one of four now wrong
    result = compare("top1", [ref], [cand], labels=np.arange(4))
    assert result.reference == 1.0 and result.value == 0.75 and result.drop == pytest.approx(0.25)


def test_top1_without_labels_is_agreement_with_the_original() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    cand = np.array([[0.2, 0.8], [0.4, 0.6]], dtype=np.float32)
    result = compare("top1", [ref], [cand], labels=None)
    assert result.name == "top1-agreement" and result.drop == pytest.approx(0.5)


def test_a_better_candidate_never_gets_a_negative_drop() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 0.0]])
    cand = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert compare("accuracy", [ref], [cand], labels=np.array([0, 1])).drop == 0.0


def test_cosine_takes_the_worst_output_and_handles_zero_rows() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    result = compare("cosine", [a, a], [a, np.array([[0.0, 1.0], [0.0, 0.0]])], labels=None)
    assert result.value == pytest.approx(0.5)  # row 1 orthogonal, row 2 both zero = identical


@pytest.mark.parametrize(("metric", "value"), [("max_abs_diff", 0.5), ("rmse", np.sqrt(0.25 / 4))])
def test_distance_metrics(metric: str, value: float) -> None:
    ref = np.zeros((2, 2))
    cand = ref.copy()
    cand[0, 0] = 0.5
    assert compare(metric, [ref], [cand], None).drop == pytest.approx(value)


def test_shape_mismatch_is_an_error_not_a_score() -> None:
    with pytest.raises(ValueError, match="shape"):
        compare("cosine", [np.zeros((2, 3))], [np.zeros((2, 4))], None)


def test_default_metric_choice() -> None:
    assert default_metric([-1, 10], has_labels=True, synthesized=False) == "top1"
    assert default_metric([-1, 10], has_labels=False, synthesized=False) == "top1"
    assert default_metric([-1, 10], has_labels=False, synthesized=True) == "cosine"
    assert default_metric([-1, 128, 768], has_labels=False, synthesized=False) == "cosine"


def test_metric_checks_name_the_fix() -> None:
    with pytest.raises(InputError, match="labels"):
        check_metric("accuracy", has_labels=False)
    with pytest.raises(InputError, match="top1"):
        check_metric("f1", has_labels=True)


def test_outputs_are_matched_by_name_in_the_originals_order() -> None:
    logits = np.array([[0.0, 1.0], [1.0, 0.0]])
    hidden = np.ones((2, 3))
    # Stored in another order, the candidate still lines up: top1 reads the original's first output.
    result = compare_named("top1", {"logits": logits, "hidden": hidden}, {"hidden": hidden, "logits": logits}, None)
    assert result.drop == 0.0
    with pytest.raises(ValueError, match=r"missing \['logits'\], unexpected \['output_0'\]"):
        compare_named("cosine", {"logits": logits, "hidden": hidden}, {"hidden": hidden, "output_0": logits}, None)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_output_is_an_error_not_a_score(bad: float) -> None:
    ref = np.ones((2, 3), dtype=np.float32)
    cand = ref.copy()
    cand[1, 2] = bad  # cosine would read NaN as a perfect match
    with pytest.raises(NonFiniteOutputError, match="output 0 has 1 NaN or inf"):
        compare("cosine", [ref], [cand], None)


def test_non_finite_values_the_original_has_too_are_not_the_candidates_fault() -> None:
    ref = np.array([[0.0, -np.inf], [1.0, 2.0]])
    assert compare("top1", [ref], [ref.copy()], None).drop == 0.0
    assert compare("top1", [np.arange(3)], [np.arange(3)], None).drop == 0.0  # integer outputs


def test_verdict_accepts_within_the_limit_and_says_why_it_rejects() -> None:
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((4, 10)).astype(np.float32)]
    same = verdict("cosine", ref, [ref[0].copy()], None, max_drop=1e-9)
    assert same.accepted and same.metric is not None and same.metric.drop < 1e-12 and same.reason == ""
    noisy = verdict("cosine", ref, [ref[0] + 0.5 * rng.standard_normal((4, 10)).astype(np.float32)], None, 0.01)
    assert not noisy.accepted and noisy.metric is not None and 0.01 < noisy.metric.drop < 1
    assert noisy.reason.startswith("cosine drop") and "exceeds --max-metric-drop 0.01" in noisy.reason


def test_verdict_rejects_non_finite_outputs_under_any_limit() -> None:
    ref = {"logits": np.ones((2, 3), dtype=np.float32)}
    broken = {"logits": ref["logits"].copy()}
    broken["logits"][0, 0] = np.nan
    for metric in ("top1", "cosine", "max_abs_diff", "rmse"):
        result = verdict(metric, ref, broken, None, max_drop=math.inf)
        assert not result.accepted and result.metric is None and "NaN or inf" in result.reason


def test_verdict_rejects_a_score_that_is_not_a_number() -> None:
    ref = [np.array([[np.inf, 1.0]])]  # the original's own inf: cosine of it is NaN
    result = verdict("cosine", ref, [ref[0].copy()], None, max_drop=1.0)
    assert not result.accepted and result.metric is None and "not finite" in result.reason


def test_verdict_matches_outputs_by_name_or_position_not_both() -> None:
    a = np.eye(2)
    assert verdict("cosine", {"x": a, "y": 2 * a}, {"y": 2 * a, "x": a}, None, 0.0).accepted
    with pytest.raises(ValueError, match="shape"):
        verdict("cosine", [a], [a[:1]], None, 0.0)
    with pytest.raises(TypeError):
        verdict("cosine", {"x": a}, [a], None, 0.0)


def test_distance_to_an_original_holding_inf_is_not_a_number() -> None:
    ref = [np.array([[np.inf, 1.0]])]
    assert not verdict("max_abs_diff", ref, [ref[0].copy()], None, max_drop=1.0).accepted


def _padded_batch() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three token sequences of 6 positions, 4, 2 and 6 of them real; hidden states [3, 6, 8]."""
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": np.arange(18, dtype=np.int64).reshape(3, 6), "attention_mask": mask}
    hidden = np.random.default_rng(0).standard_normal((3, 6, 8)).astype(np.float32)
    return feeds, hidden


def test_padding_mask_is_found_by_name_values_and_shape() -> None:
    feeds, _ = _padded_batch()
    mask = padding_mask(feeds)
    assert mask is not None and mask.input == "attention_mask" and mask.keep.sum() == 12
    # No padding in the data, values other than 0/1, or a sample with no real position: no mask.
    assert padding_mask({**feeds, "attention_mask": np.ones((3, 6), np.int64)}) is None
    assert padding_mask({**feeds, "attention_mask": feeds["attention_mask"] * 2}) is None
    assert padding_mask({**feeds, "attention_mask": np.zeros((3, 6), np.int64)}) is None
    assert padding_mask({"input_ids": feeds["input_ids"]}) is None


def test_the_gate_leaves_padded_positions_out_of_per_position_outputs() -> None:
    # Seen on a real MiniLM: int8 kept real tokens within 0.003 cosine while the hidden states at
    # padded positions moved by 0.39, and the whole-tensor gate rejected it for that.
    feeds, hidden = _padded_batch()
    mask = padding_mask(feeds)
    pooled = hidden.mean(axis=1)
    noisy = hidden.copy()
    noisy[~feeds["attention_mask"].astype(bool)] = 100.0  # garbage only where nothing reads it
    ref, cand = {"last_hidden_state": hidden, "pooled": pooled}, {"last_hidden_state": noisy, "pooled": pooled}
    assert not verdict("cosine", ref, cand, None, 0.01).accepted
    kept = verdict("cosine", ref, cand, None, 0.01, mask)
    assert kept.accepted and kept.metric is not None and kept.metric.masked_by == "attention_mask"
    assert kept.metric.drop == pytest.approx(0.0, abs=1e-6)
    # A real position that moves still counts, under every metric.
    noisy[0, 0] += 5.0
    assert not verdict("cosine", ref, cand, None, 0.01, mask).accepted
    assert not verdict("max_abs_diff", ref, cand, None, 1.0, mask).accepted


def test_masked_rmse_averages_over_real_positions_only() -> None:
    feeds, hidden = _padded_batch()
    mask = padding_mask(feeds)
    shifted = hidden + 1.0  # every value off by 1: the RMSE is 1 whichever positions count
    result = compare("rmse", [hidden], [shifted], None, mask)
    assert result.value == pytest.approx(1.0) and result.masked_by == "attention_mask"


def test_outputs_that_are_not_per_position_are_compared_whole() -> None:
    feeds, hidden = _padded_batch()
    mask = padding_mask(feeds)
    logits = hidden[:, :, 0]  # [3, 6]: per position, masked
    other = hidden[:, :2, :].reshape(3, 16)  # [3, 16]: not per position
    noisy = other.copy()
    noisy[1, 15] = 50.0
    result = compare("max_abs_diff", [other, logits], [noisy, logits], None, mask)
    assert result.value > 40  # nothing of `other` was left out
