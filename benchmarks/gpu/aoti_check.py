"""Does an AOTInductor package load and run in a new process here? (issue 7 saw a segfault.)

Builds an AOTInductor package of ResNet-50 (or a tiny CNN) in fp16, then loads it in a child
process and runs it. Prints one JSON line with the build time, the child's return code
(negative = killed by that signal, -11 a segfault) and, when it ran, its latency and error.

    PYTHONPATH=operator:benchmarks/gpu python benchmarks/gpu/aoti_check.py --model resnet50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = """
import sys, time, json, numpy as np, torch
from honed.optimizer.gpu_timing import event_times_ms, summarize_ms
t = time.perf_counter()
runner = torch._inductor.aoti_load_package(sys.argv[1])
load = time.perf_counter() - t
x = torch.from_numpy(np.load(sys.argv[2])).cuda().half()
out = runner(x)
out = out[0] if isinstance(out, (list, tuple)) else out
ref = torch.from_numpy(np.load(sys.argv[3])).cuda()
err = float((out.float() - ref).norm() / ref.norm())
print(json.dumps({"load_seconds": round(load, 2), "relative_error": err,
                  "latency_ms": summarize_ms(event_times_ms(lambda: runner(x), 100))}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["resnet50", "tiny-cnn"], default="resnet50")
    parser.add_argument("--max-autotune", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/honed-aoti"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.model == "resnet50":
        from models import ResNetLogits

        module: torch.nn.Module = ResNetLogits().eval()
        shape = (1, 3, 224, 224)
    else:
        sys.path.insert(0, str(HERE.parents[1] / "tests" / "gpu"))
        from tiny_models import TinyCNN

        module = TinyCNN().eval()
        shape = (1, 3, 64, 64)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    module = module.cuda().half().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted, but not in torch's overloads
    xt = torch.from_numpy(x).cuda().half()
    with torch.no_grad():
        ref = module(xt).float().cpu().numpy()
        program = torch.export.export(module, (xt,))
    np.save(args.work / "x.npy", x)
    np.save(args.work / "ref.npy", ref)
    started = time.perf_counter()
    options = {"max_autotune": True} if args.max_autotune else {}
    package = torch._inductor.aoti_compile_and_package(
        program, package_path=str(args.work / "model.pt2"), inductor_configs=options
    )
    result = {
        "model": args.model,
        "max_autotune": args.max_autotune,
        "build_seconds": round(time.perf_counter() - started, 1),
        "package_bytes": Path(package).stat().st_size,
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, package, str(args.work / "x.npy"), str(args.work / "ref.npy")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    result["child_returncode"] = proc.returncode
    if proc.returncode == 0:
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        result["child_stderr_tail"] = proc.stderr[-1500:]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
