from honed.optimizer.worker import summarize


def test_runtime_source_locations_are_dropped_from_reasons() -> None:
    exc = RuntimeError(
        "Exception from src/inference/src/cpp/infer_request.cpp:75:\n"
        "Check 'ok' failed at src/plugins/intel_cpu/src/node.cpp:12:\n"
        "Unsupported element type f16 for Quantize\n"
    )
    assert summarize(exc) == "RuntimeError: Unsupported element type f16 for Quantize"


def test_plain_messages_stay_and_are_bounded() -> None:
    assert summarize(ValueError("bad shape")) == "ValueError: bad shape"
    assert len(summarize(ValueError("x" * 1000))) == 400
