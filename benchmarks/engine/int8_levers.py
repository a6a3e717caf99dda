"""Which int8 levers keep EfficientNet-Lite0 (real ImageNet weights) inside a top-1 gate on real photos.

Accuracy only, no timing: for each NNCF setting, the top-1 agreement drop against the fp32 model on
300 crops of real photographs (models.image_data, seed 0), calibrated on 200 other crops (seed 7),
each compiled with the CPU plugin in f32 and in bf16 (the layers left in float then run in bf16).
Writes int8-levers.json and int8-levers.md to --out.

    PYTHONPATH=operator:. python benchmarks/engine/int8_levers.py --out benchmarks/engine
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def levers() -> dict[str, dict[str, Any]]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    depthwise_in_float = nncf.IgnoredScope(types=["GroupConvolution"])
    mixed = nncf.QuantizationPreset.MIXED
    # Cross-layer channel alignment (NNCF's equalization of consecutive convolutions' ranges; off by
    # default), the known remedy for depthwise-separable networks' per-tensor activation ranges.
    aligned = AdvancedQuantizationParameters(disable_channel_alignment=False)
    quantile = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MEAN_QUANTILE
    )
    # VNNI CPUs need no 7-bit first layer (the default works around overflow on older ones).
    full_8bit = AdvancedQuantizationParameters(overflow_fix=OverflowFix.DISABLE)
    everything = AdvancedQuantizationParameters(
        disable_channel_alignment=False,
        activations_range_estimator_params=RangeEstimatorParametersSet.MEAN_QUANTILE,
        overflow_fix=OverflowFix.DISABLE,
    )
    return {
        "defaults (CNN preset: symmetric activations)": {},
        "mixed preset (asymmetric activations)": {"preset": mixed},
        "mixed preset + full bias correction": {
            "preset": mixed,
            "fast_bias_correction": False,
        },
        "depthwise convolutions left in float": {"ignored_scope": depthwise_in_float},
        "mixed preset + depthwise convolutions left in float": {"preset": mixed, "ignored_scope": depthwise_in_float},
        "mixed preset + channel alignment": {"preset": mixed, "advanced_parameters": aligned},
        "mixed preset + quantile activation ranges": {"preset": mixed, "advanced_parameters": quantile},
        "mixed preset + full 8-bit first layer": {"preset": mixed, "advanced_parameters": full_8bit},
        "mixed preset + all three above": {"preset": mixed, "advanced_parameters": everything},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "engine")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import nncf
    import openvino as ov
    import torch

    from benchmarks.engine.models import efficientnet_lite0, image_data

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="honed-int8-levers-") as tmp:
        work = Path(tmp)
        validation = np.load(image_data(work / "val.npz", 300, seed=0))["images"]
        calibration = np.load(image_data(work / "cal.npz", 200, seed=7))["images"]
        onnx = work / "model.onnx"
        torch.onnx.export(
            efficientnet_lite0(), (torch.zeros(1, 3, 224, 224),), str(onnx), input_names=["images"],
            output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip

        def top1(model: Any, precision: str) -> np.ndarray:
            config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": args.threads}
            compiled = core.compile_model(model, "CPU", config)
            logits = np.concatenate([compiled(validation[i : i + 50])[0] for i in range(0, len(validation), 50)])
            predictions: np.ndarray = logits.argmax(1)
            return predictions

        reference = top1(core.read_model(str(onnx)), "f32")
        rows: list[dict[str, Any]] = [
            {"lever": "no int8 (the fp32 model)", "drop_f32": 0.0, "build_s": 0.0},
        ]
        rows[0]["drop_bf16"] = round(float(1 - (top1(core.read_model(str(onnx)), "bf16") == reference).mean()), 4)
        items = [calibration[i : i + 1] for i in range(len(calibration))]
        for name, kwargs in levers().items():
            started = time.perf_counter()
            quantized = nncf.quantize(core.read_model(str(onnx)), nncf.Dataset(items), subset_size=len(items), **kwargs)
            row: dict[str, Any] = {"lever": name, "build_s": round(time.perf_counter() - started, 1)}
            for precision, key in (("f32", "drop_f32"), ("bf16", "drop_bf16")):
                row[key] = round(float(1 - (top1(quantized, precision) == reference).mean()), 4)
            rows.append(row)
            print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8-levers.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# int8 levers on EfficientNet-Lite0 (ImageNet weights), top-1 agreement drop on 300 real crops",
        "",
        "NNCF post-training int8 calibrated on 200 other crops; the gate in the engine benchmark is 0.02.",
        "",
        "| lever | drop, float layers f32 | drop, float layers bf16 | quantize s |",
        "|---|---:|---:|---:|",
        *[f"| {r['lever']} | {r['drop_f32']} | {r['drop_bf16']} | {r['build_s']} |" for r in rows],
        "",
    ]
    (args.out / "int8-levers.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
