"""Reading Triton's Prometheus text: per-model counters summed over versions."""

from __future__ import annotations

from honed.serving.triton_metrics import model_traffic, model_value, parse_metrics

TEXT = """\
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="mlp",version="1"} 40
nv_inference_count{model="mlp",version="2"} 60
nv_inference_count{model="other",version="1"} 7
nv_inference_exec_count{model="mlp",version="1"} 10
nv_inference_exec_count{model="mlp",version="2"} 15
nv_inference_request_success{model="mlp",version="2"} 60
nv_cache_num_hits_per_model{model="mlp",version="2"} 9
nv_cache_num_misses_per_model{model="mlp",version="2"} 51
nv_inference_queue_summary_us{model="mlp",version="2",quantile="0.5"} 120
nv_inference_queue_summary_us{model="mlp",version="2",quantile="0.9"} Nan
nv_cache_util 0.25
"""


def test_samples_keep_names_labels_and_values() -> None:
    samples = parse_metrics(TEXT)
    assert samples[0].name == "nv_inference_count" and samples[0].labels == {"model": "mlp", "version": "1"}
    assert any(s.name == "nv_cache_util" and s.labels == {} and s.value == 0.25 for s in samples)


def test_counters_sum_over_versions_and_skip_quantiles() -> None:
    assert model_value(TEXT, "nv_inference_count", "mlp") == 100
    assert model_value(TEXT, "nv_inference_count", "mlp", version="2") == 60
    assert model_value(TEXT, "nv_inference_queue_summary_us", "mlp") == 0
    assert model_value(TEXT, "nv_inference_count", "absent") == 0


def test_traffic_gives_the_average_batch() -> None:
    traffic = model_traffic(TEXT, "mlp")
    assert traffic.average_batch == 4.0
    assert (traffic.cache_hits, traffic.cache_misses, traffic.requests) == (9, 51, 60)


def test_counters_keep_the_name_triton_writes() -> None:
    # prometheus_client's parser calls a counter's samples <family>_total; Triton never writes that suffix.
    samples = parse_metrics('# TYPE nv_x counter\nnv_x{model="m"} 3\n# TYPE other_total counter\nother_total 2\n')
    assert [(s.name, s.value) for s in samples] == [("nv_x", 3.0), ("other", 2.0)]
