"""A small CNN trained on scikit-learn's handwritten digits (real data, shipped with scikit-learn).

``trained_cnn`` is a PyTorch factory for ``honed optimize honed.demo.digits:trained_cnn``;
weights are cached next to the data so repeated runs do not retrain. The cache directory is
``HONED_DEMO_DIR`` (``python -m honed.demo`` sets it to ``--out``/model, and the optimizer's
worker processes inherit it), read when the weights are, not when this module is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CACHE = Path("out/demo-model")


def cache_dir() -> Path:
    """Where the trained weights are kept: ``HONED_DEMO_DIR``, else ``out/demo-model``."""
    return Path(os.environ.get("HONED_DEMO_DIR", DEFAULT_CACHE))


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation split of the 8x8 digits, scaled to [0, 1], shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    x_train, x_val, y_train, y_val = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.3, random_state=0, stratify=digits.target
    )
    return x_train, x_val, y_train, y_val


def build_cnn() -> Any:
    """The digits CNN, untrained, with seeded initial weights (8x8 grey images in, 10 logits out)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 2 * 2, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train(epochs: int = 12) -> tuple[Any, float]:
    """Train the CNN (a few seconds on two cores); returns the model and its validation accuracy."""
    import torch
    from torch import nn

    x_train, x_val, y_train, y_val = digits_arrays()
    model = build_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=generator).split(64):
            optimizer.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            optimizer.step()
    model.eval()
    with torch.inference_mode():
        accuracy = float((model(torch.from_numpy(x_val)).argmax(1).numpy() == y_val).mean())
    return model, accuracy


def write_validation(path: Path) -> Path:
    """Write the held-out digits (``input`` and ``labels``) to ``path`` as an .npz; returns ``path``."""
    _, x_val, _, y_val = digits_arrays()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, input=x_val, labels=y_val)
    return path


def trained_cnn() -> Any:
    """Factory: the trained digits CNN (trained once, then loaded from the cache)."""
    import torch

    weights = cache_dir() / "digits_cnn.pt"
    model = build_cnn()
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        model, _ = train()
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    return model.eval()
