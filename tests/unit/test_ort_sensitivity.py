import pytest

from honed.optimizer.backends.base import CandidatePlan
from honed.optimizer.backends.ort_sensitivity import search_exclusions


def test_exclusions_grow_until_the_drop_fits() -> None:
    ranked = [f"n{i}" for i in range(40)]
    tried: list[int] = []

    def quantize(excluded: list[str]) -> str:
        tried.append(len(excluded))
        return ",".join(excluded)

    def drop_of(model: str) -> float:
        return 0.0 if "n3" in model.split(",") else 0.05  # the fourth-worst layer is the culprit

    assert search_exclusions(ranked, quantize, drop_of, max_drop=0.01) == ranked[:4]
    assert tried == [1, 2, 4]


def test_exclusions_give_up_with_the_best_drop_seen() -> None:
    with pytest.raises(RuntimeError, match=r"up to 2 layers .* 0\.0300"):
        search_exclusions(
            ["a", "b", "c", "d", "e", "f", "g", "h"],
            lambda ex: len(ex),
            lambda n: 0.05 - 0.01 * n,
            max_drop=0.001,
        )


def test_candidate_names_are_unique_per_backend_and_variant() -> None:
    names = {
        CandidatePlan("openvino", "int8", variant="accuracy-aware").name,
        CandidatePlan("onnxruntime", "int8", variant="accuracy-aware").name,
        CandidatePlan("onnxruntime", "int8").name,
        CandidatePlan("torch", "bf16", source="torch", variant="compile").name,
    }
    assert names == {"onnx-int8-aa.openvino", "onnx-int8-aa.onnxruntime", "onnx-int8.onnxruntime", "torch-bf16.compile"}
