"""Benchmark models as PyTorch factories (random weights; architectures from transformers, no hub)."""

from __future__ import annotations

from typing import Any


def resnet50() -> Any:
    """ResNet-50 (the default ResNetConfig is the ResNet-50 layout), forward(pixel_values) -> logits."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    # transformers 5's typed config signatures leave out kwargs they accept (num_labels, attn_implementation).
    config = ResNetConfig(num_labels=1000)  # type: ignore[call-arg]
    model = ResNetForImageClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.model(pixel_values=pixel_values).logits
            return logits

    return Logits().eval()


def bert_base() -> Any:
    """BERT-base, forward(input_ids, attention_mask) -> logits; eager attention so ONNX graphs fuse."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    # transformers 5's typed config signatures leave out kwargs they accept (num_labels, attn_implementation).
    config = BertConfig(num_labels=2, attn_implementation="eager")  # type: ignore[call-arg]
    model = BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            return logits

    return Logits().eval()
