"""Output naming of PyTorch models: every shape a forward() result takes, and what cannot be served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

from honed.optimizer.tensors import parse_input_option
from honed.optimizer.torch_call import OutputError, call_failure, flatten

torch = pytest.importorskip("torch")


def names(result: Any) -> list[str]:
    return [name for name, _ in flatten(result)]


class Pair(NamedTuple):
    start: Any
    end: Any


@dataclass
class Heads:
    logits: Any
    extra: Any = None


def test_names_follow_keys_fields_and_positions() -> None:
    t = torch.zeros(2, 3)
    assert names(t) == ["output"]
    assert names((t, t)) == ["output_0", "output_1"]
    assert names([t, (t, {"a": t})]) == ["output_0", "output_1.0", "output_1.1.a"]
    assert names({"logits": t, "hidden_states": (t, t)}) == ["logits", "hidden_states.0", "hidden_states.1"]
    assert names(Pair(t, t)) == ["start", "end"]
    assert names(Heads(t)) == ["logits"]  # None fields are left out, as ModelOutput leaves them out
    assert names((t, None, t)) == ["output_0", "output_2"]


def test_a_transformers_model_output_keeps_its_field_names() -> None:
    outputs = pytest.importorskip("transformers.modeling_outputs")
    t = torch.zeros(2, 3)
    result = outputs.BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=t, pooler_output=t)
    assert names(result) == ["last_hidden_state", "pooler_output"]


@pytest.mark.parametrize(
    ("result", "said"),
    [
        ({"logits": "t", "score": 0.5}, "output 'logits' is a str, not a tensor"),
        ((0, 1), "output 'output_0' is an int, not a tensor"),
        ("text", "the model returns a str, not tensors"),
        ({"a": None}, "holding no tensors"),
    ],
)
def test_what_is_not_a_tensor_is_named_with_its_type(result: Any, said: str) -> None:
    with pytest.raises(OutputError, match="tensor") as raised:
        flatten(result)
    assert said in str(raised.value)
    assert raised.value.hint and "ModelOutput of tensors" in raised.value.hint


def test_two_outputs_flattening_to_one_name_are_refused() -> None:
    t = torch.zeros(1)
    with pytest.raises(OutputError, match=r"same name twice: a\.0"):
        flatten({"a": (t,), "a.0": t})


def test_a_call_failing_on_an_axis_left_open_blames_the_length_honed_picked() -> None:
    """Audio left open (batch,-1) runs with 16 samples, shorter than a convolution's kernel: say so, and the fix."""
    spec = parse_input_option("input_values:float32:batch,-1")
    exc = RuntimeError("Calculated padded input size per channel: (2). Kernel size: (3).")
    error = call_failure(exc, [spec], ["input_values"])
    assert "input_values:float32[batch, ?]" in error.message and "-1" not in error.message
    assert "length 16 on the axes --input leaves open: input_values axis 1" in error.message
    assert error.hint is not None and "--input input_values:float32:batch,N" in error.hint


def test_an_output_that_mixes_the_samples_of_a_batch_is_named_with_the_fix() -> None:
    from honed.optimizer.torch_export import _mixing_notes

    # CLIP's logits_per_image at batch 2 and 3: [2, 2] -> [3, 3]; the embeddings [2, 8] -> [3, 8].
    notes = _mixing_notes(["logits", "embeds"], [[2, 2], [2, 8]], [[3, 3], [3, 8]])
    assert len(notes) == 1 and notes[0].startswith("output logits grows with the batch on more than one axis")
    assert "dynamicBatching.enabled: false" in notes[0]
    assert _mixing_notes(["logits"], [[2, 2]], None) == []  # the model refused batch 3: nothing known
