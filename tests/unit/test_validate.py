import numpy as np
import pytest

from honed.errors import InputError
from honed.optimizer.validate import check_metric, compare, compare_named, default_metric


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
