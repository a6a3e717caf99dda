"""Small models exported the way the engine exports sources, for the GPU backend tests.

Random weights with a fixed seed; layer sizes are multiples of 16 and large enough for the
fp8 rewrite to apply to the transformer's linear layers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from honed.optimizer.tensors import TensorSpec

VOCAB = 1000
SEQ = 32


class TinyEncoder(nn.Module):
    """Embeddings, two pre-norm attention blocks (SDPA with a padding mask), and a pooled head."""

    def __init__(self, hidden: int = 256, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(VOCAB, hidden)
        self.pos = nn.Embedding(SEQ, hidden)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "ln1": nn.LayerNorm(hidden),
                        "q": nn.Linear(hidden, hidden),
                        "k": nn.Linear(hidden, hidden),
                        "v": nn.Linear(hidden, hidden),
                        "o": nn.Linear(hidden, hidden),
                        "ln2": nn.LayerNorm(hidden),
                        "up": nn.Linear(hidden, 4 * hidden),
                        "down": nn.Linear(4 * hidden, hidden),
                    }
                )
            )
        self.head = nn.Linear(hidden, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, s = input_ids.shape
        x = self.embed(input_ids) + self.pos(torch.arange(s, device=input_ids.device))
        mask = attention_mask.bool()[:, None, None, :]
        # ModuleList yields Module; each block is the ModuleDict built in __init__.
        for blk in cast(list[nn.ModuleDict], self.blocks):
            h = blk["ln1"](x)
            q, k, v = (blk[n](h).view(b, s, self.heads, -1).transpose(1, 2) for n in ("q", "k", "v"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + blk["o"](a.transpose(1, 2).reshape(b, s, -1))
            x = x + blk["down"](F.gelu(blk["up"](blk["ln2"](x))))
        return x, self.head(x[:, 0])


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        chans = [3, 32, 64, 128]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1], 10)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(self.features(pixel_values).mean(dim=(2, 3)))
        return logits


class Overflowing(nn.Module):
    """Activations far past fp16's range (65504): fp16 gives inf, bf16 and fp32 stay finite."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.b = nn.Linear(64, 8)
        with torch.no_grad():
            self.a.weight.mul_(3000.0)
            self.b.weight.mul_(3000.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.b(torch.relu(self.a(x)))
        return y


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=4096)


# (program path, calibration path, inputs, outputs)
ExportedModel = tuple[Path, Path, list[TensorSpec], list[TensorSpec]]
# The session fixture: kind -> that kind's ExportedModel, exported once.
Exported = Callable[[str], ExportedModel]


def export(kind: str, directory: Path) -> ExportedModel:
    """Export ``kind`` (encoder | cnn | overflow) to DIR/model.pt2 with calibration rows in calib.npz."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    model: nn.Module
    if kind == "encoder":
        model = TinyEncoder().eval()
        feeds = {
            "input_ids": rng.integers(0, VOCAB, (8, SEQ)).astype(np.int64),
            "attention_mask": np.ones((8, SEQ), dtype=np.int64),
        }
        feeds["attention_mask"][1::2, SEQ // 2 :] = 0  # half the rows padded
        inputs = [
            TensorSpec(name="input_ids", dtype="int64", shape=[-1, SEQ]),
            TensorSpec(name="attention_mask", dtype="int64", shape=[-1, SEQ]),
        ]
        outputs = [
            TensorSpec(name="hidden", dtype="float32", shape=[-1, SEQ, 256]),
            TensorSpec(name="logits", dtype="float32", shape=[-1, 16]),
        ]
    elif kind == "cnn":
        model = TinyCNN().eval()
        feeds = {"pixel_values": rng.standard_normal((8, 3, 64, 64)).astype(np.float32)}
        inputs = [TensorSpec(name="pixel_values", dtype="float32", shape=[-1, 3, 64, 64])]
        outputs = [TensorSpec(name="logits", dtype="float32", shape=[-1, 10])]
    elif kind == "overflow":
        model = Overflowing().eval()
        feeds = {"x": rng.standard_normal((8, 64)).astype(np.float32)}
        inputs = [TensorSpec(name="x", dtype="float32", shape=[-1, 64])]
        outputs = [TensorSpec(name="y", dtype="float32", shape=[-1, 8])]
    else:
        raise ValueError(kind)
    example = tuple(torch.from_numpy(v[:2].copy()) for v in feeds.values())
    dyn = tuple({0: _batch_dim()} for _ in feeds)
    with torch.no_grad():
        program = torch.export.export(model, example, dynamic_shapes=dyn)
    path = directory / "model.pt2"
    torch.export.save(program, str(path))
    calib = directory / "calib.npz"
    np.savez(calib, **feeds)  # type: ignore[arg-type]  # numpy's stubs match **arrays to allow_pickle
    return path, calib, inputs, outputs


def random_feeds(inputs: list[TensorSpec], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Fresh valid inputs: token ids inside the vocabulary, masks with some padding, images ~N(0,1)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = [batch, *spec.item_shape]
        if spec.name == "input_ids":
            feeds[spec.name] = rng.integers(0, VOCAB, shape).astype(np.int64)
        elif spec.name == "attention_mask":
            mask = np.ones(shape, dtype=np.int64)
            mask[:, rng.integers(SEQ // 4, SEQ) :] = 0
            feeds[spec.name] = mask
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def reference(path: Path | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """fp32 outputs on the CPU, in float64-free plain fp32 (no TF32 anywhere)."""
    assert path is not None, "no exported program to compare with"
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        out = module(*[torch.from_numpy(v) for v in feeds.values()])
    leaves = out if isinstance(out, tuple) else (out,)
    return [t.numpy() for t in leaves]


def tiny_cnn() -> nn.Module:
    """A factory (``module:function``) as users give PyTorch models, for the as-given baseline."""
    torch.manual_seed(0)
    return TinyCNN().eval()
