"""Serving choices derived from the benchmark: batch limit, preferred sizes, queue delay, instances."""

from __future__ import annotations

from honed.serving.tuning import ServingOptions, choose_batching, choose_instances, measured
from tests.fixtures.serving_artifacts import build_report


def batching(**report: object):  # type: ignore[no-untyped-def]
    built = build_report(**report)  # type: ignore[arg-type]
    return choose_batching(built, built.candidates[0], ServingOptions())


def test_growing_throughput_fills_batches_up_to_the_largest_measured() -> None:
    choice = batching(latency_by_batch={1: 2.0, 8: 4.0, 32: 10.0})
    assert choice.max_batch_size == 32
    assert choice.dynamic is not None and choice.dynamic.preferred_batch_sizes == ()
    # Requests that queue behind the busy instance form the next batch: none waits for company.
    assert choice.dynamic.max_queue_delay_us == 0
    assert any("max_queue_delay 0 us: one CPU instance" in note for note in choice.notes)


def test_a_throughput_peak_inside_the_range_becomes_the_max() -> None:
    # Under load Triton sends all that queued up to the max, preferred sizes or not: only the max
    # keeps batches at the peak.
    choice = batching(latency_by_batch={1: 2.0, 8: 4.0, 32: 40.0})  # 2000/s at 8, 800/s at 32
    assert choice.max_batch_size == 8
    assert choice.dynamic is not None and choice.dynamic.preferred_batch_sizes == ()
    assert any("max_batch_size 8: the measured throughput peak" in note for note in choice.notes)
    # A max set by option (clients send larger batches): the peak is the size to form.
    built = build_report(latency_by_batch={1: 2.0, 8: 4.0, 32: 40.0})
    wide = choose_batching(built, built.candidates[0], ServingOptions(max_batch_size=32))
    assert wide.max_batch_size == 32 and wide.dynamic is not None and wide.dynamic.preferred_batch_sizes == (8,)
    narrow = choose_batching(built, built.candidates[0], ServingOptions(max_batch_size=4))
    assert narrow.max_batch_size == 4 and narrow.dynamic is not None and narrow.dynamic.preferred_batch_sizes == ()


def test_a_budget_caps_batches_at_the_largest_that_fits() -> None:
    # p99 = 1.5 x p50: batch 8 -> 6 ms, batch 32 -> 15 ms; budget 10 ms.
    choice = batching(latency_by_batch={1: 1.0, 8: 4.0, 32: 10.0}, latency_budget_ms=10.0)
    assert choice.max_batch_size == 8, "a batch of 32 would break the budget"
    assert choice.dynamic is not None and choice.dynamic.preferred_batch_sizes == ()
    assert choice.dynamic.max_queue_delay_us == 0


def test_fixed_batch_models_are_not_batched() -> None:
    choice = batching(batch="fixed")
    assert choice.max_batch_size == 0 and choice.dynamic is None


def test_batch_one_only_means_no_dynamic_batching() -> None:
    choice = batching(latency_by_batch={1: 1.0})
    assert choice.max_batch_size == 1 and choice.dynamic is None


def test_options_override_what_the_benchmark_suggests() -> None:
    built = build_report(latency_by_batch={1: 1.0, 8: 2.0})
    options = ServingOptions(max_queue_delay_us=123, max_batch_size=16)
    choice = choose_batching(built, built.candidates[0], options)
    assert choice.max_batch_size == 16 and choice.dynamic is not None
    assert choice.dynamic.max_queue_delay_us == 123
    off = choose_batching(built, built.candidates[0], ServingOptions(dynamic_batching=False))
    assert off.dynamic is None and off.max_batch_size == 8


def test_no_request_waits_for_company_unless_asked() -> None:
    built = build_report(latency_by_batch={1: 1.0, 8: 2.0})
    gpu = built.candidates[0].model_copy(update={"device": "cuda"})
    choice = choose_batching(built, gpu, ServingOptions())
    assert choice.dynamic is not None and choice.dynamic.max_queue_delay_us == 0
    assert any("a GPU instance" in note for note in choice.notes)
    cpu = choose_batching(built, built.candidates[0], ServingOptions())
    assert cpu.dynamic is not None and cpu.dynamic.max_queue_delay_us == 0
    for candidate in (gpu, built.candidates[0]):
        asked = choose_batching(built, candidate, ServingOptions(max_queue_delay_us=50))
        assert asked.dynamic is not None and asked.dynamic.max_queue_delay_us == 50
        assert any("max_queue_delay 50 us: set by option" in note for note in asked.notes)


def test_throughput_is_derived_from_latency_when_the_report_lacks_it() -> None:
    built = build_report(latency_by_batch={1: 2.0, 8: 4.0})
    candidate = built.candidates[0].model_copy(update={"throughput": {}})
    assert measured(candidate)[8][1] == 2000.0


def test_cpu_instances_share_the_benchmarked_threads() -> None:
    built = build_report(threads=8)
    choice = choose_instances(built, built.candidates[0], ServingOptions())
    assert (choice.group.kind, choice.group.count, choice.threads) == ("KIND_CPU", 1, 8)
    two = choose_instances(built, built.candidates[0], ServingOptions(instances=2))
    assert (two.group.count, two.threads) == (2, 4)
    gpu = built.candidates[0].model_copy(update={"device": "cuda"})
    assert choose_instances(built, gpu, ServingOptions()).group.kind == "KIND_GPU"


def test_when_batch_one_is_fastest_per_item_nothing_waits_and_nothing_is_preferred() -> None:
    choice = batching(latency_by_batch={1: 10.0, 8: 120.0})  # batch 8 moves fewer items per second
    assert choice.max_batch_size == 8, "clients may still send batches of 8"
    assert choice.dynamic is not None
    assert choice.dynamic.preferred_batch_sizes == () and choice.dynamic.max_queue_delay_us == 0


def test_an_output_without_a_first_axis_batch_turns_batching_off_and_says_which() -> None:
    built = build_report()
    state = built.model.outputs[0].model_copy(update={"name": "hn", "shape": [2, -1, 16], "batch_axis": 1})
    stateful = built.model_copy(update={"model": built.model.model_copy(update={"outputs": [state]})})
    choice = choose_batching(stateful, stateful.candidates[0], ServingOptions())
    assert choice.max_batch_size == 0 and choice.dynamic is None
    assert "hn has no batch on the first axis" in choice.notes[0]
