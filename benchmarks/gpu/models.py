"""The benchmark's models, with random weights, exported the way honed's engine takes them.

ResNet-50 and BERT-base come from transformers' model classes with their default (base-size)
configurations and a fixed seed: no download, no timm, no torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from honed.optimizer.tensors import TensorSpec

SEQ = 128


class ResNetLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import ResNetConfig, ResNetForImageClassification

        # transformers 5's typed config signatures leave out kwargs they accept (num_labels, attn_implementation).
        config = ResNetConfig(num_labels=1000)  # type: ignore[call-arg]
        self.model = ResNetForImageClassification(config)  # ResNet-50 layout

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(pixel_values=pixel_values).logits
        return logits


class BertOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        # transformers 5's typed config signatures leave out kwargs they accept (num_labels, attn_implementation).
        config = BertConfig(attn_implementation="sdpa")  # type: ignore[call-arg]
        self.model = BertModel(config, add_pooling_layer=True)  # BERT-base

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


@dataclass
class BenchModel:
    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    attention: bool

    def feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Fresh valid inputs: images ~N(0,1); token ids in the vocabulary with varied padding."""
        rng = np.random.default_rng(seed)
        if self.name == "resnet50":
            return {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
        ids = rng.integers(1000, 30000, (batch, SEQ)).astype(np.int64)
        mask = np.ones((batch, SEQ), dtype=np.int64)
        for row, length in enumerate(rng.integers(SEQ // 2, SEQ + 1, batch)):
            mask[row, length:] = 0
        return {"input_ids": ids, "attention_mask": mask}


def make(name: str) -> BenchModel:
    torch.manual_seed(0)
    if name == "resnet50":
        return BenchModel(
            name,
            ResNetLogits().eval(),
            [TensorSpec(name="pixel_values", dtype="float32", shape=[-1, 3, 224, 224])],
            [TensorSpec(name="logits", dtype="float32", shape=[-1, 1000])],
            attention=False,
        )
    if name == "bert-base":
        return BenchModel(
            name,
            BertOutputs().eval(),
            [
                TensorSpec(name="input_ids", dtype="int64", shape=[-1, SEQ]),
                TensorSpec(name="attention_mask", dtype="int64", shape=[-1, SEQ]),
            ],
            [
                TensorSpec(name="last_hidden_state", dtype="float32", shape=[-1, SEQ, 768]),
                TensorSpec(name="pooler_output", dtype="float32", shape=[-1, 768]),
            ],
            attention=True,
        )
    raise ValueError(f"unknown model {name!r}: use resnet50 or bert-base")


def export(model: BenchModel, directory: Path) -> tuple[Path, Path]:
    """DIR/model.pt2 (dynamic batch, exported from a contiguous batch-2 example) and DIR/calib.npz."""
    directory.mkdir(parents=True, exist_ok=True)
    example = model.feeds(2, seed=1)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        program = torch.export.export(
            model.module,
            tuple(torch.from_numpy(v) for v in example.values()),
            dynamic_shapes=tuple({0: batch} for _ in example),
        )
    path = directory / "model.pt2"
    torch.export.save(program, str(path))
    calib = directory / "calib.npz"
    np.savez(calib, **model.feeds(8, seed=2))  # type: ignore[arg-type]  # numpy's stubs match **arrays to allow_pickle
    return path, calib


def resnet50() -> nn.Module:
    """``models:resnet50``, a factory as users give PyTorch models (the engine's as-given baseline loads it)."""
    return make("resnet50").module


def bert_base() -> nn.Module:
    """``models:bert_base``: BERT-base (sequence 128) returning (last_hidden_state, pooler_output)."""
    return make("bert-base").module


FACTORIES = {"resnet50": "models:resnet50", "bert-base": "models:bert_base"}
