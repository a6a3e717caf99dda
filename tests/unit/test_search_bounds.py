"""What the search does not build: expensive candidates that what it has measured says cannot win."""

from __future__ import annotations

from honed.optimizer.backends.base import CandidatePlan
from honed.optimizer.bounds import FOLLOW_UP_MARGIN, follow_up_skip, torch_cpu_skip
from honed.optimizer.engine import Trial


def _accepted(backend: str, precision: str, variant: str = "") -> Trial:
    return Trial(CandidatePlan(backend, precision, "onnx" if backend != "torch" else "torch", variant), "accepted")


def test_a_cpu_torch_candidate_is_skipped_once_a_runtime_at_its_precision_is_accepted() -> None:
    fp32, int8 = _accepted("openvino", "fp32"), _accepted("openvino", "int8")
    compile_fp32 = CandidatePlan("torch", "fp32", "torch", "compile")
    skip = torch_cpu_skip(compile_fp32, [(fp32, 17.0), (int8, 6.3)])
    assert skip is not None and skip.name == "torch-fp32.compile"
    assert "onnx-fp32.openvino at the same precision is accepted (17 ms)" in skip.reason
    # Even where its precision's runtime is the best of all: PyTorch on CPU has never beaten it.
    assert torch_cpu_skip(compile_fp32, [(fp32, 6.0), (int8, 6.3)]) is not None
    # bf16 eager against OpenVINO bf16: the same bound.
    bf16 = _accepted("openvino", "bf16")
    eager_bf16 = CandidatePlan("torch", "bf16", "torch", "eager")
    assert torch_cpu_skip(eager_bf16, [(bf16, 25.0), (fp32, 17.0)]) is not None


def test_a_cpu_torch_candidate_is_built_when_no_runtime_at_its_precision_is() -> None:
    int8 = _accepted("openvino", "int8")
    compile_fp32 = CandidatePlan("torch", "fp32", "torch", "compile")
    # The ONNX export failed or fp32 failed the gate: no fp32 runtime bounds it.
    assert torch_cpu_skip(compile_fp32, [(int8, 6.3)]) is None
    # Nothing at its precision measured yet (PyTorch's own candidates do not bound it): no bound.
    eager = _accepted("torch", "bf16", "eager")
    assert torch_cpu_skip(CandidatePlan("torch", "bf16", "torch", "compile"), [(eager, 9.0), (int8, 6.3)]) is None


def test_accuracy_aware_int8_is_skipped_when_plain_int8_is_not_faster_than_the_best() -> None:
    bf16 = _accepted("openvino", "bf16")
    plain = Trial(CandidatePlan("openvino", "int8", "onnx"), "rejected")
    follow = CandidatePlan("openvino", "int8", "onnx", "accuracy-aware")
    skip = follow_up_skip(follow, plain, ceiling=2.1, timed=[(bf16, 2.2)])
    assert skip is not None and skip.name == "onnx-int8-aa.openvino"
    assert "onnx-int8.openvino (2.1 ms" in skip.reason and "onnx-bf16.openvino (2.2 ms)" in skip.reason
    # Fast enough to be worth the build: plain int8 beats the best by more than the margin.
    assert follow_up_skip(follow, plain, ceiling=2.2 / FOLLOW_UP_MARGIN / 1.01, timed=[(bf16, 2.2)]) is None
    assert follow_up_skip(follow, plain, ceiling=1.0, timed=[]) is None


def test_only_candidates_close_to_the_fastest_are_timed_longer() -> None:
    from honed.optimizer.measure import contenders

    p50 = {"onnx-int8.openvino": 5.4, "onnx-int8-bf16.openvino": 5.5, "onnx-fp32.openvino": 15.1}
    assert contenders(p50, 1.15) == ["onnx-int8.openvino", "onnx-int8-bf16.openvino"]
    assert contenders({"a": 1.0, "b": 2.0}, 1.15) == ["a"]  # clear already: nothing more to time
    assert contenders({}, 1.15) == []
