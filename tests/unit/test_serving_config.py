"""config.pbtxt rendering and the checks that parse it into Triton's own ModelConfig protobuf."""

from __future__ import annotations

import pytest

from honed.errors import InputError
from honed.optimizer.tensors import TensorSpec
from honed.serving.config import (
    DynamicBatching,
    InstanceGroup,
    ModelConfigData,
    TensorConfig,
    Warmup,
    parse_config,
    render,
)

X = TensorConfig("x", "TYPE_FP32", (16,))
Y = TensorConfig("y", "TYPE_FP32", (4,))


def config(**changes: object) -> ModelConfigData:
    fields: dict[str, object] = {
        "name": "mlp",
        "inputs": (X,),
        "outputs": (Y,),
        "max_batch_size": 8,
        "versions": (3,),
        "backend": "python",
        "dynamic_batching": DynamicBatching(500, (4,)),
        "instance_group": InstanceGroup("KIND_CPU", 2),
        "warmup": (Warmup("zeros-batch-1", 1, (X,)),),
        "parameters": {"threads": "2"},
        "notes": ("why: because",),
    }
    fields.update(changes)
    return ModelConfigData(**fields)  # type: ignore[arg-type]


def test_rendered_config_parses_into_the_values_it_was_built_from() -> None:
    text = render(config())
    message = parse_config(text)
    assert message.name == "mlp" and message.backend == "python" and message.max_batch_size == 8
    assert [(t.name, list(t.dims)) for t in message.input] == [("x", [16])]
    assert message.input[0].data_type == message.output[0].data_type != 0
    assert message.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(message.dynamic_batching.preferred_batch_size) == [4]
    assert message.instance_group[0].count == 2
    assert message.response_cache.enable is True
    assert list(message.version_policy.specific.versions) == [3]
    assert message.parameters["threads"].string_value == "2"
    assert message.model_warmup[0].inputs["x"].zero_data is True
    assert "# why: because" in text


def test_cache_off_and_no_batching_render_as_such() -> None:
    message = parse_config(render(config(response_cache=False, dynamic_batching=None, max_batch_size=0, warmup=())))
    assert message.response_cache.enable is False
    assert not message.HasField("dynamic_batching")
    assert message.max_batch_size == 0


def test_tensor_config_strips_the_batch_axis_only_when_batching() -> None:
    spec = TensorSpec(name="ids", dtype="int64", shape=[-1, 128])
    assert TensorConfig.from_spec(spec, batched=True) == TensorConfig("ids", "TYPE_INT64", (128,))
    assert TensorConfig.from_spec(spec, batched=False).dims == (-1, 128)


def test_an_unservable_dtype_is_named() -> None:
    with pytest.raises(InputError, match="complex64"):
        TensorConfig.from_spec(TensorSpec(name="z", dtype="complex64", shape=[-1, 2]), batched=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"dynamic_batching": DynamicBatching(100), "max_batch_size": 0, "warmup": ()},
            "needs max_batch_size > 0",
        ),
        ({"dynamic_batching": DynamicBatching(100, (16,))}, "preferred batch size 16"),
        ({"inputs": (X, X)}, "duplicate input"),
        ({"outputs": ()}, "declares no output"),
        ({"inputs": (TensorConfig("x", "TYPE_FP32", (0,)),), "warmup": ()}, "dims"),
        ({"backend": ""}, "platform or a backend"),
        ({"warmup": (Warmup("w", 64, (X,)),)}, "exceeds max_batch_size"),
        ({"warmup": (Warmup("w", 1, (TensorConfig("x", "TYPE_FP32", (-1,)),)),)}, "concrete dims"),
        ({"warmup": (Warmup("w", 1, ()),)}, "exactly the inputs"),
        ({"versions": ()}, "version_policy specific"),
        ({"versions": (0,)}, "all positive"),
    ],
)
def test_configs_triton_would_refuse_are_refused_here(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        render(config(**changes))


def test_text_that_is_not_a_model_config_is_refused() -> None:
    with pytest.raises(InputError, match="does not parse"):
        parse_config('name: "m" backend: "python" max_batch_sizes: 3')
