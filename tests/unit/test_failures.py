"""The baseline's failure names its own cause and fix; runtime texts below are ONNX Runtime 1.31's own."""

from __future__ import annotations

import pytest

from honed.optimizer.failures import SHAPES_HINT, clean, explain

LOAD = (
    "build: Fail: [ONNXRuntimeError] : 1 : FAIL : Load model from o3/model.onnx failed:"
    "/onnxruntime_src/onnxruntime/core/graph/model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, "
    "const onnxruntime::PathString&, const onnxruntime::IOnnxRuntimeOpSchemaRegistryList*, "
    "const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) "
)
IR = LOAD + "Unsupported model IR version: 14, max supported IR version: 13"
OPSET = (
    "Fail: [ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model_load_utils.h:46 "
    "void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<std::__cxx11::"
    "basic_string<char>, int>&, const onnxruntime::logging::Logger&, bool, const std::string&, int) ONNX Runtime "
    "only *guarantees* support for models stamped with official released onnx opset versions. Opset 27 is under "
    "development and support for this is limited. The operator schemas and or other functionality may change "
    "before next ONNX release and in this case ONNX Runtime will not guarantee backward compatibility. Current "
    "official support for domain ai.onnx is till opset 26."
)
UNKNOWN_OP = "Fail: [ONNXRuntimeError] : 1 : FAIL : Fatal error: my.ops:Frobnicate(-1) is not a registered function/op"
NO_KERNEL = (
    "NotImplemented: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Relu(14) "
    "node with name ''"
)
PROTOBUF = (
    "InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Failed to load model because protobuf parsing failed."
)
INVALID_GRAPH = (
    "InvalidGraph: [ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. Type Error: Type "
    "'tensor(string)' of input parameter (x) of operator (Relu) in node () is invalid."
)
DIMS = (
    "InvalidArgument: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x for the "
    "following indices index: 1 Got: 5 Expected: 4 Please fix either the inputs/outputs or the model."
)
DTYPE = (
    "InvalidArgument: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Unexpected input data type. Actual: "
    "(tensor(int64)) , expected: (tensor(float))"
)


def test_the_cpp_location_and_signature_are_dropped() -> None:
    text = clean(IR)
    assert "onnxruntime_src" not in text and "ModelProto&&" not in text
    assert text.endswith("Unsupported model IR version: 14, max supported IR version: 13")
    assert "ValidateOpsetForDomain" not in clean(OPSET)


def test_ir_version_names_both_versions_and_the_fix() -> None:
    why = explain(IR)
    assert "IR version 14" in why.cause and "up to IR 13" in why.cause
    assert "upgrade onnxruntime" in why.hint and "--input" not in why.hint


def test_an_opset_beyond_the_runtime_names_the_opset_to_export_with() -> None:
    why = explain(OPSET)
    assert "ai.onnx opset 27" in why.cause and "up to opset 26" in why.cause
    assert "opset_version=26" in why.hint


@pytest.mark.parametrize(
    ("reason", "cause", "hint", "kind"),
    [
        (UNKNOWN_OP, "my.ops:Frobnicate", "standard ONNX operators", "input"),
        (NO_KERNEL, "no CPU kernel for Relu (opset 14)", "types", "input"),
        (PROTOBUF, "cannot deserialize", "truncated", "input"),
        (INVALID_GRAPH, "Type Error: Type 'tensor(string)'", "full_check=True", "input"),
        ("worker crashed during load (killed by signal 9)", "memory", "--batch-sizes", "memory"),
        ("time budget exhausted before this candidate was built", "time budget", "--time-budget", "time"),
    ],
)
def test_each_cause_gets_its_own_fix(reason: str, cause: str, hint: str, kind: str) -> None:
    why = explain(reason)
    assert cause in why.cause and hint in why.hint
    assert why.hint != SHAPES_HINT
    assert why.kind == kind  # the exit code: 2 input, 3 memory, 4 time


@pytest.mark.parametrize(
    "reason", [DIMS, DTYPE, "ValueError: Required inputs (['x']) are missing from input feed (['z'])."]
)
def test_shape_and_dtype_refusals_point_at_the_inputs(reason: str) -> None:
    why = explain(reason)
    assert why.hint == SHAPES_HINT and "do not fit" in why.cause


def test_an_unknown_failure_keeps_the_runtimes_words_without_guessing() -> None:
    why = explain("RuntimeError: something new went wrong")
    assert why.cause == "RuntimeError: something new went wrong"
    assert "--input" not in why.hint


def test_an_opset_message_cut_short_still_names_the_opset() -> None:
    cut = clean(OPSET)[:250]
    assert "till opset" not in cut
    why = explain(cut)
    assert "ai.onnx opset 27" in why.cause and "opset_version=26" in why.hint


def test_worker_summaries_keep_the_runtimes_message_not_its_cpp_signature() -> None:
    from honed.optimizer.worker import summarize

    text = summarize(RuntimeError(OPSET))
    assert "ValidateOpsetForDomain" not in text and "Opset 27 is under development" in text


GATHER_RANGE = (
    "InvalidArgument: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running "
    "Gather node. Name:'/m/transformer/Gather_6' Status Message: indices element out of data bounds, idx=128 "
    "must be within the inclusive range [-128,127]"
)


def test_an_index_out_of_a_table_points_at_the_input_lengths_and_values() -> None:
    # A KV-cache decoder whose attention_mask must span past + new tokens, fed open axes of one length.
    why = explain(GATHER_RANGE)
    assert why.kind == "input"
    assert "Gather node /m/transformer/Gather_6" in why.cause and "idx=128" in why.cause
    assert "--input" in why.hint and "--data" in why.hint and "attention_mask" in why.hint
